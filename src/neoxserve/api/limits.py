"""The request body size limit (`Settings.max_body_bytes`), enforced before any handler sees the request.

A pure ASGI middleware: BaseHTTPMiddleware would buffer streams and hide client disconnects. A declared
Content-Length over the limit is refused at once, before anything is read (so a client that sent
`Expect: 100-continue` never sends the body); a chunked body is counted as it arrives and refused as soon as it
passes the limit. Either way the rest is never read: the answer says `Connection: close` and the server closes the
connection after it. A body within the limit is read here and handed on whole, then `receive` is the server's
again (handlers watch it for disconnects).

The answer depends on the route family (docs/api.md, "Limits"), in that family's error shape:
- `/rpc/...` (the Qianfan routes): business error 336003 at HTTP 200, since the SDK treats any other status as a
  transport failure;
- `/v1/BCE-BEARER/...` (the IAM bearer-token route): HTTP 413 in BCE's shape, code `EntityTooLarge`;
- the OpenAI and Qianfan v2 model routes: HTTP 413 in their error shapes, code `request_too_large`;
- every other path (the OAuth token route, /health, ...): HTTP 413 with the OAuth error shape the token route uses.

A refusal here comes before authentication: no app is known, so the call ledger records nothing.
"""
from __future__ import annotations

import uuid

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..platform.errors import BceError, OAuthError
from .errors import bce_error_response, error_response, oauth_error_response, out_of_range
from .http_errors import too_large_response
from .metrics import Metrics
from .openai_routes import ROUTES

QIANFAN_PREFIX = "/rpc/"
BCE_PREFIX = "/v1/BCE-BEARER/"
BCE_TOO_LARGE = "EntityTooLarge"


def body_too_large_message(limit: int) -> str:
    return f"request body is larger than {limit} bytes, the limit set by max_body_bytes"


def route_label(path: str) -> str:
    """The metrics route of a path (the labels the handlers use)."""
    if path.startswith("/oauth/"):
        return "oauth"
    if path.startswith(BCE_PREFIX):
        return "bearer_token"
    if path in ROUTES:
        return ROUTES[path].route
    for kind in ("completions", "chat"):
        if path.startswith(f"/rpc/2.0/ai_custom/v1/wenxinworkshop/{kind}/"):
            return kind
    return "other"


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
        message = body_too_large_message(self.limit)
        path = scope["path"]
        response: Response
        outcome: str
        if path.startswith(QIANFAN_PREFIX):
            error = out_of_range(message)
            response, outcome = error_response(error), str(error.code)
        elif path in ROUTES:
            response, outcome = too_large_response(message, ROUTES[path].qianfan), "413"
        elif path.startswith(BCE_PREFIX):
            response = bce_error_response(BceError(413, BCE_TOO_LARGE, message), str(uuid.uuid4()))
            outcome = BCE_TOO_LARGE
        else:
            response = oauth_error_response(OAuthError(413, "invalid_request", message))
            outcome = "invalid_request"
        response.headers["Connection"] = "close"   # the rest of the body is never read
        self.metrics.observe(route_label(path), outcome, 0.0)
        await response(scope, receive, send)
