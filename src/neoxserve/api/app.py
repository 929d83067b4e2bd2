"""create_app: the Qianfan-compatible HTTP surface over an engine client and a platform (docs/api.md#routes)."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..engine.client import EngineClient
from ..platform import Platform
from .bce_bearer import bearer_token
from .completions import Completions
from .console import mount_console
from .errors import INVALID_HTTP_METHOD, UNSUPPORTED_METHOD, ApiError, error_response
from .limits import BodyLimitMiddleware
from .route_family import InternalErrorMiddleware, family_error_response, validation_message
from .metrics import Metrics
from .model_call import ModelCalls
from .moderation import Moderator
from .oauth import issue_token
from . import openai_openapi, openapi
from .openai_routes import OPENAI_CHAT, OPENAI_COMPLETION, QIANFAN_V2_CHAT, OpenAIRoutes
from .token_counts import TOKENIZER_ROUTE, TokenCounts
from .console_api import V1_DETAILS, V1_LIST, V2_SERVICE, ConsoleApi

log = logging.getLogger("neoxserve.api")

ALLOW_CANDIDATES = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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
    metrics = Metrics(engine_client.stats, engine_client.model_info.name, lambda: engine_client.model_info)
    calls = ModelCalls(settings, engine_client, platform, Moderator.from_file(settings.moderation_file), metrics)
    completions = Completions(calls)
    openai = OpenAIRoutes(calls)
    counts = TokenCounts(calls)
    console_api = ConsoleApi(platform, engine_client, metrics)
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(RequestIdMiddleware)   # added last: outermost, so that refusals carry the id too

    add = app.add_api_route   # one route per method: each is one documented operation (api/openapi.py)

    async def token(request: Request) -> Response:
        started = time.monotonic()
        response, outcome = await issue_token(platform, request)
        metrics.observe("oauth", outcome, time.monotonic() - started)
        return response

    for method in ("GET", "POST"):
        add("/oauth/2.0/token", token, methods=[method], **openapi.token(method))

    async def bce_bearer_token(request: Request) -> Response:
        started = time.monotonic()
        response, outcome = await bearer_token(platform, request)
        metrics.observe("bearer_token", outcome, time.monotonic() - started)
        return response

    add("/v1/BCE-BEARER/token", bce_bearer_token, methods=["GET"], **openapi.bearer_token())

    async def completion(request: Request, api_name: str) -> Response:
        return await completions.handle(request, api_name, chat=False)

    async def chat(request: Request, api_name: str) -> Response:
        return await completions.handle(request, api_name, chat=True)

    add(COMPLETIONS_ROUTE, completion, methods=["POST"], **openapi.model_call(chat=False))
    add(CHAT_ROUTE, chat, methods=["POST"], **openapi.model_call(chat=True))

    # Token counting (api/token_counts.py): Qianfan's tokenizer route and vLLM's /tokenize and /detokenize.
    async def erniebot_tokens(request: Request) -> Response:
        return await counts.erniebot(request)

    async def tokenize(request: Request) -> Response:
        return await counts.tokenize(request)

    async def detokenize(request: Request) -> Response:
        return await counts.detokenize(request)

    add(TOKENIZER_ROUTE, erniebot_tokens, methods=["POST"], include_in_schema=False)
    add("/tokenize", tokenize, methods=["POST"], include_in_schema=False)
    add("/detokenize", detokenize, methods=["POST"], include_in_schema=False)

    # The console API the SDK calls with IAM keys (api/console_api.py).
    async def console_v1(request: Request) -> Response:
        return await console_api.v1(request)

    async def console_v2(request: Request) -> Response:
        return await console_api.v2(request)

    for path in (V1_LIST, *V1_DETAILS):
        add(path, console_v1, methods=["POST"], include_in_schema=False)
    add(V2_SERVICE, console_v2, methods=["POST"], include_in_schema=False)

    # The OpenAI and Qianfan v2 routes (api/openai_routes.py).
    async def models(request: Request) -> Response:
        return await openai.models(request)

    async def model(request: Request, model: str) -> Response:
        return await openai.models(request, model)

    async def openai_completion(request: Request) -> Response:
        return await openai.handle(request, OPENAI_COMPLETION)

    async def openai_chat(request: Request) -> Response:
        return await openai.handle(request, OPENAI_CHAT)

    async def v2_chat(request: Request) -> Response:
        return await openai.handle(request, QIANFAN_V2_CHAT)

    add("/v1/models", models, methods=["GET"], **openai_openapi.models(one=False))
    add("/v1/models/{model}", model, methods=["GET"], **openai_openapi.models(one=True))
    add("/v1/completions", openai_completion, methods=["POST"], **openai_openapi.openai_call(chat=False))
    add("/v1/chat/completions", openai_chat, methods=["POST"], **openai_openapi.openai_call(chat=True))
    add("/v2/chat/completions", v2_chat, methods=["POST"], **openai_openapi.v2_chat())

    async def wrong_method(request: Request) -> Response:
        metrics.observe("other", INVALID_HTTP_METHOD, 0.0)
        if request.method == "CONNECT":
            # a 2xx answer to CONNECT means "tunnel established" (RFC 9110, 9.3.6): clients would never read it
            return error_response(ApiError(INVALID_HTTP_METHOD), status_code=405, headers={"Allow": "POST"})
        return error_response(ApiError(INVALID_HTTP_METHOD))

    async def unknown_route(request: Request) -> Response:
        metrics.observe("other", UNSUPPORTED_METHOD, 0.0)
        return error_response(ApiError(UNSUPPORTED_METHOD))

    async def documented_wrong_method(request: Request, api_name: str) -> Response:
        return await wrong_method(request)

    async def documented_unknown_route(request: Request, rest: str) -> Response:
        return await unknown_route(request)

    # The methods OpenAPI can describe get documented routes; then routes with methods=None and an ASGI endpoint
    # match every other method (CONNECT, PROPFIND, ...). The router tries routes in order, so the POST routes
    # above keep POST and the model routes come before the /rpc/ catch-all.
    for kind, path in (("completion", COMPLETIONS_ROUTE), ("chat", CHAT_ROUTE)):
        for method in openapi.OTHER_METHODS:
            add(path, documented_wrong_method, methods=[method], **openapi.wrong_method(kind, method))
        app.router.routes.append(Route(path, AnyMethod(wrong_method), methods=None, include_in_schema=False))
    app.router.routes.append(Route(TOKENIZER_ROUTE, AnyMethod(wrong_method), methods=None, include_in_schema=False))
    for method in openapi.METHODS:
        add("/rpc/{rest:path}", documented_unknown_route, methods=[method], **openapi.unknown_route(method))
    app.router.routes.append(Route("/rpc/{rest:path}", AnyMethod(unknown_route), methods=None,
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

    for method in ("GET", "HEAD"):
        add("/health", health, methods=[method], **openapi.probe("health", method))
        add("/ready", ready, methods=[method], **openapi.probe("ready", method))
        add("/metrics", prometheus, methods=[method], **openapi.probe("metrics", method, METRICS_TYPE))
        add("/openapi.json", document, methods=[method], **openapi.probe("openapi", method))
    openapi.install(app)

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
