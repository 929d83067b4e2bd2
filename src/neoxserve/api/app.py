"""create_app: the Qianfan-compatible HTTP surface over an engine client and a platform (docs/api.md#routes)."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..engine.client import EngineClient
from ..platform import Platform
from .bce_bearer import bearer_token
from .completions import Completions
from .errors import INTERNAL, INVALID_HTTP_METHOD, UNSUPPORTED_METHOD, ApiError, error_response
from .limits import BodyLimitMiddleware
from .metrics import Metrics
from .moderation import Moderator
from .oauth import issue_token

log = logging.getLogger("neoxserve.api")

MODEL_ROUTE = "/rpc/2.0/ai_custom/v1/wenxinworkshop/{kind}/{api_name}"
COMPLETIONS_ROUTE = MODEL_ROUTE.format(kind="completions", api_name="{api_name}")
CHAT_ROUTE = MODEL_ROUTE.format(kind="chat", api_name="{api_name}")


class RequestIdMiddleware:
    """Echoes the client's `Request_id` header (or a new id) as `X-Baidu-Request-Id` on every response.

    Pure ASGI rather than BaseHTTPMiddleware, which would buffer streams and hide client disconnects.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = b""
        for name, value in scope["headers"]:
            if name.lower() == b"request_id":
                request_id = value
        request_id = request_id or uuid.uuid4().hex.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-baidu-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class AnyMethod:
    """An ASGI endpoint from `handler(request) -> Response`. Starlette gives a route with a plain function
    endpoint and no methods GET and HEAD only; an ASGI endpoint keeps methods=None: every method."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def create_app(settings: Settings, engine_client: EngineClient, platform: Platform) -> FastAPI:
    """The app over a started engine client (its model is loaded) and an open platform."""
    app = FastAPI(title="neoxserve", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics(engine_client.stats)
    completions = Completions(settings, engine_client, platform, Moderator.from_file(settings.moderation_file),
                              metrics)
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)   # added last: outermost, so that refusals carry the id too

    @app.api_route("/oauth/2.0/token", methods=["GET", "POST"])
    async def token(request: Request) -> Response:
        started = time.monotonic()
        response, outcome = await issue_token(platform, request)
        metrics.observe("oauth", outcome, time.monotonic() - started)
        return response

    @app.get("/v1/BCE-BEARER/token")
    async def bce_bearer_token(request: Request) -> Response:
        started = time.monotonic()
        response, outcome = await bearer_token(platform, request)
        metrics.observe("bearer_token", outcome, time.monotonic() - started)
        return response

    @app.post(COMPLETIONS_ROUTE)
    async def completion(request: Request, api_name: str) -> Response:
        return await completions.handle(request, api_name, chat=False)

    @app.post(CHAT_ROUTE)
    async def chat(request: Request, api_name: str) -> Response:
        return await completions.handle(request, api_name, chat=True)

    # Routes with methods=None and an ASGI endpoint match every method, extension methods (PROPFIND, ...)
    # included; the router tries them after the POST routes above, which match their paths only for POST.
    async def wrong_method(request: Request) -> Response:
        metrics.observe("other", INVALID_HTTP_METHOD, 0.0)
        if request.method == "CONNECT":
            # a 2xx answer to CONNECT means "tunnel established" (RFC 9110, 9.3.6): clients would never read it
            return error_response(ApiError(INVALID_HTTP_METHOD), status_code=405, headers={"Allow": "POST"})
        return error_response(ApiError(INVALID_HTTP_METHOD))

    async def unknown_route(request: Request) -> Response:
        metrics.observe("other", UNSUPPORTED_METHOD, 0.0)
        return error_response(ApiError(UNSUPPORTED_METHOD))

    for path in (COMPLETIONS_ROUTE, CHAT_ROUTE):
        app.router.routes.append(Route(path, AnyMethod(wrong_method), methods=None, include_in_schema=False))
    app.router.routes.append(Route("/rpc/{rest:path}", AnyMethod(unknown_route), methods=None,
                                   include_in_schema=False))

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.api_route("/ready", methods=["GET", "HEAD"])
    async def ready() -> Response:
        alive = engine_client.is_alive()   # the model is loaded: the app is created after that
        return JSONResponse({"status": "ready" if alive else "not ready", "model_loaded": True,
                             "engine_alive": alive}, status_code=200 if alive else 503)

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(INTERNAL))

    return app
