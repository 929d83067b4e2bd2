"""The OpenAPI documentation of the OpenAI routes and Qianfan v2's chat route (api/qianfan_v1/openapi.py documents
the v1 routes; docs/api.md, "OpenAI routes and Qianfan v2", says the same in words).

As in api/openapi.py, the pydantic models only describe: the handlers' own validation (api/openai_v2/requests.py)
decides what is refused, with which status and message. Errors are HTTP statuses, each with the route's error
shape (api/http_errors.py). A stream's events are `data: <JSON chunk>`, the last one `data: [DONE]`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..fields import MAX_SEED, MAX_STOP
from .requests import (MAX_COMPLETION_LOGPROBS, MAX_N, MAX_TOP_LOGPROBS, OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS,
                              OPENAI_TEMPERATURE)
from ..openapi import RATE_HEADERS, Stop, Usage, bound, component, json_body, rule_field

# ---- request bodies ----------------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool | None = Field(None, description="one more frame before [DONE] with the usage")


class _OpenAIFields(BaseModel):
    """The sampling fields of both OpenAI routes (unknown fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="a published api_name the key's app may call")
    stream: bool | None = None
    stream_options: StreamOptions | None = Field(None, description="only with stream: true")
    temperature: float | None = Field(None, ge=bound(OPENAI_TEMPERATURE[0]), le=bound(OPENAI_TEMPERATURE[1]),
                                      description="0 is greedy; default: the service's")
    top_p: float | None = rule_field("top_p")
    n: int | None = Field(None, ge=1, le=MAX_N)
    stop: Stop | list[Stop] | None = Field(None, description=f"at most {MAX_STOP}")
    seed: int | None = Field(None, ge=0, lt=MAX_SEED)
    presence_penalty: float | None = rule_field("presence_penalty")
    frequency_penalty: float | None = rule_field("frequency_penalty")
    user: str | None = Field(None, description="accepted, not used")


class OpenAIMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class OpenAIChatBody(_OpenAIFields):
    messages: list[OpenAIMessage] = Field(min_length=1, description="system messages first, then user and "
                                                                    "assistant in any order")
    max_completion_tokens: int | None = rule_field("max_output_tokens")
    max_tokens: int | None = rule_field("max_output_tokens", "used when max_completion_tokens is not set")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="needs logprobs: true")


class OpenAICompletionBody(_OpenAIFields):
    prompt: str = Field(min_length=1, description="one prompt (or a list holding one)")
    max_tokens: int | None = rule_field("max_output_tokens", f"default {OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS}")
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool | None = None


class V2Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class V2ChatBody(BaseModel):
    """Qianfan v2 chat: OpenAI's body with Qianfan's ranges and turns (unknown fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[V2Message] = Field(min_length=1, description="an optional system message, then user, "
                                                                "assistant, ..., user")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = rule_field("temperature")
    top_p: float | None = rule_field("top_p")
    penalty_score: float | None = rule_field("penalty_score")
    max_completion_tokens: int | None = rule_field("max_output_tokens")
    stop: list[Stop] | None = Field(None, max_length=MAX_STOP)
    seed: int | None = Field(None, ge=0, lt=MAX_SEED)
    presence_penalty: float | None = rule_field("presence_penalty")
    frequency_penalty: float | None = rule_field("frequency_penalty")
    user: str | None = None

# ---- answers -----------------------------------------------------------------------------------------------


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


FinishReason = Literal["stop", "length"]


class ChatChoice(BaseModel):
    index: int = Field(ge=0)
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason | None
    flag: int | None = Field(None, description="Qianfan v2 only: 1 when the input matched the moderation list")
    ban_round: int | None = Field(None, description="Qianfan v2 only")


class ChatAnswer(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = Field(ge=0)
    delta: ChunkDelta
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason | None
    flag: int | None = None
    ban_round: int | None = None


class ChatChunk(BaseModel):
    """One frame of a chat stream; with stream_options.include_usage the frames carry `usage` (null but in the
    last, whose choices are empty)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = Field(ge=0)
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason | None


class CompletionAnswer(BaseModel):
    """A completion, and also each frame of a completions stream (then without usage but in the last frame
    under stream_options.include_usage)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class OpenAIErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: OpenAIErrorDetail


class V2ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    type: str


class V2Error(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: V2ErrorDetail
    id: str

# ---- per-route documentation -------------------------------------------------------------------------------


BEARER = [{"name": "Authorization", "in": "header", "required": False,
           "description": "Bearer <API key or bearer token>", "schema": {"type": "string"}}]
APPID = {"name": "appid", "in": "header", "required": False,
         "description": "Qianfan v2: the app the key belongs to (else 401)", "schema": {"type": "string"}}
RETRY_AFTER = {"Retry-After": {"description": "seconds until the limit that refused it frees (absent when waiting "
                                              "cannot help)", "schema": {"type": "integer", "minimum": 0}}}
STATUSES = {
    400: "a body that is not JSON, a field of the wrong type or out of range (the message names it)",
    401: "no key, or a malformed, unknown, revoked or expired one",
    403: "the key's app may not call this model",
    404: "no such model",
    413: "the body is larger than max_body_bytes (refused unread)",
    429: "a limit of the app (RPM, TPM, QPS, daily, total)",
    500: "internal error",
    503: "the engine is overloaded",
}


def _stream_event(chunk: type[BaseModel]) -> dict[str, Any]:
    """Each event's data: a JSON chunk, or the final `[DONE]`."""
    return {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        {"type": "string", "contentMediaType": "application/json", "contentSchema": component(chunk)},
    ]}}}


def _errors(model: type[BaseModel]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for status, what in STATUSES.items():
        out[status] = {"description": what, "model": model}
        if status == 429:
            out[status]["headers"] = {**RETRY_AFTER, **RATE_HEADERS}
    return out


def openai_call(chat: bool) -> dict[str, Any]:
    answer, chunk = (ChatAnswer, ChatChunk) if chat else (CompletionAnswer, CompletionAnswer)
    return {
        "summary": "OpenAI chat completion" if chat else "OpenAI completion",
        "description": "OpenAI's protocol (docs/api.md, \"OpenAI routes and Qianfan v2\"); errors with HTTP "
                       "statuses in OpenAI's shape.",
        "operation_id": "openai_chat_post" if chat else "openai_completion_post",
        "responses": {200: {"description": "the answer, or (stream: true) text/event-stream frames ending with "
                                           "data: [DONE]", "model": answer,
                            "content": {"text/event-stream": {"schema": _stream_event(chunk)}},
                            "headers": RATE_HEADERS},
                      **_errors(OpenAIError)},
        "openapi_extra": {"parameters": BEARER, **json_body(OpenAIChatBody if chat else OpenAICompletionBody)},
    }


def v2_chat() -> dict[str, Any]:
    return {
        "summary": "Qianfan v2 chat completion",
        "description": "Qianfan's v2 protocol (docs/api.md, \"OpenAI routes and Qianfan v2\"); errors with HTTP "
                       "statuses in Qianfan v2's shape.",
        "operation_id": "v2_chat_post",
        "responses": {200: {"description": "the answer, or (stream: true) text/event-stream frames ending with "
                                           "data: [DONE]", "model": ChatAnswer,
                            "content": {"text/event-stream": {"schema": _stream_event(ChatChunk)}},
                            "headers": RATE_HEADERS},
                      **_errors(V2Error)},
        "openapi_extra": {"parameters": [*BEARER, APPID], **json_body(V2ChatBody)},
    }


def models(one: bool) -> dict[str, Any]:
    return {
        "summary": "one model the key's app may call" if one else "the models the key's app may call",
        "operation_id": "openai_model_get" if one else "openai_models_get",
        "responses": {200: {"description": "the model" if one else "the list", "model": Model if one else ModelList},
                      401: {"description": STATUSES[401], "model": OpenAIError},
                      **({404: {"description": "no such model, or the app may not call it", "model": OpenAIError}}
                         if one else {})},
        "openapi_extra": {"parameters": BEARER},
    }

