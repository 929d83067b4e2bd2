"""The Qianfan error catalogue (spec section 6) and the two error shapes the API answers with.

Business errors are HTTP 200 with one-line JSON: the SDK treats any non-2xx as a transport failure and then
neither retries nor refreshes its token. Only the OAuth endpoint uses HTTP statuses.
"""
from __future__ import annotations

import json
import secrets
import string

from fastapi.responses import Response

UNKNOWN = 1
SERVICE_UNAVAILABLE = 2
UNSUPPORTED_METHOD = 3
REQUEST_LIMIT = 4
NO_PERMISSION_DATA = 6
IAM_FAILED = 14
APP_NOT_EXISTS = 15
DAILY_LIMIT = 17
QPS_LIMIT = 18
TOTAL_LIMIT = 19
INVALID_PARAMETER = 100
TOKEN_INVALID = 110
TOKEN_EXPIRED = 111
INTERNAL = 336000
INVALID_ARGUMENT = 336001
INVALID_JSON = 336002
OUT_OF_RANGE = 336003
PERMISSION = 336004
API_NAME_NOT_EXIST = 336005
OVERLOADED = 336100
INVALID_HTTP_METHOD = 336101
RPM_LIMIT = 336501
TPM_LIMIT = 336502

# Fixed messages. 336003 and 336004 carry a cause-specific message instead.
MESSAGES: dict[int, str] = {
    UNKNOWN: "Unknown error",
    SERVICE_UNAVAILABLE: "Service temporarily unavailable",
    UNSUPPORTED_METHOD: "Unsupported openapi method",
    REQUEST_LIMIT: "Open api request limit reached",
    NO_PERMISSION_DATA: "No permission to access data",
    IAM_FAILED: "IAM Certification failed",
    APP_NOT_EXISTS: "app not exists or create failed",
    DAILY_LIMIT: "Open api daily request limit reached",
    QPS_LIMIT: "Open api qps request limit reached",
    TOTAL_LIMIT: "Open api total request limit reached",
    INVALID_PARAMETER: "Invalid parameter",
    TOKEN_INVALID: "Access token invalid or no longer valid",
    TOKEN_EXPIRED: "Access token expired",
    INTERNAL: "Internal error",
    INVALID_ARGUMENT: "Invalid Argument",
    INVALID_JSON: "Invalid JSON",
    API_NAME_NOT_EXIST: "API name not exist",
    OVERLOADED: "人工智能是一项革命性的技术。与我互动的人过多，请您稍后重新向我提问。",
    INVALID_HTTP_METHOD: "Invalid HTTP Method",
    RPM_LIMIT: "Open api rpm request limit reached",
    TPM_LIMIT: "Open api tpm request limit reached",
}

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A response id: `as-` and 10 lowercase letters or digits."""
    return "as-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


class ApiError(Exception):
    """A business error: answered at HTTP 200 as `{"id", "error_code", "error_msg"}`."""

    def __init__(self, code: int, message: str | None = None) -> None:
        if message is None:
            message = MESSAGES[code]
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def out_of_range(message: str) -> ApiError:
    return ApiError(OUT_OF_RANGE, message)


def compact(obj: object) -> str:
    """One-line JSON, UTF-8 kept as is (the doc's responses carry Chinese unescaped)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error_body(error: ApiError, response_id: str | None = None) -> dict:
    body: dict = {"id": response_id} if response_id else {}
    body.update(error_code=error.code, error_msg=error.message)
    return body


def error_response(error: ApiError, response_id: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(compact(error_body(error, response_id or new_id())), status_code=200,
                    media_type="application/json", headers=headers)


def oauth_error_response(status: int, error: str, description: str) -> Response:
    return Response(compact({"error": error, "error_description": description}), status_code=status,
                    media_type="application/json")
