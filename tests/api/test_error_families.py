"""One rule for error shapes (api/route_family.py): a store that fails, a credential that cannot be parsed, a path
or a method the router does not know and a body FastAPI cannot parse are answered, on every route family, in that
family's documented shape and status, with X-Baidu-Request-Id. The real app over the real SQLite platform, a fake
engine."""
from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Platform

from fakes import FakeEngine

INTERNAL = "internal error: the server's log has the cause"
CHAT = [{"role": "user", "content": "hi"}]
V1 = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc"


class BrokenStore:
    """Every store call fails as a locked or unreachable store does."""

    def __init__(self, store) -> None:
        self.real = store

    def __getattr__(self, name):
        if name == "close":
            return self.real.close

        def fail(*args, **kwargs):
            raise sqlite3.OperationalError("database is locked")
        return fail


@pytest.fixture
def served(tmp_path):
    settings = Settings(data_dir=tmp_path, console_origins=["http://testserver"])   # TestClient's origin
    platform = Platform.open(settings)
    keys = platform.bootstrap("svc", "fake")
    api_key = platform.create_api_key("default").key
    client = TestClient(create_app(settings, FakeEngine(), platform))
    token = client.get("/oauth/2.0/token", params={"grant_type": "client_credentials", "client_id": keys.api_key,
                                                    "client_secret": keys.secret_key}).json()["access_token"]
    yield client, platform, keys, api_key, token
    platform.close()


def _break(platform) -> None:
    platform.store = BrokenStore(platform.store)
    platform.admin.store = platform.store


def _has_request_id(r) -> None:
    assert len(r.headers["x-baidu-request-id"]) == 32, r.headers


def test_a_failing_store_is_answered_in_every_familys_shape(served, caplog):
    client, platform, keys, api_key, token = served
    _break(platform)
    bearer = {"Authorization": f"Bearer {api_key}"}

    r = client.post(V1, params={"access_token": token}, json={"prompt": "hi"})
    assert r.status_code == 200 and r.json().keys() == {"id", "error_code", "error_msg"}
    assert (r.json()["error_code"], r.json()["error_msg"]) == (336000, "Internal error")
    _has_request_id(r)

    r = client.get("/oauth/2.0/token", params={"grant_type": "client_credentials", "client_id": keys.api_key,
                                                "client_secret": keys.secret_key})
    assert (r.status_code, r.json()) == (500, {"error": "server_error", "error_description": INTERNAL})
    _has_request_id(r)

    r = client.get("/v1/BCE-BEARER/token", headers={"Authorization": _iam_header(keys)})
    body = r.json()
    assert (r.status_code, body["code"], body["message"]) == (500, "InternalError", INTERNAL)
    assert set(body) == {"requestId", "code", "message"} and r.headers["x-bce-error-code"] == "InternalError"
    _has_request_id(r)

    for path, body in (("/v1/chat/completions", {"model": "svc", "messages": CHAT}),
                       ("/v1/completions", {"model": "svc", "prompt": "hi"})):
        r = client.post(path, json=body, headers=bearer)
        assert (r.status_code, r.json()["error"]["type"], r.json()["error"]["code"]) == (500, "server_error", None)
        _has_request_id(r)
    r = client.get("/v1/models", headers=bearer)
    assert (r.status_code, r.json()) == (500, {"error": {"message": INTERNAL, "type": "server_error",
                                                         "param": None, "code": None}})
    _has_request_id(r)

    r = client.post("/v2/chat/completions", json={"model": "svc", "messages": CHAT}, headers=bearer)
    assert r.status_code == 500 and set(r.json()) == {"error", "id"}
    assert (r.json()["error"]["code"], r.json()["error"]["type"]) == ("internal_error", "server_error")
    _has_request_id(r)

    r = client.post("/console/api/login", json={"key": "nxa-anything"},
                    headers={"Origin": "http://testserver"})
    assert (r.status_code, r.json()) == (500, {"error": {"code": "internal_error", "message": INTERNAL}})
    _has_request_id(r)

    # every one of them is logged as the bug it is, with the cause
    assert "database is locked" in caplog.text


def _iam_header(keys) -> str:
    """A well-formed signature of now; the store fails before it is checked."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"bce-auth-v1/{keys.access_key}/{now}/1800/host/{'0' * 64}"


@pytest.mark.parametrize("expiration", ["²", "1" * 5000, "0", "-5", "1e3"])
def test_an_unparseable_iam_expiration_is_the_signatures_refusal(served, expiration, caplog):
    caplog.set_level(logging.INFO, "neoxserve")
    client, _, keys, _, _ = served
    # as bytes: "²" goes on the wire as the one byte 0xb2, which the server reads back (latin-1) as "²"
    header = f"bce-auth-v1/{keys.access_key}/2026-12-06T00:00:00Z/{expiration}/host/{'0' * 64}".encode("latin-1")
    r = client.post(V1, headers={"Authorization": header}, json={"prompt": "hi"})
    assert r.status_code == 200
    assert (r.json()["error_code"], r.json()["error_msg"]) == (14, "IAM Certification failed")
    r = client.get("/v1/BCE-BEARER/token", headers={"Authorization": header})
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (401, "AccessDenied", "IAM Certification failed")
    assert "bad expiration" in caplog.text        # the reason goes to the log only, as for error 14


def test_unknown_paths_and_methods_in_the_familys_shape(served):
    client = served[0]
    r = client.get("/v1/no-such-thing")
    assert (r.status_code, r.json()) == (404, {"error": {
        "message": "no route /v1/no-such-thing: see /openapi.json for the routes this server has",
        "type": "invalid_request_error", "param": None, "code": "not_found"}})
    _has_request_id(r)
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"] == {"message": "method GET is not allowed on /v1/chat/completions; use POST",
                                 "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}
    r = client.put("/v2/chat/completions")
    assert r.status_code == 405 and r.json()["error"] == {
        "code": "method_not_allowed", "message": "method PUT is not allowed on /v2/chat/completions; use POST",
        "type": "invalid_request_error"}
    r = client.post("/health")
    assert (r.status_code, r.json()) == (405, {"error": "invalid_request",
                                               "error_description": "method POST is not allowed on /health; "
                                                                    "use GET, HEAD"})
    r = client.delete("/v1/BCE-BEARER/token")
    assert (r.status_code, r.json()["code"], r.headers["x-bce-error-code"]) == (405, "MethodNotAllowed",
                                                                                "MethodNotAllowed")
    r = client.get("/no/such/path")
    assert (r.status_code, r.json()["error"]) == (404, "invalid_request")
    _has_request_id(r)


def test_the_console_api_answers_in_its_own_shape(served):
    client = served[0]
    origin = {"Origin": "http://testserver"}
    r = client.get("/console/api/no-such-thing")
    assert (r.status_code, r.json()) == (404, {"error": {
        "code": "not_found", "message": "no route /console/api/no-such-thing: see /openapi.json for the routes this "
                                        "server has"}})
    r = client.options("/console/api/apps", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.json()["error"]["message"].startswith("method OPTIONS is not allowed on /console/api/apps; use ")
    r = client.post("/console/api/login", content=b'{"key": "\xff\xfe"}', headers={
        **origin, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
    deep = b"[" * 5000 + b"]" * 5000
    r = client.post("/console/api/login", content=deep, headers={**origin, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text


def test_a_model_name_the_store_cannot_hold_is_a_console_400(served):
    client, platform, *_ = served
    key = platform.admin.create_key()
    origin = {"Origin": "http://testserver"}
    assert client.post("/console/api/login", json={"key": key}, headers=origin).status_code == 200
    for model, problem in (("\ud800", "invalid model name"), ("a\nb", "invalid model name"),
                           ("m" * 129, "at most 128")):
        r = client.post("/console/api/services", content=json.dumps({"api_name": "x1", "model": model}),
                        headers={**origin, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
        assert problem in r.json()["error"]["message"]
    assert [s.api_name for s in platform.list_services()] == ["svc"]
