"""The OpenAI routes (`GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`) and Qianfan v2's
`POST /v2/chat/completions` (docs/api.md, "OpenAI routes" and "Qianfan v2").

They authenticate with `Authorization: Bearer` (an API key or an IAM bearer token), read the service from the
body's `model`, answer in OpenAI's shape and report errors with HTTP statuses (api/http_errors.py). Everything in
between (admission against the app's limits, the engine call, settlement, usage, metrics) is the handler every
model route runs (api/model_call.py): an app's quotas and usage are the same whichever route a request came
through.
"""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ...engine.client import DeltaStream, PromptTokenizer
from ...platform import App, Platform
from ...platform.errors import API_NAME_NOT_EXIST, MESSAGES
from .. import fields
from ..body import parse_json
from ..errors import ApiError
from ..fields import Body
from ..http_errors import openai_error_body, openai_error_response, v2_error_body, v2_error_response
from ..inputs import InputPreparer
from ..metrics import Metrics
from ..model_call import Addressed, Admitted, ModelCall, ModelRoute
from .answers import Answer, Kind, Piece, Renderer, error_frames, pieces, whole_answer
from .requests import (OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS, model_name, openai_chat, openai_completion,
                              qianfan_v2_chat)
from ..platform_calls import authenticate_bearer, platform_call
from .. import route_table
from ..completion_request import CompletionRequest


@dataclass(frozen=True)
class RouteShape:
    """What differs between the OpenAI routes and Qianfan v2: the body parser, the answer's id, the error shape,
    the extra fields of a choice."""

    label: str                                     # the metrics label (api/route_table.py)
    kind: Kind
    parse: Callable[[Body], CompletionRequest]
    id_prefix: str                                 # before the response id's 10 characters
    qianfan: bool                                  # Qianfan v2 (its error shape, flag and ban_round) or OpenAI
    completion_route: str | None = None            # where a completion model's callers go instead (chat only;
                                                   # a path template of api/route_table.py)
    default_max_tokens: int | None = None          # when the request sets none (else the service's limit)

    def response_id(self, rid: str) -> str:
        return self.id_prefix + rid.removeprefix("as-")

    def error_response(self, error: ApiError, rid: str) -> Response:
        return v2_error_response(error, rid) if self.qianfan else openai_error_response(error)

    def error_body(self, error: ApiError, rid: str) -> dict[str, object]:
        return v2_error_body(error, rid) if self.qianfan else openai_error_body(error)


OPENAI_CHAT = RouteShape(route_table.OPENAI_CHAT.label, "chat", openai_chat, "chatcmpl-", qianfan=False,
                         completion_route=route_table.OPENAI_COMPLETION.path)
OPENAI_COMPLETION = RouteShape(route_table.OPENAI_COMPLETION.label, "completion", openai_completion, "cmpl-",
                               qianfan=False, default_max_tokens=OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS)
QIANFAN_V2_CHAT = RouteShape(route_table.V2_CHAT.label, "chat", qianfan_v2_chat, "as-", qianfan=True,
                             completion_route=route_table.V1_COMPLETION.path)


def _safety(is_safe: bool) -> dict[str, Any]:
    """Qianfan v2's per-choice moderation fields: flag 0 is safe, 1 a flagged input; ban_round -1 is the current
    question."""
    return {"flag": 0 if is_safe else 1, "ban_round": -1}


class OpenAIRendering:
    """An answer in the OpenAI (or Qianfan v2) shape: whole, or as frames ending with [DONE]."""

    def __init__(self, renderer: Renderer, n: int, error_body: Callable[[ApiError], dict[str, object]]) -> None:
        self.renderer = renderer
        self.n = n
        self.error_body = error_body

    def items(self, deltas: DeltaStream) -> AsyncGenerator[Piece, None]:
        return pieces(deltas, self.n)

    def frames(self, piece: Piece) -> bytes:
        return self.renderer.frames(piece)

    def error_frames(self, error: ApiError) -> bytes:
        return error_frames(self.error_body(error))

    async def whole(self, deltas: DeltaStream) -> Answer:
        return await whole_answer(deltas, self.n)

    def body(self, answer: Answer) -> dict[str, Any]:
        return self.renderer.whole(answer)


class OpenAIModelRoute(ModelRoute[Piece, Answer]):
    """A route of `shape`: the body names the service (`model`), parsed as JSON once, in the inputs pool."""

    def __init__(self, shape: RouteShape, inputs: InputPreparer, tokenizer: PromptTokenizer) -> None:
        self.shape = shape
        self.label = shape.label
        self.inputs = inputs
        self.tokenizer = tokenizer

    async def authenticate(self, platform: Platform, request: Request) -> App:
        return await authenticate_bearer(platform, request)

    async def address(self, request: Request, raw: bytes) -> Addressed:
        # the body is read before the service: `model` names it
        body = fields.json_object(await self.inputs.run(len(raw), lambda: parse_json(raw)))
        model = model_name(body)
        shape = self.shape
        completion_route = shape.completion_route
        return Addressed(model, lambda: shape.parse(body),
                         completion_route=completion_route and completion_route.format(api_name=model),
                         default_max_tokens=shape.default_max_tokens)

    def rendering(self, call: ModelCall, addressed: Addressed, admitted: Admitted) -> OpenAIRendering:
        req, shape, tokenizer = admitted.req, self.shape, self.tokenizer
        renderer = Renderer(shape.kind, shape.response_id(call.rid), addressed.api_name,
                            lambda token_id: tokenizer.token_bytes(token_id, skip_special_tokens=False),
                            req.include_usage, _safety(admitted.is_safe) if shape.qianfan else {},
                            echo=req.prompt if req.echo else "", prompt_ids=admitted.prompt_ids,
                            logprobs=req.logprobs is not None)
        return OpenAIRendering(renderer, req.n, lambda error: shape.error_body(error, call.rid))

    def error_response(self, error: ApiError, response_id: str) -> Response:
        return self.shape.error_response(error, response_id)


class ModelList:
    """GET /v1/models and /v1/models/{model}."""

    def __init__(self, platform: Platform, metrics: Metrics) -> None:
        self.platform = platform
        self.metrics = metrics

    async def models(self, request: Request, model: str | None = None) -> Response:
        """The services the key's app may call, as OpenAI models (or the one named `model`)."""
        started = time.monotonic()
        try:
            app = await authenticate_bearer(self.platform, request)
            services = await platform_call(self.platform.list_services)
            data = [{"id": s.api_name, "object": "model", "created": int(s.created_at), "owned_by": "neoxserve"}
                    for s in services if s.api_name in app.services]
            answer: dict[str, Any] = {"object": "list", "data": data}
            if model is not None:
                found = [entry for entry in data if entry["id"] == model]
                if not found:
                    raise ApiError(API_NAME_NOT_EXIST, MESSAGES[API_NAME_NOT_EXIST], param="model",
                                   detail=f"the model {model!r} does not exist or this key's app may not call it")
                answer = found[0]
            outcome = 0
            response: Response = JSONResponse(answer)
        except ApiError as e:
            outcome = e.code
            response = openai_error_response(e)
        self.metrics.observe(route_table.OPENAI_MODELS.label, outcome, time.monotonic() - started)
        return response
