"""The console API's gatekeeper: every route is a `ConsoleRoute`, which refuses cross-site state changes and calls
without a session before the handler (or FastAPI's body parsing) runs, and turns platform errors into JSON.

Cross-site requests: the session cookie is SameSite=Strict, and on top of that every state-changing method must
carry an `Origin` (or, failing that, a `Referer`) equal to the server's own origin or one of
`settings.console_origins`. The explicit check needs no token plumbing in the page, holds for browsers that ignore
SameSite, and also covers the login form (login CSRF). Browsers always send `Origin` on POST, PUT, PATCH and
DELETE, so the page never trips it; non-browser clients must send one.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter

from ...config import Settings
from ...platform import AdminAuthError, AdminError, Conflict, NotFound, Platform
from ..route_family import validation_message
from .schemas import ErrorBody

log = logging.getLogger("neoxserve.console")

COOKIE = "neoxserve_console"
COOKIE_PATH = "/console"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
AUTH_STATUS = {"wrong_key": 401, "no_session": 401, "expired": 401, "throttled": 429}


class ConsoleError(Exception):
    """An error answered as {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> Response:
        return JSONResponse({"error": {"code": self.code, "message": self.message}}, status_code=self.status,
                            headers=self.headers)


P = ParamSpec("P")
T = TypeVar("T")


async def run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A platform call, off the event loop (the store may wait on SQLite's lock or on Redis)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


LOOPBACK_OR_ANY = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""}


def served_origins(settings: Settings) -> frozenset[str]:
    """The origins the console's own pages are loaded from: the address the server binds, as a browser names it,
    plus `console_origins`. Never the request's Host header, which a DNS-rebinding page controls."""
    port = settings.port
    if settings.host in LOOPBACK_OR_ANY:
        hosts = ["127.0.0.1", "localhost", "[::1]"]
    else:
        hosts = [f"[{settings.host}]" if ":" in settings.host else settings.host]
    own = {f"http://{host}:{port}" for host in hosts}
    return frozenset(own | {o.rstrip("/").lower() for o in settings.console_origins})


def request_origin(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin.lower()
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.scheme and referer.netloc:
        return f"{referer.scheme}://{referer.netloc}".lower()
    return None


def check_origin(request: Request, allowed: frozenset[str]) -> None:
    origin = request_origin(request)
    if origin is None:
        raise ConsoleError(403, "cross_site", "refused: a state-changing console call needs an Origin or Referer "
                                              "header naming this server")
    if origin not in allowed:
        log.warning("refused a cross-site %s %s from origin %s", request.method, request.url.path, origin)
        raise ConsoleError(403, "cross_site", f"refused: cross-site request from {origin}")


def error_for(e: Exception) -> ConsoleError | None:
    if isinstance(e, ConsoleError):
        return e
    if isinstance(e, RequestValidationError):
        return ConsoleError(400, "bad_request", validation_message(e))
    if isinstance(e, AdminAuthError):
        headers = {"Retry-After": str(e.retry_after)} if e.reason == "throttled" else {}
        return ConsoleError(AUTH_STATUS[e.reason], e.reason, e.message, headers)
    if isinstance(e, NotFound):
        return ConsoleError(404, "not_found", str(e))
    if isinstance(e, Conflict):
        return ConsoleError(409, "conflict", str(e))
    if isinstance(e, AdminError):
        return ConsoleError(400, "bad_request", str(e))
    return None


# The refusals documented for every console API route (/openapi.json); login adds 429.
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody, "description": what} for status, what in (
    (400, "bad input: the platform's message, or the field and its problem (bad_request)"),
    (401, "no session (no_session, expired), or a wrong admin key at login (wrong_key)"),
    (403, "a state change without this server's Origin (cross_site)"),
    (404, "no such app, service or API key (not_found)"),
    (409, "the name is taken (conflict)"),
)}
THROTTLED: dict[int | str, dict[str, Any]] = {429: {"model": ErrorBody, "description": "too many login attempts "
                                                    "from this address (throttled); Retry-After says when to retry"}}


def console_router(platform: Platform, settings: Settings, prefix: str = "", needs_session: bool = True
                   ) -> APIRouter:
    """A router under /console/api/ whose routes are guarded (`route_class`) and documented as such."""
    return APIRouter(prefix="/console/api" + prefix, tags=["console"],
                     route_class=route_class(platform, settings, needs_session),
                     responses=ERRORS if needs_session else {**ERRORS, **THROTTLED})


def route_class(platform: Platform, settings: Settings, needs_session: bool = True) -> type[APIRoute]:
    allowed = served_origins(settings)

    class ConsoleRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    if request.method not in SAFE_METHODS:
                        check_origin(request, allowed)
                    if needs_session:
                        await run(platform.admin.check_session, request.cookies.get(COOKIE))
                    response = await handler(request)
                except Exception as e:
                    error = error_for(e)
                    if error is None:
                        raise
                    response = error.response()
                response.headers["Cache-Control"] = "no-store"
                return response

            return guarded

    return ConsoleRoute
