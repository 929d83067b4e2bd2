"""The v1 completion and chat routes (Qianfan's `/rpc/2.0/ai_custom/v1/wenxinworkshop/...`): business errors at
HTTP 200, sentence chunks as stream frames (docs/api.md). The handler they run, with the steps every model route
shares, is api/model_call.py's; here are only what v1 does its own way."""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ...engine.client import DeltaStream
from ...platform import App, Platform
from ..body import parse_json
from ..errors import ApiError, compact, error_body, error_response
from ..model_call import Addressed, Admitted, ModelCall, ModelRoute
from ..platform_calls import authenticate
from ..route_table import V1_CHAT, V1_COMPLETION, V1_PREFIX
from .requests import parse_request
from .streaming import Chunk, chunks, frame, whole_chunk


class V1Rendering:
    """A v1 answer: the whole text as one body, or a stream of sentence chunks, each one frame."""

    def __init__(self, response_id: str, object_: str, is_safe: bool, stream_chunk_tokens: int) -> None:
        self.response_id = response_id
        self.object = object_
        self.is_safe = is_safe
        self.stream_chunk_tokens = stream_chunk_tokens
        self.sentence_ids = iter(range(1 << 62))

    def _body(self, chunk: Chunk, sentence_id: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.response_id, "object": self.object, "created": int(time.time())}
        if sentence_id is not None:
            body.update(sentence_id=sentence_id, is_end=chunk.is_end)
        body.update(result=chunk.text, is_safe=int(self.is_safe), usage={
            "prompt_tokens": chunk.prompt_tokens,
            "completion_tokens": chunk.tokens,
            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
        })
        return body

    def items(self, deltas: DeltaStream) -> AsyncGenerator[Chunk, None]:
        return chunks(deltas, self.stream_chunk_tokens)

    def frames(self, chunk: Chunk) -> bytes:
        return frame(self._body(chunk, next(self.sentence_ids)))

    def error_frames(self, error: ApiError) -> bytes:
        """A bare JSON error line."""
        return (compact(error_body(error, self.response_id)) + "\n").encode()

    async def whole(self, deltas: DeltaStream) -> Chunk:
        return await whole_chunk(deltas)

    def body(self, chunk: Chunk) -> dict[str, Any]:
        return self._body(chunk, None)


class V1ModelRoute(ModelRoute[Chunk, Chunk]):
    """POST .../completions/{api_name} (`chat` False) or .../chat/{api_name}."""

    def __init__(self, chat: bool, stream_chunk_tokens: int) -> None:
        self.chat = chat
        self.label = (V1_CHAT if chat else V1_COMPLETION).label
        self.stream_chunk_tokens = stream_chunk_tokens

    async def authenticate(self, platform: Platform, request: Request) -> App:
        return await authenticate(platform, request)

    async def address(self, request: Request, raw: bytes) -> Addressed:
        api_name: str = request.path_params["api_name"]
        chat = self.chat
        return Addressed(api_name, lambda: parse_request(parse_json(raw), chat),
                         completion_route=V1_COMPLETION.path.removeprefix(V1_PREFIX).format(api_name=api_name)
                         if chat else None)

    def rendering(self, call: ModelCall, addressed: Addressed, admitted: Admitted) -> V1Rendering:
        return V1Rendering(call.rid, "chat.completion" if self.chat else "completion", admitted.is_safe,
                           self.stream_chunk_tokens)

    def error_response(self, error: ApiError, response_id: str) -> Response:
        return error_response(error, response_id, error.headers)
