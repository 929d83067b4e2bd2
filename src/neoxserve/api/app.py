"""create_app: the Qianfan-compatible HTTP surface over an engine client and a platform (docs/api.md#routes)."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..engine.client import EngineClient
from ..platform import Platform
from . import openapi, route_table
from .console import mount_console
from .errors import INVALID_HTTP_METHOD, UNSUPPORTED_METHOD, ApiError, error_response
from .limits import BodyLimitMiddleware
from .metrics import Metrics
from .model_call import ModelCallRunner
from .moderation import Moderator
from .openai_v2 import openapi as openai_openapi
from .openai_v2.model_routes import OPENAI_CHAT, OPENAI_COMPLETION, QIANFAN_V2_CHAT, ModelList, OpenAIModelRoute
from .qianfan_v1.bce_bearer import bearer_token
from .qianfan_v1 import openapi as v1_openapi
from .qianfan_v1.console_api import ConsoleApi
from .qianfan_v1.model_routes import V1ModelRoute
from .qianfan_v1.oauth import issue_token
from .route_family import InternalErrorMiddleware, family_error_response, validation_message
from .token_counts import TokenCounts

log = logging.getLogger("neoxserve.api")

ALLOW_CANDIDATES = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
    metrics = Metrics(engine_client.stats, engine_client.model_info.name, lambda: engine_client.model_info)
    runner = ModelCallRunner(settings, engine_client, platform, Moderator.from_file(settings.moderation_file),
                             metrics)
    v1_completion = V1ModelRoute(chat=False, stream_chunk_tokens=settings.stream_chunk_tokens)
    v1_chat = V1ModelRoute(chat=True, stream_chunk_tokens=settings.stream_chunk_tokens)
    openai_completion_route, openai_chat_route, v2_chat_route = (
        OpenAIModelRoute(shape, runner.inputs, engine_client.tokenizer)
        for shape in (OPENAI_COMPLETION, OPENAI_CHAT, QIANFAN_V2_CHAT))
    model_list = ModelList(platform, metrics)
    counts = TokenCounts(runner)
    console_api = ConsoleApi(platform, engine_client, metrics)
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(RequestIdMiddleware)   # added last: outermost, so that refusals carry the id too

    add = app.add_api_route   # one route per method: each is one documented operation (api/openapi.py)

    async def token(request: Request) -> Response:
        started = time.monotonic()
        response, outcome = await issue_token(platform, request)
        metrics.observe(route_table.OAUTH_TOKEN.label, outcome, time.monotonic() - started)
        return response

    for method in route_table.OAUTH_TOKEN.methods:
        add(route_table.OAUTH_TOKEN.path, token, methods=[method], **v1_openapi.token(method))

    async def bce_bearer_token(request: Request) -> Response:
        started = time.monotonic()
        response, outcome = await bearer_token(platform, request)
        metrics.observe(route_table.BCE_BEARER_TOKEN.label, outcome, time.monotonic() - started)
        return response

    add(route_table.BCE_BEARER_TOKEN.path, bce_bearer_token, methods=list(route_table.BCE_BEARER_TOKEN.methods),
        **v1_openapi.bearer_token())

    # the model routes: api_name (the path's, read by the route) is in the signature for the OpenAPI document
    async def completion(request: Request, api_name: str) -> Response:
        return await runner.answer(v1_completion, request)

    async def chat(request: Request, api_name: str) -> Response:
        return await runner.answer(v1_chat, request)

    add(route_table.V1_COMPLETION.path, completion, methods=list(route_table.V1_COMPLETION.methods),
        **v1_openapi.model_call(chat=False))
    add(route_table.V1_CHAT.path, chat, methods=list(route_table.V1_CHAT.methods), **v1_openapi.model_call(chat=True))

    # Token counting (api/token_counts.py): Qianfan's tokenizer route and vLLM's /tokenize and /detokenize.
    async def erniebot_tokens(request: Request) -> Response:
        return await counts.erniebot(request)

    async def tokenize(request: Request) -> Response:
        return await counts.tokenize(request)

    async def detokenize(request: Request) -> Response:
        return await counts.detokenize(request)

    for entry, handler in ((route_table.V1_TOKENIZER, erniebot_tokens), (route_table.TOKENIZE, tokenize),
                           (route_table.DETOKENIZE, detokenize)):
        add(entry.path, handler, methods=list(entry.methods), include_in_schema=False)

    # The console API the SDK calls with IAM keys (api/qianfan_v1/console_api.py).
    async def console_v1(request: Request) -> Response:
        return await console_api.v1(request)

    async def console_v2(request: Request) -> Response:
        return await console_api.v2(request)

    for entry in (route_table.CONSOLE_V1_LIST, route_table.CONSOLE_V1_DETAIL, route_table.CONSOLE_V1_GET):
        add(entry.path, console_v1, methods=list(entry.methods), include_in_schema=False)
    add(route_table.CONSOLE_V2_SERVICE.path, console_v2, methods=list(route_table.CONSOLE_V2_SERVICE.methods),
        include_in_schema=False)

    # The OpenAI and Qianfan v2 routes (api/openai_v2/model_routes.py).
    async def models(request: Request) -> Response:
        return await model_list.models(request)

    async def model(request: Request, model: str) -> Response:
        return await model_list.models(request, model)

    async def openai_completion(request: Request) -> Response:
        return await runner.answer(openai_completion_route, request)

    async def openai_chat(request: Request) -> Response:
        return await runner.answer(openai_chat_route, request)

    async def v2_chat(request: Request) -> Response:
        return await runner.answer(v2_chat_route, request)

    openai_endpoints: list[tuple[route_table.RouteEntry, Callable[..., Awaitable[Response]], dict[str, Any]]] = [
            (route_table.OPENAI_MODELS, models, openai_openapi.models(one=False)),
            (route_table.OPENAI_MODEL, model, openai_openapi.models(one=True)),
            (route_table.OPENAI_COMPLETION, openai_completion, openai_openapi.openai_call(chat=False)),
            (route_table.OPENAI_CHAT, openai_chat, openai_openapi.openai_call(chat=True)),
            (route_table.V2_CHAT, v2_chat, openai_openapi.v2_chat())]
    for entry, endpoint, doc in openai_endpoints:
        add(entry.path, endpoint, methods=list(entry.methods), **doc)

    async def wrong_method(request: Request) -> Response:
        metrics.observe(route_table.OTHER_LABEL, INVALID_HTTP_METHOD, 0.0)
        if request.method == "CONNECT":
            # a 2xx answer to CONNECT means "tunnel established" (RFC 9110, 9.3.6): clients would never read it
            return error_response(ApiError(INVALID_HTTP_METHOD), status_code=405, headers={"Allow": "POST"})
        return error_response(ApiError(INVALID_HTTP_METHOD))

    async def unknown_route(request: Request) -> Response:
        metrics.observe(route_table.V1_UNKNOWN.label, UNSUPPORTED_METHOD, 0.0)
        return error_response(ApiError(UNSUPPORTED_METHOD))

    async def documented_wrong_method(request: Request, api_name: str) -> Response:
        return await wrong_method(request)

    async def documented_unknown_route(request: Request, rest: str) -> Response:
        return await unknown_route(request)

    # The methods OpenAPI can describe get documented routes; then routes with methods=None and an ASGI endpoint
    # match every other method (CONNECT, PROPFIND, ...). The router tries routes in order, so the POST routes
    # above keep POST and the model routes come before the /rpc/ catch-all.
    for kind, entry in (("completion", route_table.V1_COMPLETION), ("chat", route_table.V1_CHAT)):
        for method in v1_openapi.OTHER_METHODS:
            add(entry.path, documented_wrong_method, methods=[method], **v1_openapi.wrong_method(kind, method))
        app.router.routes.append(Route(entry.path, AnyMethod(wrong_method), methods=None, include_in_schema=False))
    app.router.routes.append(Route(route_table.V1_TOKENIZER.path, AnyMethod(wrong_method), methods=None,
                                   include_in_schema=False))
    for method in v1_openapi.METHODS:
        add(route_table.V1_UNKNOWN.path, documented_unknown_route, methods=[method], **v1_openapi.unknown_route(method))
    app.router.routes.append(Route(route_table.V1_UNKNOWN.path, AnyMethod(unknown_route), methods=None,
                                   include_in_schema=False))

    mount_console(app, settings, engine_client, platform)

    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    async def ready() -> Response:
        readiness = engine_client.readiness()
        body: dict[str, object] = {"status": "ready" if readiness.ready else "not ready",
                                   "model_loaded": readiness.ready, "engine_alive": readiness.engine_alive,
                                   "engine": readiness.state.value}
        if readiness.reason is not None:
            body["reason"] = readiness.reason
        return JSONResponse(body, status_code=200 if readiness.ready else 503)

    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=METRICS_TYPE)

    async def document() -> Response:
        return JSONResponse(app.openapi())

    for method in route_table.PROBE_METHODS:
        add(route_table.HEALTH.path, health, methods=[method], **openapi.probe("health", method))
        add(route_table.READY.path, ready, methods=[method], **openapi.probe("ready", method))
        add(route_table.METRICS.path, prometheus, methods=[method], **openapi.probe("metrics", method, METRICS_TYPE))
        add(route_table.OPENAPI.path, document, methods=[method], **openapi.probe("openapi", method))
    openapi.install(app, v1_openapi.ALWAYS_DOCUMENTED)

    @app.exception_handler(StarletteHTTPException)
    async def http_refusal(request: Request, exc: StarletteHTTPException) -> Response:
        """The router's 404 and 405, and FastAPI's 400 for a body it cannot parse, in the family's shape."""
        path, method = request.url.path, request.method
        if exc.status_code == 404:
            message = f"no route {path}: see /openapi.json for the routes this server has"
        elif exc.status_code == 405:
            # every route of this path (the router's own Allow names the first matching route's methods only)
            allowed = ", ".join(m for m in ALLOW_CANDIDATES if any(
                r.matches({**request.scope, "method": m})[0] is Match.FULL for r in app.router.routes))
            message = f"method {method} is not allowed on {path}" + (f"; use {allowed}" if allowed else "")
            return family_error_response(path, 405, message, {"Allow": allowed} if allowed else None)
        else:
            message = f"{exc.detail}" if exc.detail else f"HTTP {exc.status_code}"
        return family_error_response(path, exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
        return family_error_response(request.url.path, 400, validation_message(exc))

    return app
