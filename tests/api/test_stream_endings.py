"""A stream whose final frame reached the client is a served call, however fast the client hangs up after it.

Real HTTP on loopback (uvicorn in a thread, the real app and the real SQLite platform, a fake engine whose
generations take a moment to close, as the real engine client's abort round trip does). The client reads up to
the final frame (v1 `is_end`, or `data: [DONE]`) and resets the connection at once, which is what the official
openai client does after [DONE]; usage and the request metrics must count every such call as succeeded, with its
tokens, exactly once. A client that leaves before the end is a failed call with the tokens it was sent.
"""
from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Platform

from fakes import FakeEngine
from live import free_port

TEXT = "One two three four five six seven."       # 34 characters: 34 tokens of the fake's tokenizer
CALLS = 12                                       # per route


class Served:
    def __init__(self, tmp_path, engine: FakeEngine) -> None:
        settings = Settings(data_dir=tmp_path, stream_chunk_tokens=8)
        self.platform = Platform.open(settings)
        keys = self.platform.bootstrap("svc", "fake")
        self.key = self.platform.create_api_key("default").key
        self.app = create_app(settings, engine, self.platform)
        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        self.token = httpx.get(f"http://127.0.0.1:{self.port}/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": keys.api_key,
            "client_secret": keys.secret_key}).json()["access_token"]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.platform.close()

    def usage(self) -> tuple[int, int, int, int]:
        """(calls, succeeded, failed, completion tokens) over every service."""
        rows = self.platform.usage()
        return (sum(u.calls for u in rows), sum(u.succeeded for u in rows), sum(u.failed for u in rows),
                sum(u.completion_tokens for u in rows))

    def requests_metric(self, route: str, code: str = "0") -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics").text
        m = re.search(rf'^neoxserve_http_requests_total{{error_code="{code}",route="{route}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path, FakeEngine(text=TEXT, close_delay=0.05))
    yield s
    s.close()


@contextmanager
def _connection(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        # close with a reset, as soon as the caller is done: no FIN handshake for the server to wait on
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _post(sock: socket.socket, port: int, target: str, body: dict, headers: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    head = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Content-Length": str(len(raw)),
            **headers}
    sock.sendall(f"POST {target} HTTP/1.1\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode()
                 + b"\r\n" + raw)


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the stream closed before {marker!r}: {data[-300:]!r}"
        data += chunk
    return data


ROUTES = {
    # route label: (target, body, end marker, bearer?)
    "completions": ("/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc", {"prompt": "hi"}, b'"is_end":true',
                    False),
    "chat": ("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/svc", {"messages": [{"role": "user", "content": "hi"}]},
             b'"is_end":true', False),
    "v2_chat": ("/v2/chat/completions", {"model": "svc", "messages": [{"role": "user", "content": "hi"}]},
                b"data: [DONE]", True),
    "openai_chat": ("/v1/chat/completions", {"model": "svc", "messages": [{"role": "user", "content": "hi"}]},
                    b"data: [DONE]", True),
    "openai_completions": ("/v1/completions", {"model": "svc", "prompt": "hi"}, b"data: [DONE]", True),
}


def _target_and_headers(served: Served, target: str, bearer: bool) -> tuple[str, dict[str, str]]:
    if bearer:
        return target, {"Authorization": f"Bearer {served.key}"}
    return f"{target}?access_token={served.token}", {}


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("route", ROUTES)
def test_a_client_that_hangs_up_right_after_the_final_frame_was_served(served, route):
    target, body, marker, bearer = ROUTES[route]
    target, headers = _target_and_headers(served, target, bearer)
    for _ in range(CALLS):
        with _connection(served.port) as sock:
            _post(sock, served.port, target, {**body, "stream": True, "max_output_tokens": 40}
                  if not bearer else {**body, "stream": True, "max_tokens": 40}, headers)
            data = _read_until(sock, marker)
            assert b"HTTP/1.1 200" in data.split(b"\r\n", 1)[0]
    expected = (CALLS, CALLS, 0, CALLS * len(TEXT))
    _wait_for(lambda: served.usage() == expected)
    assert served.usage() == expected
    assert served.requests_metric(route) == CALLS


def test_a_client_that_leaves_mid_stream_is_a_failed_call_with_what_it_was_sent(tmp_path):
    s = Served(tmp_path, FakeEngine(text=TEXT, delay=0.02))
    try:
        target, headers = _target_and_headers(s, *[ROUTES["completions"][i] for i in (0, 3)])
        with _connection(s.port) as sock:
            _post(sock, s.port, target, {"prompt": "hi", "stream": True}, headers)
            data = _read_until(sock, b'"sentence_id":0')
            assert b'"is_end":false' in data
        _wait_for(lambda: s.usage()[0] == 1)
        calls, succeeded, failed, tokens = s.usage()
        assert (calls, succeeded, failed) == (1, 0, 1)
        assert 8 <= tokens < len(TEXT)           # at least the first chunk (8 tokens), not the whole answer
        assert s.requests_metric("completions") == 1
    finally:
        s.close()


def test_openai_client_streams_are_all_recorded(served):
    """The official client, 4 at a time: it closes the connection once it has read [DONE]."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{served.port}/v1", api_key=served.key, max_retries=0,
                           timeout=30)

    def one(_: int) -> str:
        stream = client.chat.completions.create(model="svc", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=40, stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(one, range(CALLS)))
    assert texts == [TEXT] * CALLS
    expected = (CALLS, CALLS, 0, CALLS * len(TEXT))
    _wait_for(lambda: served.usage() == expected)
    assert served.usage() == expected
    assert served.requests_metric("openai_chat") == CALLS
