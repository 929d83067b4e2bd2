"""Token endpoint (spec section 2) and access token checks (spec sections 3 and 6), on both stores."""
from __future__ import annotations

import re

import pytest

from neoxserve.platform import OAuthError, PlatformError

TOKEN = re.compile(r"24\.[0-9a-f]{32}\.(\d+)\.(\d+)\.\d+-(\d+)")


def issue(p, keys):
    return p.issue_token("client_credentials", keys.api_key, keys.secret_key)


def test_issue_returns_the_documented_body(served, clock):
    p, keys, _ = served
    body = issue(p, keys)
    assert set(body) == {"access_token", "expires_in", "refresh_token", "scope", "session_key", "session_secret"}
    assert body["expires_in"] == 2_592_000 and isinstance(body["expires_in"], int)
    m = TOKEN.fullmatch(body["access_token"])
    assert m, body["access_token"]
    assert int(m[1]) == 2_592_000 and int(m[2]) == int(clock.t) + 2_592_000 and int(m[3]) == keys.app_id
    assert p.authenticate_token(body["access_token"]).name == "alice"
    assert issue(p, keys)["access_token"] != body["access_token"]


@pytest.mark.parametrize("args, status, error, description", [
    (("client_credentials", "nope", "x"), 401, "invalid_client", "unknown client id"),
    ((None, "a", "b"), 400, "invalid_request", "missing required parameter: grant_type"),
    (("password", "a", "b"), 400, "unsupported_grant_type", "The authorization grant type is not supported"),
    (("client_credentials", None, "b"), 400, "invalid_request", "missing required parameter: client_id"),
    (("client_credentials", "a", ""), 400, "invalid_request", "missing required parameter: client_secret"),
])
def test_issue_errors(served, args, status, error, description):
    p, _, _ = served
    with pytest.raises(OAuthError) as e:
        p.issue_token(*args)
    assert (e.value.status, e.value.error, e.value.description) == (status, error, description)
    assert e.value.to_dict() == {"error": error, "error_description": description}


def test_wrong_secret_key(served):
    p, keys, _ = served
    wrong = keys.secret_key[:-1] + ("y" if keys.secret_key.endswith("x") else "x")
    with pytest.raises(OAuthError) as e:
        p.issue_token("client_credentials", keys.api_key, wrong)
    assert (e.value.status, e.value.error, e.value.description) == (
        401, "invalid_client", "Client authentication failed")


@pytest.mark.parametrize("token", [None, "", "abc", "24.zz.1.2.3-4", "24." + "a" * 32 + ".1.2.3-", "x" * 500])
def test_missing_or_malformed_token_is_100(served, token):
    p, _, _ = served
    with pytest.raises(PlatformError) as e:
        p.authenticate_token(token)
    assert (e.value.code, e.value.message) == (100, "Invalid parameter")


def test_unknown_token_is_110(served):
    p, keys, _ = served
    with pytest.raises(PlatformError) as e:
        p.authenticate_token("24." + "0" * 32 + f".2592000.1800000000.123456-{keys.app_id}")
    assert (e.value.code, e.value.message) == (110, "Access token invalid or no longer valid")


def test_expiry_follows_the_clock(served, clock):
    p, keys, _ = served
    token = issue(p, keys)["access_token"]
    clock.advance(2_592_000 - 1)
    assert p.authenticate_token(token).id == keys.app_id
    clock.advance(1)
    with pytest.raises(PlatformError) as e:
        p.authenticate_token(token)
    assert (e.value.code, e.value.message) == (111, "Access token expired")


def test_ttl_comes_from_settings(settings, clock):
    from neoxserve.platform import Platform

    with Platform.open(settings.model_copy(update={"token_ttl_seconds": 60}), clock=clock) as p:
        p.publish("demo", "m")
        keys = p.create_app("bob", services=["demo"])
        body = issue(p, keys)
        assert body["expires_in"] == 60 and ".60." in body["access_token"]
        clock.advance(60)
        with pytest.raises(PlatformError) as e:
            p.authenticate_token(body["access_token"])
        assert e.value.code == 111


def test_rotate_revokes_keys_and_tokens(served):
    p, keys, _ = served
    token = issue(p, keys)["access_token"]
    new = p.rotate_app("alice")
    assert new.api_key != keys.api_key and new.secret_key != keys.secret_key
    assert new.access_key != keys.access_key and new.secret_access_key != keys.secret_access_key
    with pytest.raises(PlatformError) as e:
        p.authenticate_token(token)
    assert (e.value.code, e.value.message) == (110, "Access token invalid or no longer valid")
    with pytest.raises(OAuthError) as e:
        issue(p, keys)
    assert e.value.description == "unknown client id"
    assert p.authenticate_token(issue(p, new)["access_token"]).name == "alice"


def test_delete_revokes_tokens(served):
    p, keys, _ = served
    token = issue(p, keys)["access_token"]
    p.delete_app("alice")
    with pytest.raises(PlatformError) as e:
        p.authenticate_token(token)
    assert e.value.code == 110
    with pytest.raises(OAuthError) as e:
        issue(p, keys)
    assert e.value.description == "unknown client id"


def test_revoke_single_token(served):
    p, keys, _ = served
    a, b = issue(p, keys)["access_token"], issue(p, keys)["access_token"]
    assert p.revoke_token(a)
    with pytest.raises(PlatformError) as e:
        p.authenticate_token(a)
    assert e.value.code == 110
    assert p.authenticate_token(b).name == "alice"


def test_tokens_survive_reopen(served, settings, clock):
    from neoxserve.platform import Platform

    p, keys, _ = served
    token = issue(p, keys)["access_token"]
    p.close()
    with Platform.open(settings, clock=clock) as again:
        assert again.authenticate_token(token).name == "alice"
