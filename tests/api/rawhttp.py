"""HTTP/1.1 over a plain socket, for what HTTP clients will not send: any method token, a Content-Length without
its body, a body that keeps coming after the server has answered."""
from __future__ import annotations

import itertools
import json
import select
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)   # lower-case names
    body: bytes = b""
    body_sent: int = 0          # request body bytes the server took before answering or closing

    def json(self):
        return json.loads(self.body)


def _read_response(sock: socket.socket, head_only: bool = False) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a complete response head: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    _, status, reason = [*lines[0].split(" ", 2), ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(int(status), reason, headers, body[:length] if length else body)


def request(port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
            body_chunks: Iterable[bytes] | None = None, stream: Iterable[bytes] | None = None,
            timeout: float = 30.0) -> RawResponse:
    """Send one request and read the answer. The body is `body`; or `body_chunks` sent with chunked framing; or
    `stream` sent as is (after the caller's own Content-Length). Sending stops as soon as the server answers or
    closes, and its answer is read. HEAD answers are read without a body."""
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    if body_chunks is not None:
        headers["Transfer-Encoding"] = "chunked"
        pieces = (f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in itertools.chain(body_chunks, [b""]))
    elif stream is not None:
        pieces = iter(stream)
    else:
        if body or "Content-Length" not in headers:
            headers.setdefault("Content-Length", str(len(body)))
        pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        sent = 0
        try:
            for piece in pieces:
                if _answered(sock):
                    break
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server answered and closed: its answer is still in our receive buffer
        response = _read_response(sock, head_only=method == "HEAD")
        response.body_sent = sent
        return response


def _answered(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed) already."""
    readable, _, _ = select.select([sock], [], [], 0)   # data, or the end of the stream
    return bool(readable)
