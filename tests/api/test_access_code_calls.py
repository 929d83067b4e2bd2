"""`Authorization: ACCESSCODE <code>` on every model route (v1, Qianfan v2, OpenAI), through the real app and the
real platform (SQLite) with a fake engine: the call is the app's (permission, limits, rate headers, usage), and every
refusal has its code and message in the route's shape."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Limits, Platform

from fakes import FakeEngine

NOW = 60 * 29_166_667 + 1.0   # one second into a minute: no window moves during a test
V1 = "/rpc/2.0/ai_custom/v1/wenxinworkshop/"
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture
def s(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with Platform.open(settings, clock=lambda: NOW) as platform:
        platform.bootstrap("svc", "fake")
        platform.set_limits("default", Limits(rpm=100, tpm=10_000))
        platform.publish("private", "fake")                    # exists, but "default" may not call it
        code = platform.create_access_code("default")

        class S:
            pass

        s = S()
        s.platform, s.code = platform, code.code
        s.client = TestClient(create_app(settings, FakeEngine(), platform))
        yield s


def auth(code: str) -> dict:
    return {"Authorization": f"ACCESSCODE {code}"}


def test_v1_completion_and_chat_with_an_access_code(s):
    r = s.client.post(V1 + "completions/svc", json={"prompt": "hi", "max_output_tokens": 2}, headers=auth(s.code))
    assert r.json()["result"] == "He" and r.headers["X-Ratelimit-Limit-Requests"] == "100"
    assert r.headers["X-Ratelimit-Remaining-Requests"] == "99"
    r = s.client.post(V1 + "chat/svc", json={"messages": CHAT, "max_output_tokens": 3, "stream": True},
                      headers={"Authorization": f"accesscode  {s.code} "})   # the scheme in any case, spaces trimmed
    assert r.headers["content-type"].startswith("text/event-stream") and '"is_end":true' in r.text
    [row] = s.platform.usage(app="default")
    assert (row.succeeded, row.failed, row.completion_tokens) == (2, 0, 5)


def test_v2_and_openai_routes_with_an_access_code(s):
    for path, body in (("/v2/chat/completions", {"model": "svc", "messages": CHAT, "max_completion_tokens": 2}),
                       ("/v1/chat/completions", {"model": "svc", "messages": CHAT, "max_tokens": 2}),
                       ("/v1/completions", {"model": "svc", "prompt": "hi", "max_tokens": 2})):
        r = s.client.post(path, json=body, headers=auth(s.code))
        assert r.status_code == 200 and r.headers["X-Ratelimit-Limit-Tokens"] == "10000", (path, r.text)
    assert [m["id"] for m in s.client.get("/v1/models", headers=auth(s.code)).json()["data"]] == ["svc"]
    [row] = s.platform.usage(app="default")
    assert (row.succeeded, row.completion_tokens) == (3, 6)


def test_permission_and_limits_are_the_apps(s):
    r = s.client.post(V1 + "completions/private", json={"prompt": "hi"}, headers=auth(s.code))
    assert r.json()["error_code"] == 336004
    assert r.json()["error_msg"].startswith("app 'default' (id ") and r.json()["error_msg"].endswith(
        "has no permission to call service 'private'")
    s.platform.set_limits("default", Limits(total=1))
    assert "result" in s.client.post(V1 + "completions/svc", json={"prompt": "hi"}, headers=auth(s.code)).json()
    r = s.client.post(V1 + "completions/svc", json={"prompt": "hi"}, headers=auth(s.code))
    assert (r.json()["error_code"], r.json()["error_msg"]) == (19, "Open api total request limit reached")


@pytest.mark.parametrize("header", ["ACCESSCODE ", "ACCESSCODE nope", "ACCESSCODE ac-" + "a" * 16 + "-" + "0" * 40])
def test_a_bad_code_is_14_on_v1(s, header):
    for kind in ("completions", "chat"):
        r = s.client.post(V1 + f"{kind}/svc", json={"prompt": "hi", "messages": CHAT},
                          headers={"Authorization": header})
        body = r.json()
        assert r.status_code == 200 and (body["error_code"], body["error_msg"]) == (14, "IAM Certification failed")


def test_a_revoked_code_is_refused_on_every_route(s):
    [listed] = s.platform.list_access_codes("default")
    s.platform.revoke_access_code(listed.id)
    r = s.client.post(V1 + "completions/svc", json={"prompt": "hi"}, headers=auth(s.code))
    assert (r.json()["error_code"], r.json()["error_msg"]) == (14, "IAM Certification failed")
    message = "the access code is unknown, revoked or malformed"
    r = s.client.post("/v1/chat/completions", json={"model": "svc", "messages": CHAT}, headers=auth(s.code))
    assert r.status_code == 401 and r.json() == {"error": {"message": message, "type": "invalid_request_error",
                                                           "param": None, "code": "invalid_api_key"}}
    r = s.client.post("/v2/chat/completions", json={"model": "svc", "messages": CHAT}, headers=auth(s.code))
    assert r.status_code == 401 and r.json()["error"] == {"code": "invalid_iam_token", "message": message,
                                                          "type": "access_denied"}
    assert s.platform.usage() == []                            # no app known: nothing recorded


def test_appid_must_be_the_codes_app(s):
    app_id = s.platform.get_app("default").id
    r = s.client.post("/v2/chat/completions", json={"model": "svc", "messages": CHAT},
                      headers={**auth(s.code), "appid": "999"})
    assert r.status_code == 401 and r.json()["error"]["message"] == (
        f"the appid header is '999', but the credential belongs to the app with id {app_id}")
