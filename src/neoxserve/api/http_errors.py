"""Errors of the OpenAI and Qianfan v2 routes: an HTTP status and the route's JSON shape (docs/api.md, "Errors of
the OpenAI and v2 routes").

An ApiError carries a Qianfan code (api/errors.py, platform/errors.py); this table is the one place that code
becomes a status, OpenAI's `type` and `code`, and Qianfan v2's `code` and `type`:

- OpenAI:     `{"error": {"message", "type", "param", "code"}}`
- Qianfan v2: `{"error": {"code", "message", "type"}, "id"}` (the SDK raises APIError(code, message, id))

The message is the error's detail (it names the field or the limit, where v1's fixed text would not). A 429 from
a limit that frees within the minute carries `Retry-After` (seconds); every refusal by a limit carries the
app's X-Ratelimit-* headers.
"""
from __future__ import annotations

from typing import NamedTuple

from fastapi.responses import Response

from ..platform import errors as platform
from . import errors as api
from .errors import ApiError, compact


class HttpError(NamedTuple):
    status: int
    openai_type: str
    openai_code: str | None
    v2_code: str
    v2_type: str


_INVALID = HttpError(400, "invalid_request_error", None, "invalid_argument", "invalid_request_error")

HTTP_ERRORS: dict[int, HttpError] = {
    api.INVALID_JSON: HttpError(400, "invalid_request_error", None, "malformed_json", "invalid_request_error"),
    api.INVALID_ARGUMENT: _INVALID,
    api.OUT_OF_RANGE: _INVALID,
    platform.IAM_FAILED: HttpError(401, "invalid_request_error", "invalid_api_key", "invalid_iam_token",
                                   "access_denied"),
    platform.INVALID_PARAMETER: HttpError(401, "invalid_request_error", "invalid_api_key", "invalid_iam_token",
                                          "access_denied"),
    platform.TOKEN_INVALID: HttpError(401, "invalid_request_error", "invalid_api_key", "invalid_iam_token",
                                      "access_denied"),
    platform.TOKEN_EXPIRED: HttpError(401, "invalid_request_error", "invalid_api_key", "token_expired",
                                      "access_denied"),
    platform.NO_PERMISSION: HttpError(403, "permission_error", "model_not_permitted", "no_permission",
                                      "access_denied"),
    platform.API_NAME_NOT_EXIST: HttpError(404, "invalid_request_error", "model_not_found", "invalid_model",
                                           "invalid_request_error"),
    platform.QPS_LIMIT: HttpError(429, "requests", "rate_limit_exceeded", "qps_rate_limit_exceeded",
                                  "rate_limit_exceeded"),
    platform.RPM_LIMIT: HttpError(429, "requests", "rate_limit_exceeded", "rpm_rate_limit_exceeded",
                                  "rate_limit_exceeded"),
    platform.TPM_LIMIT: HttpError(429, "tokens", "rate_limit_exceeded", "tpm_rate_limit_exceeded",
                                  "rate_limit_exceeded"),
    platform.DAILY_LIMIT: HttpError(429, "insufficient_quota", "insufficient_quota", "daily_limit_reached",
                                    "rate_limit_exceeded"),
    platform.TOTAL_LIMIT: HttpError(429, "insufficient_quota", "insufficient_quota", "total_limit_reached",
                                    "rate_limit_exceeded"),
    api.OVERLOADED: HttpError(503, "server_error", "server_overloaded", "server_high_load", "server_error"),
    api.INTERNAL: HttpError(500, "server_error", None, "internal_error", "server_error"),
}


def http_error(error: ApiError) -> HttpError:
    return HTTP_ERRORS[error.code]


def openai_error_body(error: ApiError) -> dict[str, object]:
    e = http_error(error)
    if e.status == 400:
        code = error.reason
    else:
        code = e.openai_code
    return {"error": {"message": error.detail, "type": e.openai_type, "param": error.param, "code": code}}


def v2_error_body(error: ApiError, response_id: str) -> dict[str, object]:
    e = http_error(error)
    return {"error": {"code": error.reason or e.v2_code, "message": error.detail, "type": e.v2_type},
            "id": response_id}


def _headers(error: ApiError) -> dict[str, str]:
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return headers


def openai_error_response(error: ApiError) -> Response:
    return Response(compact(openai_error_body(error)), status_code=http_error(error).status,
                    media_type="application/json", headers=_headers(error))


def v2_error_response(error: ApiError, response_id: str) -> Response:
    return Response(compact(v2_error_body(error, response_id)), status_code=http_error(error).status,
                    media_type="application/json", headers=_headers(error))
