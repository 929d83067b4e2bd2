"""Access codes (`Authorization: ACCESSCODE <code>`, the qianfan SDK's private mode): format, hashing, constant-time
check, revocation, and their life with their app, on both stores."""
from __future__ import annotations

import re

import pytest

from neoxserve.platform import AdminError, Platform, PlatformError
from neoxserve.platform import access_codes

CODE = re.compile(r"(ac-[A-Za-z0-9]{16})-[0-9a-f]{40}")
REFUSED = (14, "IAM Certification failed")


def refusal(p, code) -> tuple[int, str, str]:
    with pytest.raises(PlatformError) as e:
        p.authenticate_access_code(code)
    return e.value.code, e.value.message, e.value.detail


def test_a_code_authenticates_as_its_app_and_is_stored_hashed(served, stored_bytes):
    p, _, _ = served
    new = p.create_access_code("alice")
    m = CODE.fullmatch(new.code)
    assert m and m.group(1) == new.id and new.app_name == "alice" and new.created_at == p.clock()
    app = p.authenticate_access_code(new.code)
    assert (app.name, app.services) == ("alice", ("demo",))
    listed = p.list_access_codes()
    assert [(c.id, c.app_name, c.created_at) for c in listed] == [(new.id, "alice", p.clock())]
    assert new.code not in repr(listed) and new.code not in repr(new)
    assert set(new.to_dict()) == {"id", "code", "app_id", "app_name", "created_at"}
    assert set(listed[0].to_dict()) == {"id", "app_id", "app_name", "created_at"}
    blob = stored_bytes()
    assert new.code.encode() not in blob and new.code.rsplit("-", 1)[1].encode() not in blob


def test_every_bad_code_is_refused_with_14(served):
    p, _, _ = served
    good = p.create_access_code("alice")
    secret_swapped = good.id + "-" + "0" * 40
    assert refusal(p, None) == (*REFUSED, "the access code is missing or malformed")
    assert refusal(p, "") == (*REFUSED, "the access code is missing or malformed")
    assert refusal(p, "not-a-code") == (*REFUSED, "the access code is missing or malformed")
    assert refusal(p, good.code + "0") == (*REFUSED, "the access code is missing or malformed")
    assert refusal(p, "ac-" + "a" * 16 + "-" + "0" * 40) == (
        *REFUSED, f"access code ac-{'a' * 16} is unknown or revoked")
    assert refusal(p, secret_swapped) == (*REFUSED, f"wrong secret for access code {good.id}")
    p.revoke_access_code(good.id)
    assert refusal(p, good.code) == (*REFUSED, f"access code {good.id} is unknown or revoked")


def test_revoking(served):
    p, _, _ = served
    code = p.create_access_code("alice")
    p.revoke_access_code(code.id)
    assert p.list_access_codes() == []
    with pytest.raises(AdminError, match=f"no access code with id '{code.id}'"):
        p.revoke_access_code(code.id)
    with pytest.raises(AdminError, match="no access code with id 'nope'"):
        p.revoke_access_code("nope")
    with pytest.raises(AdminError, match="no app named 'ghost'"):
        p.create_access_code("ghost")
    with pytest.raises(AdminError, match="no app named 'ghost'"):
        p.list_access_codes("ghost")


def test_codes_follow_their_app(served):
    p, _, _ = served
    p.create_app("bob")
    a1, a2, b1 = p.create_access_code("alice"), p.create_access_code("alice"), p.create_access_code("bob")
    assert {c.id for c in p.list_access_codes("alice")} == {a1.id, a2.id}
    assert [c.app_name for c in p.list_access_codes()] == ["alice", "alice", "bob"]
    p.rotate_app("alice")                          # rotating the AK/SK pair leaves access codes alone
    assert p.authenticate_access_code(a1.code).name == "alice"
    p.delete_app("alice")                          # deleting the app takes its codes with it
    assert refusal(p, a1.code)[:2] == REFUSED and refusal(p, a2.code)[:2] == REFUSED
    assert [c.id for c in p.list_access_codes()] == [b1.id]
    assert p.authenticate_access_code(b1.code).name == "bob"


def test_codes_survive_reopening(served, settings, clock):
    p, _, _ = served
    code = p.create_access_code("alice")
    p.close()
    with Platform.open(settings, clock=clock) as again:
        assert again.authenticate_access_code(code.code).name == "alice"


def test_the_format():
    code_id, code = access_codes.new_access_code()
    assert access_codes.code_id(code) == code_id and access_codes.is_code_id(code_id)
    assert access_codes.matches(code, access_codes.digest(code))
    assert not access_codes.matches(code[:-1] + ("1" if code[-1] == "0" else "0"), access_codes.digest(code))
    assert access_codes.code_id(code.upper()) is None and not access_codes.is_code_id(code)
