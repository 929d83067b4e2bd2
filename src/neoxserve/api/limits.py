"""The request body size limit (`Settings.max_body_bytes`), enforced before any handler sees the request.

A pure ASGI middleware: BaseHTTPMiddleware would buffer streams and hide client disconnects. A declared
Content-Length over the limit is refused at once, before anything is read (so a client that sent
`Expect: 100-continue` never sends the body); a chunked body is counted as it arrives and refused as soon as it
passes the limit. Either way the rest is never read: the answer says `Connection: close` and the server closes the
connection after it. A body within the limit is read here and handed on whole, then `receive` is the server's
again (handlers watch it for disconnects).

The answer is HTTP 413 in the route family's shape (api/route_family.py; docs/api.md, "Limits"): on the Qianfan
`/rpc/` routes business error 336003 at HTTP 200, since the SDK treats any other status as a transport failure;
BCE's `EntityTooLarge` on `/v1/BCE-BEARER/`; `request_too_large` on the OpenAI and v2 routes and the console;
OAuth's `invalid_request` elsewhere.

A refusal here comes before authentication: no app is known, so the call ledger records nothing. The metrics
count it under the label of the route the path belongs to (api/route_table.py).
"""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import OUT_OF_RANGE
from .metrics import Metrics
from .route_family import BCE_TOO_LARGE, family_error_response
from .route_table import Family, family_of, label_of

# the metrics outcome of a 413, per family: the code its answer carries
_OUTCOMES = {Family.V1: str(OUT_OF_RANGE), Family.BCE: BCE_TOO_LARGE, Family.OAUTH: "invalid_request"}


def body_too_large_message(limit: int) -> str:
    return f"request body is larger than {limit} bytes, the limit set by max_body_bytes"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None   # the HTTP server rejects a malformed Content-Length before the app runs
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            return await self._refuse(scope, receive, send)
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return   # gone before its body arrived: nobody to answer
            part = message.get("body", b"")
            size += len(part)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            parts.append(part)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [{"type": "http.request", "body": b"".join(parts), "more_body": False}]

        async def receive_rest() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, receive_rest, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        response = family_error_response(path, 413, body_too_large_message(self.limit),
                                         {"Connection": "close"})   # the rest of the body is never read
        self.metrics.observe(label_of(path), _OUTCOMES.get(family_of(path), "413"), 0.0)
        await response(scope, receive, send)
