"""What clients see when the engine refuses or fails a request, and moderation's "empty" action.

These need an engine that fails on demand, so they use a fake engine client (same interface) behind the real
app and the real platform (SQLite in a temporary directory).
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.api.qianfan_v1.streaming import chunks
from neoxserve.config import Settings
from neoxserve.engine.client import failure_error
from neoxserve.engine.errors import (EngineDead, EngineInternalError, EngineOverloaded, QueueTimeout,
                                     RequestRejected)
from neoxserve.engine.outputs import Delta, Failure
from neoxserve.platform import Platform

from fakes import FakeEngine

OVERLOADED = "人工智能是一项革命性的技术。与我互动的人过多，请您稍后重新向我提问。"


@pytest.fixture
def setup(tmp_path):
    def make(engine: FakeEngine, **overrides):
        settings = Settings(data_dir=tmp_path, **overrides)
        platform = Platform.open(settings)
        keys = platform.bootstrap("svc", "fake")
        client = TestClient(create_app(settings, engine, platform))
        token = client.get("/oauth/2.0/token", params={"grant_type": "client_credentials",
                                                       "client_id": keys.api_key,
                                                       "client_secret": keys.secret_key}).json()["access_token"]
        return client, f"/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc?access_token={token}", platform
    return make


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("error,code,msg", [
    (EngineOverloaded("queue full"), 336100, OVERLOADED),
    (QueueTimeout("waited too long"), 336100, OVERLOADED),
    (RequestRejected("prompt + max_new_tokens exceed the context"), 336003,
     "prompt + max_new_tokens exceed the context"),
    (EngineDead("engine process exited"), 336000, "Internal error"),
    (EngineInternalError("out of memory"), 336000, "Internal error"),
])
def test_errors_before_the_first_delta(setup, error, code, msg, stream):
    client, url, platform = setup(FakeEngine(fail=error))
    r = client.post(url, json={"prompt": "hi", "stream": stream})
    assert r.headers["content-type"] == "application/json"   # a failed stream answers like a non-stream
    assert r.text.count("\n") == 0
    body = r.json()
    assert body["id"].startswith("as-") and (body["error_code"], body["error_msg"]) == (code, msg)
    # one failed call, no tokens recorded
    assert [(u.calls, u.failed, u.prompt_tokens, u.completion_tokens) for u in platform.usage()] == [(1, 1, 0, 0)]


def test_error_after_chunks_is_one_bare_json_line(setup):
    engine = FakeEngine(text="One. Two. Three.", fail_after=6)
    client, url, _ = setup(engine)
    r = client.post(url, json={"prompt": "hi", "stream": True})
    lines = r.text.split("\n")
    assert lines[0].startswith("data: ") and json.loads(lines[0][6:])["result"] == "One."
    assert lines[-1] == ""
    error = json.loads(lines[-2])
    assert (error["error_code"], error["error_msg"]) == (336000, "Internal error")
    assert not lines[-2].startswith("data:")
    assert engine.running == 0


def test_moderation_empty_action_skips_generation(setup, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("# comment\n\nSecretWord\nre:^bad\\d+$\n", encoding="utf-8")
    engine = FakeEngine()
    client, url, _ = setup(engine, moderation_file=words, moderation_action="empty")
    for prompt in ("say secretword now", "bad42"):
        body = client.post(url, json={"prompt": prompt}).json()
        assert (body["is_safe"], body["result"], body["usage"]["completion_tokens"]) == (0, "", 0)
        assert body["usage"]["prompt_tokens"] == len(prompt)
        frames = [json.loads(f[6:]) for f in client.post(url, json={"prompt": prompt, "stream": True})
                  .text.split("\n\n") if f]
        assert [(f["is_safe"], f["result"], f["is_end"]) for f in frames] == [(0, "", True)]
    assert engine.calls == []
    assert client.post(url, json={"prompt": "a bad42 b"}).json()["is_safe"] == 1   # the regex is anchored


def test_moderation_answer_action_still_answers(setup, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("secretword\n", encoding="utf-8")
    engine = FakeEngine()
    client, url, _ = setup(engine, moderation_file=words)
    body = client.post(url, json={"prompt": "SECRETWORD"}).json()
    assert (body["is_safe"], body["result"]) == (0, engine.text)


async def _deltas(texts):
    for i, t in enumerate(texts):
        yield Delta("r", t, [i], 3, i + 1, finished=i == len(texts) - 1)


async def _collect(texts, max_tokens):
    return [(c.text, c.tokens) async for c in chunks(_deltas(texts), max_tokens)]


@pytest.mark.parametrize("texts,max_tokens,expected", [
    (["Hi", ".", " Yo", "!", " end"], 16, [("Hi.", 2), (" Yo!", 2), (" end", 1)]),
    (["a", "b", "c", "d", "e"], 2, [("ab", 2), ("cd", 2), ("e", 1)]),
    (["北京", "。", "好", "\n", "x"], 16, [("北京。", 2), ("好\n", 2), ("x", 1)]),
    (["One", "."], 16, [("One.", 2)]),
])
def test_chunking_policy(texts, max_tokens, expected):
    import asyncio

    assert asyncio.run(_collect(texts, max_tokens)) == expected


def test_chat_route_needs_a_chat_model(setup):
    engine = FakeEngine()
    engine.model_info = replace(engine.model_info, is_chat=False)
    client, url, _ = setup(engine)
    chat = url.replace("/completions/", "/chat/")
    body = client.post(chat, json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert (body["error_code"], body["error_msg"]) == (
        336003, "the chat route needs a chat model; the model of svc is a completion model: use /completions/svc")
    assert client.post(url, json={"prompt": "hi"}).json()["result"] == engine.text


class _FailedDeltaEngine(FakeEngine):
    """The engine process reports a failed request as a finished delta with a failure kind; the real client turns
    that delta into its exception (engine.client.failure_error), and so does this fake."""

    def __init__(self, good: int, failure: Failure = Failure.STEP_FAILED):
        super().__init__(text="One. Two.")
        self.good = good
        self.failure = failure

    async def generate(self, request_id, prompt_token_ids, params):
        for i, c in enumerate(self.text[: self.good]):
            yield Delta(request_id, c, [ord(c)], len(prompt_token_ids), i + 1)
        failed = Delta(request_id, "", [], len(prompt_token_ids), self.good, finished=True, finish_reason="error",
                       failure=self.failure, error="device lost")
        raise failure_error(failed)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("failure,code,msg", [(Failure.STEP_FAILED, 336000, "Internal error"),
                                              (Failure.QUEUE_TIMEOUT, 336100, OVERLOADED)])
def test_failed_delta_before_any_output(setup, stream, failure, code, msg):
    client, url, _ = setup(_FailedDeltaEngine(good=0, failure=failure))
    r = client.post(url, json={"prompt": "hi", "stream": stream})
    assert r.headers["content-type"] == "application/json" and r.text.count("\n") == 0
    body = r.json()
    assert list(body) == ["id", "error_code", "error_msg"]
    assert (body["error_code"], body["error_msg"]) == (code, msg)


def test_failed_delta_after_a_chunk_is_one_bare_json_line(setup):
    client, url, _ = setup(_FailedDeltaEngine(good=4))   # "One." makes a chunk, then the engine fails
    lines = client.post(url, json={"prompt": "hi", "stream": True}).text.split("\n")
    assert json.loads(lines[0][6:])["result"] == "One."
    error = json.loads(lines[-2])
    assert (error["error_code"], error["error_msg"]) == (336000, "Internal error") and lines[-1] == ""


def test_rejection_without_a_reason_336003(setup):
    client, url, _ = setup(FakeEngine(fail=RequestRejected()))
    body = client.post(url, json={"prompt": "hi"}).json()
    assert (body["error_code"], body["error_msg"]) == (336003, "request rejected by the engine")


def test_unhandled_error_outside_a_model_call_is_a_500_in_the_routes_shape(setup):
    client, _, platform = setup(FakeEngine())

    def store_down(*args):
        raise RuntimeError("database is locked")

    platform.issue_token = store_down
    client = TestClient(client.app, raise_server_exceptions=False)
    r = client.get("/oauth/2.0/token", params={"grant_type": "client_credentials", "client_id": "a",
                                               "client_secret": "b"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "server_error", "error_description": "internal error: the server's log has the cause"}
    assert r.headers["x-baidu-request-id"]


def test_a_failing_stats_source_is_an_error_not_missing_metrics(setup):
    """stats() failing is a bug: /metrics answers 500 (and the server logs it) instead of silently dropping
    the engine's metrics."""
    class BrokenStats(FakeEngine):
        def stats(self) -> dict:
            raise RuntimeError("stats are broken")

    client, _, _ = setup(BrokenStats())
    r = TestClient(client.app, raise_server_exceptions=False).get("/metrics")
    assert (r.status_code, r.json()["error"]) == (500, "server_error")
