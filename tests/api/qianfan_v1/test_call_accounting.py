"""What each ending of a v1 call does to the app's quotas, rate limits and usage, through the real app and the
real platform (SQLite) with a fake engine that fails on demand; and the rate headers and refusals 336501/336502."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.engine.errors import EngineDead, EngineOverloaded
from neoxserve.platform import Limits, Platform

from fakes import FakeEngine

OVERLOADED = "人工智能是一项革命性的技术。与我互动的人过多，请您稍后重新向我提问。"
PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/"
NOW = 60 * 29_166_667 + 1.0   # a fixed clock one second into a minute: no window moves during a test


class Setup:
    def __init__(self, tmp_path, engine: FakeEngine, limits: Limits, **settings_fields):
        self.engine = engine
        settings = Settings(data_dir=tmp_path, **settings_fields)
        self.platform = Platform.open(settings, clock=lambda: NOW)
        keys = self.platform.bootstrap("svc", "fake")
        self.platform.set_limits("default", limits)
        self.platform.publish("private", "fake")               # exists, but "default" may not call it
        self.client = TestClient(create_app(settings, engine, self.platform))
        self.token = self.client.get("/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": keys.api_key,
            "client_secret": keys.secret_key}).json()["access_token"]

    def post(self, body: dict, api_name: str = "svc", token: str | None = None):
        return self.client.post(PATH + api_name, params={"access_token": token or self.token}, json=body)

    def usage(self) -> list[tuple]:
        return [(u.api_name, u.calls, u.succeeded, u.failed, u.prompt_tokens, u.completion_tokens)
                for u in self.platform.usage()]

    def total(self) -> int:
        return self.platform.counters("default").total_count


@pytest.fixture
def setup(tmp_path):
    made = []

    def make(engine=None, limits=None, **settings_fields):
        made.append(Setup(tmp_path, engine or FakeEngine(), limits or Limits(), **settings_fields))
        return made[-1]

    yield make
    for s in made:
        s.platform.close()


@pytest.mark.parametrize("stream", [False, True])
def test_total_of_10_serves_exactly_10_after_a_burst_of_overload(setup, stream):
    """The issue's example: refusals for overload use up nothing, so all 10 completions are served."""
    s = setup(FakeEngine(text="abc", fail=EngineOverloaded("queue full")), Limits(total=10))
    for _ in range(7):
        body = s.post({"prompt": "hi", "stream": stream}).json()
        assert (body["error_code"], body["error_msg"]) == (336100, OVERLOADED)
    assert s.total() == 0
    s.engine.fail = None
    answers = [s.post({"prompt": "hi", "stream": stream}) for _ in range(12)]
    served = [r for r in answers if "error_code" not in r.text]
    refused = [r.json() for r in answers if "error_code" in r.text]
    assert len(served) == 10
    assert [(b["error_code"], b["error_msg"]) for b in refused] == [(19, "Open api total request limit reached")] * 2
    assert s.total() == 10
    # 7 overloads + 2 refusals failed; the 10 served carry their tokens (prompt "hi" = 2, "abc" = 3)
    assert s.usage() == [("svc", 19, 10, 9, 20, 30)]


def test_engine_failure_before_output_gives_the_quota_back(setup):
    s = setup(FakeEngine(fail=EngineDead("engine process exited")), Limits(daily=1, total=1))
    assert s.post({"prompt": "hi"}).json()["error_code"] == 336000
    assert s.total() == 0
    s.engine.fail = None
    assert "result" in s.post({"prompt": "hi"}).json()
    assert s.post({"prompt": "hi"}).json()["error_code"] == 19


def test_error_after_output_keeps_the_quota_and_records_what_was_sent(setup):
    s = setup(FakeEngine(text="One. Two. Three.", fail_after=6), Limits(total=5, tpm=1000))
    lines = s.post({"prompt": "hi", "stream": True, "max_output_tokens": 20}).text.split("\n")
    assert json.loads(lines[0][6:])["result"] == "One."
    assert json.loads(lines[-2])["error_code"] == 336000
    assert s.total() == 1
    assert s.usage() == [("svc", 1, 0, 1, 2, 4)]                  # "One." was sent: 4 tokens
    assert s.platform.counters("default").minute_tokens == 6        # TPM: prompt + what was processed


def test_non_stream_failure_mid_generation_sent_nothing(setup):
    s = setup(FakeEngine(text="One. Two.", fail_after=3), Limits(total=5))
    assert s.post({"prompt": "hi"}).json()["error_code"] == 336000
    assert s.total() == 0 and s.usage() == [("svc", 1, 0, 1, 0, 0)]


def test_failures_before_admission_are_failed_calls_of_the_app(setup):
    s = setup(limits=Limits(qps=100))
    assert s.post({"prompt": "hi", "temperature": 5}).json()["error_code"] == 336003
    assert s.post({"prompt": 3}).json()["error_code"] == 336001
    assert s.post({"prompt": "hi"}, api_name="private").json()["error_code"] == 336004
    assert s.post({"prompt": "hi"}, api_name="nope").json()["error_code"] == 336005     # no service: no row
    assert s.post({"prompt": "hi"}, token="24." + "0" * 32 + ".1.1.1-1").json()["error_code"] == 110  # no app
    assert s.usage() == [("private", 1, 0, 1, 0, 0), ("svc", 2, 0, 2, 0, 0)]
    assert s.total() == 0 and s.platform.counters("default").minute_requests == 0


def test_body_limit_refusals_record_nothing_and_malformed_bodies_one_failed_call(setup):
    """A body over max_body_bytes is refused by the middleware before authentication: no app is known, nothing is
    recorded. A malformed body is found after the app and the service are: one failed call each, no quota used."""
    s = setup(limits=Limits(qps=100), max_body_bytes=20_000)
    r = s.client.post(PATH + "svc", params={"access_token": s.token},
                      content=b'{"prompt": "' + b"x" * 20_000 + b'"}')
    assert (r.json()["error_code"], r.json()["error_msg"]) == (
        336003, "request body is larger than 20000 bytes, the limit set by max_body_bytes")
    assert s.usage() == []
    malformed = [
        (b'{"prompt": "\\ud800"}', 336003),                           # a lone surrogate
        (b'{"prompt": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 336002),   # nested too deep
        (b'{"prompt": "hi", "seed": ' + b"9" * 5000 + b"}", 336003),    # an integer too long to read
        (json.dumps({"prompt": "x" * 64}).encode(), 336003),            # over the character bound (context 64)
    ]
    for content, code in malformed:
        r = s.client.post(PATH + "svc", params={"access_token": s.token}, content=content)
        assert r.json()["error_code"] == code, content[:40]
    assert s.usage() == [("svc", 4, 0, 4, 0, 0)]
    assert s.total() == 0 and s.platform.counters("default").minute_requests == 0


def test_rate_headers_on_every_model_answer(setup):
    s = setup(FakeEngine(text="abcdef"), Limits(qps=50, rpm=20, tpm=100))
    r = s.post({"prompt": "hi", "max_output_tokens": 3})
    assert r.json()["result"] == "abc"
    assert {k: v for k, v in r.headers.items() if k.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "19",
        "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "95"}    # 2 + 3 reserved at admission
    s.engine.fail = EngineOverloaded("queue full")
    r = s.post({"prompt": "hi", "max_output_tokens": 3})   # an error after admission carries them too
    assert r.json()["error_code"] == 336100 and r.headers["x-ratelimit-remaining-requests"] == "18"
    assert r.headers["x-ratelimit-remaining-tokens"] == "90"


def test_rpm_and_tpm_refusals(setup):
    s = setup(FakeEngine(text="abcdef"), Limits(rpm=2, tpm=30))
    assert "result" in s.post({"prompt": "hi", "max_output_tokens": 4}).json()      # reserves 6, settles 6
    r = s.post({"prompt": "hi", "max_output_tokens": 40})                            # 6 + 42 > 30
    assert r.json()["error_code"] == 336502 and r.json()["error_msg"] == "Rate limit reached for TPM"
    assert r.headers["x-ratelimit-remaining-tokens"] == "24"
    assert "result" in s.post({"prompt": "hi", "max_output_tokens": 4}).json()
    r = s.post({"prompt": "hi", "max_output_tokens": 1})
    assert (r.json()["error_code"], r.json()["error_msg"]) == (336501, "Rate limit reached for RPM")
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert s.usage() == [("svc", 4, 2, 2, 4, 8)]


def test_a_stream_the_client_left_before_it_started_is_still_closed():
    """The client leaves while the response headers are being sent: the frames generator never starts (so its
    `finally` would never run), and the response's on_close still ends the call."""
    import asyncio

    from neoxserve.api.responses import StreamResponse

    events = []

    async def frames():
        try:
            yield b"data: x\n\n"
        finally:
            events.append("frames closed")

    async def on_close():
        events.append("on_close")

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        await asyncio.sleep(0.2)   # a slow client: the disconnect is seen before the first frame is produced

    asyncio.run(StreamResponse(frames(), on_close=on_close)({"type": "http"}, receive, send))
    assert events == ["on_close"]
