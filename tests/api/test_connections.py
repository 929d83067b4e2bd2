"""Bounded request heads and slow clients (api/http_server.py), over raw sockets against uvicorn running the
server's own protocol class on loopback, with the real app over the real SQLite platform and a fake engine."""
from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from neoxserve.api.app import create_app
from neoxserve.api.http_server import connection_limits, guarded_protocol
from neoxserve.config import Settings
from neoxserve.platform import Platform

from fakes import FakeEngine
from live import free_port

LIMITS = dict(max_header_bytes=4096, max_header_count=20, header_timeout_seconds=0.6, body_timeout_seconds=0.6,
              keep_alive_timeout_seconds=1)
TOO_LARGE = "the request line and headers are larger than 4096 bytes, the limit set by max_header_bytes"


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), **LIMITS)
    platform = Platform.open(settings)
    platform.bootstrap("svc", "fake")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, FakeEngine(), platform), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off",
                                           http=guarded_protocol(connection_limits(settings)),
                                           timeout_keep_alive=settings.keep_alive_timeout_seconds))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(10)
    platform.close()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _answer(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _send_safely(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):   # refused and closed: the answer is in
        sock.sendall(data)                                             # our receive buffer


def test_a_head_over_the_limit_is_431_in_the_routes_shape(port):
    with _connect(port) as sock:
        _send_safely(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        status, headers, body = _answer(_read_all(sock))
    assert (status, headers["connection"]) == (431, "close") and headers["x-baidu-request-id"]
    assert json.loads(body) == {"error": {"message": TOO_LARGE, "type": "invalid_request_error", "param": None,
                                          "code": "request_header_too_large"}}


def test_an_endless_header_is_cut_off_at_the_limit_not_buffered(port):
    """The header never ends: the server answers once it has taken about the limit, without the whole of it."""
    with _connect(port) as sock:
        sock.sendall(b"POST /rpc/2.0/ai_custom/v1/wenxinworkshop/completions/svc HTTP/1.1\r\nX-Endless: ")
        sent = 0
        sock.settimeout(0.05)
        answer = b""
        while sent < 50_000_000:     # bounded: 50 MB at most, were the limit not enforced
            try:
                sock.sendall(b"b" * 65536)
                sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = sock.recv(65536)
                if answer:
                    break
            except TimeoutError:
                pass
        sock.settimeout(10)
        if not answer:
            answer = _read_all(sock)
        else:
            answer += _read_all(sock)
    status, _, body = _answer(answer)
    assert status == 431 and sent < 2_000_000
    # the status says 431 (nothing of the request was read whole); the body is in the v1 routes' shape
    assert json.loads(body)["error_code"] == 336003 and json.loads(body)["error_msg"] == TOO_LARGE


def test_too_many_header_fields_is_431(port):
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(21))
    with _connect(port) as sock:
        _send_safely(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        status, _, body = _answer(_read_all(sock))
    assert status == 431
    assert json.loads(body) == {"error": "invalid_request", "error_description":
                                "the request has more than 20 header fields, the limit set by max_header_count"}


def test_a_head_within_the_limits_is_served(port):
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(18))
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n")
        status, _, body = _answer(_read_all(sock))
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_headers_that_never_finish_get_408_and_the_connection_closed(port):
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        status, _, body = _answer(_read_all(sock))
        waited = time.monotonic() - started
    assert status == 408 and 0.4 < waited < 5
    assert json.loads(body)["error_description"] == ("the request headers did not arrive in time: the connection "
                                                     "is closed")


def test_a_connection_that_sends_nothing_is_closed(port):
    with _connect(port) as sock:
        started = time.monotonic()
        assert _read_all(sock) == b""          # closed without an answer: no request had begun
        assert time.monotonic() - started < 5


def test_a_body_shorter_than_its_content_length_gets_408(port):
    with _connect(port) as sock:
        sock.sendall(b"POST /v2/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"")
        status, _, body = _answer(_read_all(sock))
    assert status == 408
    assert json.loads(body)["error"]["message"] == "the request body did not arrive in time: the connection is closed"


def test_a_chunked_body_with_no_end_gets_408(port):
    with _connect(port) as sock:
        sock.sendall(b"POST /oauth/2.0/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        status, _, _ = _answer(_read_all(sock))
    assert status == 408


def test_a_body_that_keeps_coming_slowly_is_not_cut_off(port):
    """The body timeout is between reads, not for the whole body: 5 pieces 0.3 s apart (1.5 s in all)."""
    form = b"grant_type=client_credentials&client_id=nobody&client_secret=x"
    with _connect(port) as sock:
        sock.sendall(b"POST /oauth/2.0/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                     b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(form))
        for i in range(0, len(form), -(-len(form) // 5)):
            time.sleep(0.3)
            sock.sendall(form[i:i + -(-len(form) // 5)])
        status, _, answer = _answer(_read_all(sock))
    assert status != 408 and json.loads(answer)["error"] in ("invalid_request", "invalid_client"), answer


def test_an_idle_keep_alive_connection_is_closed(port):
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert _read_all(sock) == b""
        assert 0.5 < time.monotonic() - started < 5


def test_many_half_requests_do_not_hold_descriptors(port):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(300, soft // 4)
    socks = [_connect(port) for _ in range(count)]
    for s in socks:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    time.sleep(1.5)
    closed = 0
    for s in socks:
        s.settimeout(5)
        if _read_all(s).startswith(b"HTTP/1.1 408"):
            closed += 1
        s.close()
    assert closed == count
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


def test_the_served_command_runs_this_protocol(server):
    """`neoxserve serve` itself (the live server, default limits: 32 KiB of head)."""
    with _connect(server.port) as sock:
        _send_safely(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        status, _, body = _answer(_read_all(sock))
    assert status == 431 and "limit set by max_header_bytes" in json.loads(body)["error_description"]
