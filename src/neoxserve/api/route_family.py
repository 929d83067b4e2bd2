"""The error shape of each route family (the families and which paths belong to which: api/route_table.py).

Every refusal the service makes outside a handler (a body over the limit, an unknown path or method, a body
FastAPI cannot parse, an internal error or a store outage) is answered here, in the shape and status the route's
clients read; handlers answer their own refusals in the same shapes (api/errors.py, api/http_errors.py,
api/console/guard.py).
"""
from __future__ import annotations

import logging
import uuid

from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..platform.errors import BceError, OAuthError
from .errors import (INTERNAL, INVALID_HTTP_METHOD, MESSAGES, OUT_OF_RANGE, UNSUPPORTED_METHOD, ApiError,
                     bce_error_response, compact, console_v1_error, error_response, new_id, oauth_error_response,
                     out_of_range)
from .http_errors import openai_error_response, v2_error_response
from .route_table import Family, family_of

log = logging.getLogger("neoxserve.api")

# Per HTTP status: the codes of the families whose codes are strings (BCE, OpenAI/v2 `code`, console, OAuth).
BCE_CODES = {400: "InvalidHTTPRequest", 404: "NoSuchURI", 405: "MethodNotAllowed", 413: "EntityTooLarge",
              431: "RequestHeaderTooLarge", 500: "InternalError", 503: "ServiceUnavailable"}
BCE_TOO_LARGE = BCE_CODES[413]
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
          431: "request_header_too_large", 500: "internal_error", 503: "service_unavailable"}


def family_error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A refusal with HTTP `status` (400, 404, 405, 413, 431, 500, 503) and a message naming the problem, in the
    shape of `path`'s family. The v1 routes answer at HTTP 200 with their code (336003 for a bad request or a body
    too large, 3 for an unknown path, 336101 for a method, 336000 for an internal error)."""
    family = family_of(path)
    response: Response
    if family is Family.V1:
        if status == 404:
            response = error_response(ApiError(UNSUPPORTED_METHOD))
        elif status == 405:
            response = error_response(ApiError(INVALID_HTTP_METHOD))
        elif status >= 500:
            response = error_response(ApiError(INTERNAL))
        else:
            response = error_response(out_of_range(message))
    elif family is Family.CONSOLE_V1:
        number = {404: UNSUPPORTED_METHOD, 405: INVALID_HTTP_METHOD}.get(status, INTERNAL if status >= 500 else
                                                                          OUT_OF_RANGE)
        response = console_v1_error(number, MESSAGES.get(number, message))
    elif family is Family.BCE:
        response = bce_error_response(BceError(status, BCE_CODES.get(status, "InvalidHTTPRequest"), message),
                                      str(uuid.uuid4()))
    elif family in (Family.OPENAI, Family.V2) and status == 500:   # 336000's entry in the routes' table
        error = ApiError(INTERNAL, detail=message)
        response = openai_error_response(error) if family is Family.OPENAI else v2_error_response(error, new_id())
    elif family in (Family.OPENAI, Family.V2):
        code = _CODES.get(status, "bad_request")
        if family is Family.OPENAI:
            body: dict[str, object] = {"error": {"message": message,
                                                 "type": "server_error" if status >= 500 else "invalid_request_error",
                                                 "param": None, "code": code}}
        else:
            body = {"error": {"code": code, "message": message,
                              "type": "server_error" if status >= 500 else "invalid_request_error"}, "id": new_id()}
        response = Response(compact(body), status_code=status, media_type="application/json")
    elif family is Family.CONSOLE:
        response = JSONResponse({"error": {"code": _CODES.get(status, "bad_request"), "message": message}},
                                status_code=status)
    else:
        response = oauth_error_response(OAuthError(status, "server_error" if status >= 500 else "invalid_request",
                                                   message))
    response.headers.update(headers or {})
    return response


def internal_error_response(path: str) -> Response:
    """An error that is a bug (or a store that cannot be reached), which the caller has logged: 500 in the path's
    family shape (v1: 336000 at HTTP 200)."""
    return family_error_response(path, 500, "internal error: the server's log has the cause")


def validation_message(e: RequestValidationError) -> str:
    """What is wrong with a body FastAPI validated: the field and its problem."""
    err = e.errors()[0]
    if err.get("type") == "json_invalid":
        return "the body is not valid JSON"
    loc = [str(part) for part in err.get("loc", ()) if part != "body"]
    if not loc:
        return "the body must be a JSON object"
    return f"{'.'.join(loc)}: {err.get('msg', 'invalid')}"


class InternalErrorMiddleware:
    """Answers an exception that escaped a handler in the path's family shape (and logs it as the bug it is).

    Inside RequestIdMiddleware, so that the answer carries X-Baidu-Request-Id like any other: Starlette's own
    handler for `Exception` runs outside every middleware. If the response had already started (a stream), nothing
    can be answered any more; the exception is re-raised and the server closes the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=e)
            if started:
                raise
            await internal_error_response(scope["path"])(scope, receive, send)
