"""Bearer API keys and bearer tokens issued from IAM keys: format, hashing, expiry, revocation."""
from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from neoxserve.platform import AdminError, BceError, Platform, PlatformError

KEY = re.compile(r"bce-v3/(ALTAK-[A-Za-z0-9]{20})/[0-9a-f]{40}")


def code_of(p, token) -> tuple[int, str]:
    with pytest.raises(PlatformError) as e:
        p.authenticate_bearer(token)
    return e.value.code, e.value.message


def test_api_key_authenticates_as_its_app_and_is_stored_hashed(served, stored_bytes):
    p, _, _ = served
    new = p.create_api_key("alice")
    m = KEY.fullmatch(new.key)
    assert m and m.group(1) == new.id and new.expires_at is None
    app = p.authenticate_bearer(new.key)
    assert (app.name, app.services) == ("alice", ("demo",))
    listed = p.list_api_keys()
    assert [(k.id, k.app_name, k.expires_at, k.status(p.clock())) for k in listed] == [
        (new.id, "alice", None, "active")]
    assert new.key not in repr(listed) and new.key not in repr(new)
    blob = stored_bytes()
    assert new.key.encode() not in blob and new.key.split("/")[-1].encode() not in blob


def test_bad_missing_revoked_and_expired_keys(served, clock):
    p, _, _ = served
    assert code_of(p, None) == (100, "Invalid parameter")
    assert code_of(p, "") == (100, "Invalid parameter")
    assert code_of(p, "sk-not-ours") == (100, "Invalid parameter")
    assert code_of(p, "bce-v3/ALTAK-" + "a" * 20 + "/" + "0" * 40) == (110, "Access token invalid or no longer valid")
    short = p.create_api_key("alice", expires_in=10)
    assert short.expires_at == int(clock()) + 10
    clock.advance(9.9)
    assert p.authenticate_bearer(short.key).name == "alice"
    clock.advance(0.1)
    assert code_of(p, short.key) == (111, "Access token expired")
    assert p.list_api_keys("alice")[0].status(clock()) == "expired"
    p.revoke_api_key(short.id)
    assert code_of(p, short.key)[0] == 110
    with pytest.raises(AdminError, match=f"no API key with id '{short.id}'"):
        p.revoke_api_key(short.id)
    with pytest.raises(AdminError, match="no API key with id 'nope'"):
        p.revoke_api_key("nope")
    with pytest.raises(AdminError, match="invalid expiry 0: use a positive number of seconds"):
        p.create_api_key("alice", expires_in=0)
    with pytest.raises(AdminError, match="no app named 'ghost'"):
        p.create_api_key("ghost")


def test_keys_follow_their_app(served):
    p, _, _ = served
    p.create_app("bob")
    a1, a2, b1 = p.create_api_key("alice"), p.create_api_key("alice"), p.create_api_key("bob")
    assert [k.id for k in p.list_api_keys("alice")] == [a1.id, a2.id]
    assert [k.app_name for k in p.list_api_keys()] == ["alice", "alice", "bob"]
    p.rotate_app("alice")                          # rotating the AK/SK pair leaves API keys alone
    assert p.authenticate_bearer(a1.key).name == "alice"
    p.delete_app("alice")                          # deleting the app takes its keys with it
    assert code_of(p, a1.key)[0] == 110 and code_of(p, a2.key)[0] == 110
    assert [k.id for k in p.list_api_keys()] == [b1.id]
    assert p.authenticate_bearer(b1.key).name == "bob"


def test_bearer_token_from_iam_keys(served, clock):
    p, _, _ = served
    app = p.get_app("alice")
    body = p.issue_bearer_token(app, "600")
    assert set(body) == {"userId", "token", "status", "createTime", "expireTime"}
    assert KEY.fullmatch(body["token"]) and body["status"] == "enable" and body["userId"] == str(app.id)
    created = datetime.fromisoformat(body["createTime"].replace("Z", "+00:00")).timestamp()
    expires = datetime.fromisoformat(body["expireTime"].replace("Z", "+00:00")).timestamp()
    assert body["createTime"].endswith("Z") and (created, expires) == (int(clock()), int(clock()) + 600)
    assert p.authenticate_bearer(body["token"]).name == "alice"
    assert body["token"] not in [k.id for k in p.list_api_keys()]   # not an API key: not listed
    clock.advance(600)
    assert code_of(p, body["token"]) == (111, "Access token expired")
    default = p.issue_bearer_token(app, None)
    assert datetime.fromisoformat(default["expireTime"].replace("Z", "+00:00")).timestamp() == int(clock()) + 1800
    p.rotate_app("alice")                         # new IAM keys: tokens made with the old ones stop working
    assert code_of(p, default["token"])[0] == 110


@pytest.mark.parametrize("value", ["abc", "299", "2592001", "-5", "1e3", "٣٠٠", "9" * 30])
def test_bearer_token_lifetime_is_checked(served, value):
    p, _, _ = served
    with pytest.raises(BceError) as e:
        p.issue_bearer_token(p.get_app("alice"), value)
    assert (e.value.status, e.value.code) == (400, "InvalidParameterValue")
    assert e.value.message == f"expireInSeconds is {value[:20]!r}: it must be an integer in [300, 2592000]"


def test_keys_survive_reopening(served, settings, clock):
    p, _, _ = served
    key = p.create_api_key("alice", expires_in=3600)
    p.close()
    with Platform.open(settings, clock=clock) as again:
        assert again.authenticate_bearer(key.key).name == "alice"


def _iam_request(ak: str, sk: str, query: dict):
    """A GET /v1/BCE-BEARER/token signed as the SDK's IAM.create_bearer_token signs it, as the server receives it."""
    from qianfan.resources.auth.iam import iam_sign
    from qianfan.resources.typing import QfRequest

    req = QfRequest(method="GET", url="/v1/BCE-BEARER/token", query=query,
                    headers={"Content-Type": "application/json", "Host": "127.0.0.1:8360"})
    iam_sign(ak, sk, req)
    return req.method, req.url, list(req.query.items()), dict(req.headers)


def test_bearer_token_request_verifies_the_sdk_signature(served, clock):
    p, keys, _ = served
    clock.t = time.time()   # the SDK stamps the real time
    body = p.bearer_token_request(*_iam_request(keys.access_key, keys.secret_access_key, {"expireInSeconds": "900"}))
    assert p.authenticate_bearer(body["token"]).name == "alice"
    expires = datetime.fromisoformat(body["expireTime"].replace("Z", "+00:00")).timestamp()
    assert expires == int(clock()) + 900
    for ak, sk in ((keys.access_key, "0" * 32), ("f" * 32, keys.secret_access_key)):
        with pytest.raises(BceError) as e:
            p.bearer_token_request(*_iam_request(ak, sk, {"expireInSeconds": "900"}))
        assert (e.value.status, e.value.code, e.value.message) == (401, "AccessDenied", "IAM Certification failed")
    with pytest.raises(BceError) as e:
        p.bearer_token_request(*_iam_request(keys.access_key, keys.secret_access_key, {"expireInSeconds": "5"}))
    assert (e.value.status, e.value.code) == (400, "InvalidParameterValue")
