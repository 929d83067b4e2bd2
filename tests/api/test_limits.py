"""Limits before work, against live servers: the body size limit (refused unread, whatever the route), the prompt
length bound checked before tokenizing, and the event loop answering /health while a large prompt is tokenized."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from neoxserve.api.context_fit import max_prompt_chars
from neoxserve.config import Settings
from neoxserve.engine.protocol import ModelInfo
from neoxserve.model.tokenizer import MAX_CHARS_PER_NORMALIZED_BYTE, Tokenizer

import rawhttp
from live import start_server
from test_errors import business

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))   # tiny_model: shared with a bench script
from tiny_model import write_tiny_model

LIMIT = Settings().max_body_bytes
TOO_LARGE = f"request body is larger than {LIMIT} bytes, the limit set by max_body_bytes"
HUNDRED_MB = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def token(server):
    return server.token()


def model_target(server, token, kind="completions"):
    return f"/rpc/2.0/ai_custom/v1/wenxinworkshop/{kind}/{server.api_name}?access_token={token}"


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


# ---- the body size limit -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["completions", "chat"])
def test_declared_length_over_the_limit_is_refused_unread(server, token, kind):
    r = rawhttp.request(server.port, "POST", model_target(server, token, kind),
                        headers={"Content-Length": str(HUNDRED_MB), "Content-Type": "application/json"})
    assert r.status == 200 and r.headers["connection"] == "close" and r.headers["x-baidu-request-id"]
    body = r.json()
    assert list(body) == ["id", "error_code", "error_msg"]
    assert (body["error_code"], body["error_msg"]) == (336003, TOO_LARGE)


def test_just_over_the_limit_is_refused_and_at_the_limit_is_read(server, token):
    over = rawhttp.request(server.port, "POST", model_target(server, token), body=b" " * (LIMIT + 1))
    assert (over.json()["error_code"], over.json()["error_msg"]) == (336003, TOO_LARGE)
    at = rawhttp.request(server.port, "POST", model_target(server, token), body=b" " * LIMIT)
    assert (at.json()["error_code"], at.json()["error_msg"]) == (336002, "Invalid JSON")   # read and parsed


@pytest.mark.parametrize("path", ["/oauth/2.0/token", "/health", "/metrics", "/no/such/path"])
def test_other_routes_answer_413_in_the_oauth_shape(server, path):
    r = rawhttp.request(server.port, "POST", path, headers={"Content-Length": str(HUNDRED_MB)})
    assert (r.status, r.headers["connection"]) == (413, "close")
    assert r.json() == {"error": "invalid_request", "error_description": TOO_LARGE}


def test_the_bearer_token_route_answers_413_in_the_bce_shape(server):
    r = rawhttp.request(server.port, "GET", "/v1/BCE-BEARER/token?expireInSeconds=900",
                        headers={"Content-Length": str(HUNDRED_MB)})
    assert (r.status, r.headers["connection"]) == (413, "close")
    body = r.json()
    assert set(body) == {"requestId", "code", "message"}
    assert (body["code"], body["message"]) == ("EntityTooLarge", TOO_LARGE)
    assert (r.headers["x-bce-error-code"], r.headers["x-bce-request-id"]) == ("EntityTooLarge", body["requestId"])


def test_100_mb_bodies_are_cut_off_with_rss_bounded_and_health_answering(server, token):
    """100 MB bodies, chunked or with their Content-Length (sent anyway): refused once the limit is passed and the
    rest never read. The HTTP process's peak RSS stays within a few times the limit, and /health answers between
    every megabyte of the uploads."""
    pid = server.process.pid
    baseline = vm_kib(pid, "VmRSS")
    health: list[int] = []
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        def megabytes_checking_health(n: int):
            for _ in range(n):
                health.append(client.get("/health").status_code)
                yield b"x" * 2**20

        for target in (model_target(server, token), "/oauth/2.0/token"):
            r = rawhttp.request(server.port, "POST", target, body_chunks=megabytes_checking_health(100))
            assert r.body_sent < 16 * 2**20 and r.headers["connection"] == "close"
            error = r.json()
            assert error.get("error_msg", error.get("error_description")) == TOO_LARGE
            r = rawhttp.request(server.port, "POST", target, headers={"Content-Length": str(HUNDRED_MB)},
                                body_chunks=None, body=b"", stream=megabytes_checking_health(100))
            assert r.body_sent < 16 * 2**20
        assert len(health) >= 8 and set(health) == {200}
        assert client.get("/ready").status_code == 200
    peak_growth_mib = (vm_kib(pid, "VmHWM") - baseline) / 1024
    assert peak_growth_mib < 4 * LIMIT / 2**20, f"peak RSS grew by {peak_growth_mib:.0f} MiB"


def test_refusals_are_counted_in_metrics(server, token):
    rawhttp.request(server.port, "POST", model_target(server, token), headers={"Content-Length": str(LIMIT + 1)})
    rawhttp.request(server.port, "POST", "/oauth/2.0/token", headers={"Content-Length": str(LIMIT + 1)})
    rawhttp.request(server.port, "GET", "/v1/BCE-BEARER/token", headers={"Content-Length": str(LIMIT + 1)})
    text = httpx.get(server.base_url + "/metrics").text
    assert 'neoxserve_http_requests_total{error_code="336003",route="completions"}' in text
    assert 'neoxserve_http_requests_total{error_code="invalid_request",route="oauth"}' in text
    assert 'neoxserve_http_requests_total{error_code="EntityTooLarge",route="bearer_token"}' in text


# ---- the prompt length bound -------------------------------------------------------------------------------

def demo_tokenizer(server) -> Tokenizer:
    return Tokenizer.from_dir(server.data_dir / "demo-random-model")


def test_prompt_over_the_character_bound_is_refused_before_tokenizing(server, token):
    tok = demo_tokenizer(server)
    context = json.loads((server.data_dir / "demo-random-model" / "config.json").read_text())["max_position_embeddings"]
    longest = max(len(tok.token_bytes(i, False)) for i in range(tok.vocab_size))
    max_chars = int(longest * MAX_CHARS_PER_NORMALIZED_BYTE * (context - 1))
    assert max_prompt_chars(tok.max_chars_per_token, ModelInfo("demo", "", context, False)) == max_chars
    over = "北" * (max_chars + 1)
    r = httpx.post(server.completions_url(), params={"access_token": token}, json={"prompt": over}, timeout=60)
    assert business(r) == (336003, f"prompt is too long: {max_chars + 1} characters, more than a context of "
                                    f"{context} tokens can hold ({max_chars} characters at most with this model's "
                                    "tokenizer)")
    # one character fewer is tokenized, and refused on its token count
    at = over[:-1]
    n = len(tok.encode(at))
    r = httpx.post(server.completions_url(), params={"access_token": token}, json={"prompt": at}, timeout=60)
    assert business(r) == (336003, f"prompt is too long: {n} tokens, the model context is {context} tokens")
    # the chat route counts the system prompt and every message
    messages = [{"role": "user", "content": over[: max_chars // 2]}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "x"}]
    r = httpx.post(server.chat_url(), params={"access_token": token}, timeout=60,
                   json={"messages": messages, "system": over[: max_chars // 2]})
    chars = 2 * (max_chars // 2) + 3
    assert chars > max_chars
    assert business(r)[1].startswith(f"prompt is too long: {chars} characters, more than a context of")


# ---- the event loop stays free -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def neox_server(tmp_path_factory, assets_dir):
    """A live server on a tiny random model that uses the real GPT-NeoX-20B tokenizer: its bound lets a prompt of
    3 million characters through to the tokenizer, which then works for seconds."""
    model = write_tiny_model(tmp_path_factory.mktemp("neox-tokenizer-model"),
                             assets_dir / "gpt-neox-20b-tokenizer.json")
    live = start_server(tmp_path_factory.mktemp("neox-data"), args=["--model", str(model), "--api-name", "neox"])
    live.api_name = "neox"
    live.model_dir = model
    yield live
    assert live.stop() == 0, live.stderr_tail()


def test_health_answers_while_a_large_prompt_is_tokenized(neox_server):
    """Tokenizing 500,000 CJK characters takes the real tokenizer seconds; it used to run on the event loop, and
    every other request, /health included, waited for it. Now /health's latency stays far below that time."""
    prompt = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(500_000))
    n = len(Tokenizer.from_dir(neox_server.model_dir).encode(prompt))
    latencies: list[float] = []
    working = threading.Event()
    working.set()

    def poll_health() -> None:
        with httpx.Client(base_url=neox_server.base_url, timeout=30) as client:
            while working.is_set():
                started = time.monotonic()
                assert client.get("/health").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        started = time.monotonic()
        r = httpx.post(neox_server.completions_url(), params={"access_token": neox_server.token()},
                       json={"prompt": prompt}, timeout=300)
        took = time.monotonic() - started
    finally:
        working.clear()
        poller.join()
    assert business(r) == (336003, f"prompt is too long: {n} tokens, the model context is 4096 tokens")
    latencies.sort()
    p99, worst = latencies[int(0.99 * (len(latencies) - 1))], latencies[-1]
    print(f"large prompt: {took:.2f} s; /health: {len(latencies)} requests, p99 {p99 * 1000:.0f} ms, "
          f"max {worst * 1000:.0f} ms")
    assert len(latencies) >= 10
    assert p99 < 0.25 and worst < max(0.5, took / 4), (took, p99, worst)
