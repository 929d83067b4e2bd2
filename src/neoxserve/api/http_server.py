"""The HTTP/1.1 connection protocol the server runs: uvicorn's httptools protocol with bounds on what a client may
hold (docs/operations.md, "Connections and slow clients").

uvicorn reads a request head of any size (a 300 MB header is buffered whole before the application sees it) and
has only an idle timeout between requests, armed after a response: a client that connects and sends half a
request holds its connection forever. Here:

- the request line and headers are bounded (`max_header_bytes`, `max_header_count`): past either, the answer is
  431 in the path's error shape (api/route_family.py) and the connection is closed, the rest unread. The size is
  counted as bytes arrive, so an endless header is cut off at the limit (plus at most one socket read) rather
  than buffered whole;
- the head must arrive within `header_timeout_seconds` of the connection or of the previous response, and a body
  must keep coming: no more than `body_timeout_seconds` between two reads. Past either, the answer is 408 (when a
  request had begun and no response has started) and the connection is closed; the application, if it was
  reading the body, sees the client disconnect;
- between requests a keep-alive connection is closed after `keep_alive_timeout_seconds` (uvicorn's own timer).
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import Settings
from .route_family import family_error_response

HEADER_LINE_OVERHEAD = 4          # ": " and CRLF around each name and value


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_header_count: int
    header_timeout_seconds: float
    body_timeout_seconds: float


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(settings.max_header_bytes, settings.max_header_count, settings.header_timeout_seconds,
                            settings.body_timeout_seconds)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer is in `status` and `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn.Config(http=...), with `limits`."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0              # the current head's line and fields, as the parser completed them
            self._raw_head_bytes = 0          # the reads that fell wholly inside the current head
            self._header_count = 0
            self._in_head = True              # reading a request line and headers (or waiting for one)
            self._request_begun = False
            self._timer: asyncio.TimerHandle | None = None

        # --- timers ---------------------------------------------------------------------------------------

        def _arm(self, seconds: float, what: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._timed_out, what)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self, what: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            started = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
            if self._request_begun and not started:
                self._answer(408, f"the request {what} did not arrive in time: the connection is closed")
            else:
                self.transport.close()

        # --- uvicorn's protocol, extended -----------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(limits.header_timeout_seconds, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return                        # refused: the rest is never read
            was_in_head = self._in_head
            super().data_received(data)
            if was_in_head and self._in_head and not self.transport.is_closing():
                # the whole read was head: a field the parser is still buffering counts as it arrives (the
                # callbacks count the completed fields; neither count ever exceeds the head's real size)
                self._raw_head_bytes += len(data)
                if self._raw_head_bytes > limits.max_header_bytes:
                    self._answer(431, self._too_large_message())

        def send_400_response(self, msg: str) -> None:
            error = self.parser_error
            if error is not None:
                self._answer(error.status, error.message)
            else:
                super().send_400_response(msg)

        parser_error: _Refused | None = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._request_begun = True, True
            self._head_bytes = self._raw_head_bytes = self._header_count = 0
            if self._timer is None:   # else the connection's first head, timed since connection_made
                self._arm(limits.header_timeout_seconds, "headers")

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._head_bytes += len(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._head_bytes += len(name) + len(value) + HEADER_LINE_OVERHEAD
            if self._header_count > limits.max_header_count:
                self._refuse(431, f"the request has more than {limits.max_header_count} header fields, the limit "
                                  "set by max_header_count")
            if self._head_bytes > limits.max_header_bytes:
                self._refuse(431, self._too_large_message())
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._arm(limits.body_timeout_seconds, "body")
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._arm(limits.body_timeout_seconds, "body")

        def on_message_complete(self) -> None:
            self._disarm()
            self._request_begun = False
            super().on_message_complete()

        # --- answers --------------------------------------------------------------------------------------

        def _too_large_message(self) -> str:
            return (f"the request line and headers are larger than {limits.max_header_bytes} bytes, the limit set "
                    "by max_header_bytes")

        def _refuse(self, status: int, message: str) -> None:
            self.parser_error = _Refused(status, message)
            raise self.parser_error

        def _answer(self, status: int, message: str) -> None:
            """Write `status` in the path's error shape and close, whatever was read of the request."""
            self._disarm()
            path = "/"
            with contextlib.suppress(httptools.HttpParserInvalidURLError):
                path = httptools.parse_url(self.url).path.decode("latin-1") if self.url else "/"
            response = family_error_response(path, status, message)
            head = [f"HTTP/1.1 {status} {_REASONS[status]}\r\n".encode()]
            for name, value in response.raw_headers:
                head.append(name + b": " + value + b"\r\n")
            head.append(b"connection: close\r\nx-baidu-request-id: " + uuid.uuid4().hex.encode() + b"\r\n\r\n")
            self.transport.write(b"".join(head) + bytes(response.body))
            self.transport.close()

    return GuardedHttpToolsProtocol


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 400: "Bad Request"}
