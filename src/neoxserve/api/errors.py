"""The Qianfan error codes the API raises (docs/api.md#errors) and the three error shapes it answers with.

Business errors are HTTP 200 with one-line JSON: the SDK treats any non-2xx as a transport failure and then
neither retries nor refreshes its token. Only the OAuth endpoint (OAuth's shape) and the IAM bearer-token endpoint
(BCE's shape) use HTTP statuses.
"""
from __future__ import annotations

import json
import secrets
import string
import uuid

from fastapi.responses import Response

from neoxserve.platform.errors import BceError, OAuthError

# The codes the platform raises (auth, quotas, services) are defined with their messages in platform/errors.py and
# reach the API as PlatformError (code and message); these are the ones the API raises itself.
UNSUPPORTED_METHOD = 3
INTERNAL = 336000
INVALID_ARGUMENT = 336001
INVALID_JSON = 336002
OUT_OF_RANGE = 336003
OVERLOADED = 336100
INVALID_HTTP_METHOD = 336101

# Fixed messages. 336003 carries a cause-specific message instead.
MESSAGES: dict[int, str] = {
    UNSUPPORTED_METHOD: "Unsupported openapi method",
    INTERNAL: "Internal error",
    INVALID_ARGUMENT: "Invalid Argument",
    INVALID_JSON: "Invalid JSON",
    OVERLOADED: "人工智能是一项革命性的技术。与我互动的人过多，请您稍后重新向我提问。",
    INVALID_HTTP_METHOD: "Invalid HTTP Method",
}

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A response id: `as-` and 10 lowercase letters or digits."""
    return "as-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


class ApiError(Exception):
    """An error of a model call, by its Qianfan code. The v1 routes answer it at HTTP 200 as `{"id", "error_code",
    "error_msg"}`; the OpenAI and v2 routes with an HTTP status and their own shapes (api/http_errors.py).

    `message` is the Qianfan wire text. `detail` names the problem where the Qianfan message is fixed (336001
    says only "Invalid Argument"; the routes that answer with HTTP statuses say which field); `param` is the
    request field at fault, if one is; `reason` an OpenAI-style code for a cause the status-code routes tell apart
    (`context_length_exceeded`). A refusal by the app's limits carries `retry_after` (seconds, None when waiting
    does not help) and the X-Ratelimit-* `headers` of its answer."""

    def __init__(self, code: int, message: str | None = None, *, detail: str | None = None,
                 param: str | None = None, reason: str | None = None, retry_after: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        if message is None:
            message = MESSAGES[code]
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = detail or message
        self.param = param
        self.reason = reason
        self.retry_after = retry_after
        self.headers = headers or {}


def out_of_range(message: str, param: str | None = None, reason: str | None = None) -> ApiError:
    return ApiError(OUT_OF_RANGE, message, param=param, reason=reason)


def compact(obj: object) -> str:
    """One-line JSON, UTF-8 kept as is (the doc's responses carry Chinese unescaped)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error_body(error: ApiError, response_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"id": response_id} if response_id else {}
    body.update(error_code=error.code, error_msg=error.message)
    return body


def error_response(error: ApiError, response_id: str | None = None,
                   headers: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return Response(compact(error_body(error, response_id or new_id())), status_code=status_code,
                    media_type="application/json", headers=headers)


def oauth_error_response(error: OAuthError) -> Response:
    return Response(compact(error.to_dict()), status_code=error.status, media_type="application/json")


def bce_error_response(error: BceError, request_id: str) -> Response:
    """BCE's error shape: `{"requestId", "code", "message"}`, the code and message also in X-Bce-Error-*."""
    return Response(compact({"requestId": request_id, "code": error.code, "message": error.message}),
                    status_code=error.status, media_type="application/json",
                    headers={"X-Bce-Request-Id": request_id, "X-Bce-Error-Code": error.code,
                             "X-Bce-Error-Message": error.message})


def console_v1_error(code: int, message: str, log_id: str | None = None) -> Response:
    """The Qianfan console API's error shape (`/wenxinworkshop/...`), at HTTP 200: the SDK raises APIError on
    `error_code`."""
    return Response(compact({"log_id": log_id or uuid.uuid4().hex, "error_code": code, "error_msg": message}),
                    media_type="application/json")
