"""The OpenAPI documentation of the Qianfan v1 routes: the model calls (and every other method on them, and any
other path under /rpc/), the OAuth token and the IAM bearer token (api/openapi.py has what every family shares and
finishes the document).

Business errors are HTTP 200 with `{"id", "error_code", "error_msg"}`; each route's error schema lists the codes
it can answer as an `enum`, so the document says exactly which codes to expect where. The IAM bearer-token route
answers BCE's error shape with an HTTP status, one schema per status with its one code.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ...engine.sampling_params import SamplingParams
from ...platform.errors import (API_NAME_NOT_EXIST, DAILY_LIMIT, IAM_FAILED, INVALID_PARAMETER, NO_PERMISSION,
                                QPS_LIMIT, RPM_LIMIT, TOKEN_EXPIRED, TOKEN_INVALID, TOTAL_LIMIT, TPM_LIMIT)
from ..errors import (INTERNAL, INVALID_ARGUMENT, INVALID_HTTP_METHOD, INVALID_JSON, OUT_OF_RANGE, OVERLOADED,
                      UNSUPPORTED_METHOD)
from ..fields import MAX_SEED, MAX_STOP
from ..openapi import REF, RATE_HEADERS, Stop, Usage, json_body, rule_field
from ..route_family import BCE_TOO_LARGE

METHODS = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"]   # those OpenAPI can describe
OTHER_METHODS = [m for m in METHODS if m != "POST"]
RESPONSE_ID = r"^as-[a-z0-9]{10}$"


def _else(value: float) -> str:
    """What a request that sets a sampling field gets without it: the service's default, else the engine's."""
    return f"default: the service's, else {value or 'off'}"


_DEFAULTS = SamplingParams()


class _Fields(BaseModel):
    """The optional fields of both model routes (docs/api.md, "Request body"); unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")

    stream: bool = Field(False, description="answer as text/event-stream frames")
    temperature: float | None = rule_field("temperature", _else(_DEFAULTS.temperature))
    top_k: int | None = rule_field("top_k", _else(_DEFAULTS.top_k))
    top_p: float | None = rule_field("top_p", "0 = greedy; " + _else(_DEFAULTS.top_p))
    penalty_score: float | None = rule_field("penalty_score", _else(_DEFAULTS.penalty_score))
    stop: list[Stop] | None = Field(
        None, max_length=MAX_STOP, description="generation ends before the first of these; null means none")
    max_output_tokens: int | None = rule_field("max_output_tokens", "at most the service's max_output_tokens")
    seed: int | None = Field(None, ge=0, lt=MAX_SEED, description="same seed, same text")
    user_id: str | None = Field(None, description="accepted, not used")


class CompletionBody(_Fields):
    prompt: str = Field(min_length=1)


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class ChatBody(_Fields):
    messages: list[Message] = Field(min_length=1, description="an odd count: user, assistant, ..., user")
    system: str | None = Field(None, description="default: the published StableLM Tuned system prompt")


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=RESPONSE_ID)
    object: Literal["completion"]
    created: int = Field(description="unix seconds")
    result: str
    is_safe: Literal[0, 1]
    usage: Usage


class ChatCompletion(Completion):
    object: Literal["chat.completion"]   # type: ignore[assignment]


class CompletionChunk(Completion):
    """One `data: <JSON>` frame of a stream (`object` is `chat.completion` on the chat route)."""

    object: Literal["completion", "chat.completion"]   # type: ignore[assignment]
    sentence_id: int = Field(ge=0)
    is_end: bool


class Token(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: str
    expires_in: int
    refresh_token: str
    scope: str
    session_key: str
    session_secret: str


class OAuthError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: Literal["invalid_request", "invalid_client", "unsupported_grant_type"]
    error_description: str


class BearerToken(BaseModel):
    """The answer of GET /v1/BCE-BEARER/token, as Baidu's IAM gives it."""

    model_config = ConfigDict(extra="forbid")

    userId: str = Field(description="the app's id")
    token: str = Field(pattern=r"^bce-v3/ALTAK-[A-Za-z0-9]{20}/[0-9a-f]{40}$")
    status: Literal["enable"]
    createTime: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
    expireTime: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def business_error(name: str, codes: list[int]) -> type[BaseModel]:
    """The error body `{"id", "error_code", "error_msg"}` restricted to `codes`."""
    code: Any = Literal[tuple(codes)]
    return create_model(name, __config__=ConfigDict(extra="forbid"), id=(str, Field(pattern=RESPONSE_ID)),
                        error_code=(code, ...), error_msg=(str, ...))


def bce_error(name: str, code: str) -> type[BaseModel]:
    """BCE's error body `{"requestId", "code", "message"}` with one `code`."""
    code_type: Any = Literal[code]
    return create_model(name, __config__=ConfigDict(extra="forbid"), requestId=(str, ...),
                        code=(code_type, ...), message=(str, ...))


MODEL_CALL_CODES = [UNSUPPORTED_METHOD, IAM_FAILED, DAILY_LIMIT, QPS_LIMIT, TOTAL_LIMIT, INVALID_PARAMETER,
                    TOKEN_INVALID, TOKEN_EXPIRED, INTERNAL, INVALID_ARGUMENT, INVALID_JSON, OUT_OF_RANGE,
                    NO_PERMISSION, API_NAME_NOT_EXIST, OVERLOADED, RPM_LIMIT, TPM_LIMIT]
ModelCallError = business_error("ModelCallError", MODEL_CALL_CODES)
WrongMethodError = business_error("WrongMethodError", [UNSUPPORTED_METHOD, INVALID_HTTP_METHOD, OUT_OF_RANGE])
UnknownRouteError = business_error("UnknownRouteError", [UNSUPPORTED_METHOD, OUT_OF_RANGE])
BceAccessDenied = bce_error("BceAccessDenied", "AccessDenied")
BceInvalidParameterValue = bce_error("BceInvalidParameterValue", "InvalidParameterValue")
BceEntityTooLarge = bce_error("BceEntityTooLarge", BCE_TOO_LARGE)


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": False, "description": description,
            "schema": {"type": "string", **schema}}


QIANFAN_AUTH = [
    _param("access_token", "query", "from /oauth/2.0/token (or sign the request: Authorization)"),
    _param("Authorization", "header", "an IAM signature, bce-auth-v1/...; replaces access_token"),
    _param("Request_id", "header", "echoed as X-Baidu-Request-Id (a new id without it)"),
]
API_NAME = {"name": "api_name", "in": "path", "required": True, "description": "the service's published name",
            "schema": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$"}}
_CALL_ERRORS = """Business errors are HTTP 200 with `{"id", "error_code", "error_msg"}`: 100 / 110 / 111 token
missing / unknown or revoked / expired, 14 bad IAM signature, 336005 unknown api_name, 336004 app not allowed,
336002 body not JSON, 336001 missing field or wrong type, 336003 a value out of range (the message names it; also
a body over max_body_bytes and a prompt longer than the context), 19 / 17 / 18 total / daily / QPS quota, 336501 /
336502 RPM / TPM limit (retry), 336100 overloaded (retry), 336000 internal error, 3 not a model route (an empty
api_name). A stream that fails before its first frame answers like a non-stream error; one that fails later ends
with a bare JSON error line. Answers after admission and refusals by a limit carry the X-Ratelimit-* headers of the
app's limits."""
# In OpenAPI 3.1 the schema of a text/event-stream answer describes each event: its data is one CompletionChunk.
STREAM_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {
    "type": "string", "contentMediaType": "application/json",
    "contentSchema": {"$ref": REF.format(model="CompletionChunk")}}}}


def model_call(chat: bool) -> dict[str, Any]:
    kind = "chat" if chat else "completion"
    done = ChatCompletion if chat else Completion
    return {
        "summary": f"Qianfan v1 {kind}",
        "description": _CALL_ERRORS,
        "operation_id": f"{kind}_post",
        "responses": {200: {
            "description": f"the {kind} (non-stream), a business error, or (`stream: true`) text/event-stream "
                           "frames, each `data: <CompletionChunk JSON>` and a blank line",
            "model": done | ModelCallError,
            "content": {"text/event-stream": {"schema": STREAM_EVENT}},
            "headers": RATE_HEADERS,
        }},
        "openapi_extra": {"parameters": [API_NAME, *QIANFAN_AUTH], **json_body(ChatBody if chat else CompletionBody)},
    }


def wrong_method(kind: str, method: str) -> dict[str, Any]:
    return {
        "summary": f"any method but POST on the {kind} route: error 336101",
        "description": "Every method other than POST (extension methods included) answers 336101 at HTTP 200; "
                       "CONNECT, which OpenAPI cannot describe, gets the same body with HTTP 405.",
        "operation_id": f"{kind}_{method.lower()}",
        "responses": {200: {"description": "error 336101", "model": WrongMethodError}},
        "openapi_extra": {"parameters": [API_NAME, *QIANFAN_AUTH]},
    }


def unknown_route(method: str) -> dict[str, Any]:
    return {
        "summary": "any other path under /rpc/: error 3",
        "description": "Any method on a path under /rpc/ that is not a model route answers error 3.",
        "operation_id": f"unknown_route_{method.lower()}",
        "responses": {200: {"description": "error 3", "model": UnknownRouteError}},
        "openapi_extra": {"parameters": [
            {"name": "rest", "in": "path", "required": True, "description": "the rest of the path",
             "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"}}, *QIANFAN_AUTH]},
    }


def token(method: str) -> dict[str, Any]:
    parameters = [_param(name, "query", description) for name, description in (
        ("grant_type", "client_credentials"), ("client_id", "the app's API Key"),
        ("client_secret", "the app's Secret Key"))]
    extra: dict[str, Any] = {"parameters": parameters}
    if method == "POST":
        form = {"type": "object", "properties": {p["name"]: {"type": "string"} for p in parameters}}
        extra["requestBody"] = {"required": False, "content": {
            "application/x-www-form-urlencoded": {"schema": form},
            "application/json": {"schema": {}, "description": "ignored (the SDK sends {})"}}}
    return {
        "summary": "an access token from an API Key and Secret Key",
        "description": "Parameters come from the query string; a form body may supply missing ones. Errors use the "
                       "OAuth shape with an HTTP status.",
        "operation_id": f"token_{method.lower()}",
        "responses": {
            200: {"description": "the token", "model": Token},
            400: {"description": "invalid_request (a missing parameter) or unsupported_grant_type",
                  "model": OAuthError},
            401: {"description": "invalid_client: unknown API Key, or wrong Secret Key", "model": OAuthError},
        },
        "openapi_extra": extra,
    }


BCE_REQUEST_ID = {"X-Bce-Request-Id": {"required": True, "description": "this answer's id (also in the error body)",
                                       "schema": {"type": "string", "format": "uuid"}}}
BCE_ERROR_HEADERS = {**BCE_REQUEST_ID, **{name: {"required": True, "description": f"the error's {what}",
                                                 "schema": {"type": "string"}}
                                          for name, what in (("X-Bce-Error-Code", "code"),
                                                             ("X-Bce-Error-Message", "message"))}}


def bearer_token() -> dict[str, Any]:
    return {
        "summary": "a bearer token for an IAM-signed request",
        "description": "As Baidu's IAM answers the qianfan SDK in v2 mode: the request carries a bce-auth-v1 "
                       "signature of an app's IAM keys; the token it gets lives expireInSeconds. Errors use BCE's "
                       "shape with an HTTP status, the code and message also in X-Bce-Error-* headers.",
        "operation_id": "bce_bearer_token_get",
        "responses": {
            200: {"description": "the token", "model": BearerToken, "headers": BCE_REQUEST_ID},
            400: {"description": "InvalidParameterValue: expireInSeconds is not an integer in [300, 2592000]",
                  "model": BceInvalidParameterValue, "headers": BCE_ERROR_HEADERS},
            401: {"description": "AccessDenied: no signature, or a bad, expired or unknown one",
                  "model": BceAccessDenied, "headers": BCE_ERROR_HEADERS},
            413: {"description": "EntityTooLarge: the body is larger than max_body_bytes (refused unread)",
                  "model": BceEntityTooLarge, "headers": BCE_ERROR_HEADERS},
        },
        "openapi_extra": {"parameters": [
            {"name": "expireInSeconds", "in": "query", "required": False,
             "description": "the token's lifetime in seconds (default 1800)",
             "schema": {"type": "integer", "minimum": 300, "maximum": 2592000}},
            {"name": "Authorization", "in": "header", "required": True,
             "description": "an IAM signature of this request, bce-auth-v1/{access key}/...",
             "schema": {"type": "string"}},
        ]},
    }


# listed in the document whatever the routes refer to: each v1 stream event's data, the 413 answer's body
ALWAYS_DOCUMENTED = (CompletionChunk, OAuthError)
