"""The v1 completion and chat handlers (Qianfan's `/rpc/2.0/ai_custom/v1/wenxinworkshop/...` routes): business
errors at HTTP 200, sentence chunks as stream frames (docs/api.md). The steps every route shares are
api/model_call.py."""
from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from .errors import ApiError, compact, error_body, error_response
from .model_call import Call, ModelCalls
from .platform_calls import authenticate
from .streaming import Chunk, chunks, collect, frame
from .body import parse_json
from .routes import V1_CHAT, V1_COMPLETION, V1_PREFIX
from .validation import parse_request


class Completions:
    def __init__(self, calls: ModelCalls) -> None:
        self.calls = calls

    @staticmethod
    def _body(c: Call, object_: str, chunk: Chunk, is_safe: bool, sentence_id: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": c.rid, "object": object_, "created": int(time.time())}
        if sentence_id is not None:
            body.update(sentence_id=sentence_id, is_end=chunk.is_end)
        body.update(result=chunk.text, is_safe=int(is_safe), usage={
            "prompt_tokens": chunk.prompt_tokens,
            "completion_tokens": chunk.tokens,
            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
        })
        return body

    async def handle(self, request: Request, api_name: str, chat: bool) -> Response:
        c = self.calls.start((V1_CHAT if chat else V1_COMPLETION).label)
        try:
            app = await authenticate(self.calls.platform, request)
            raw = await request.body()
            prepared = await c.prepare(app, api_name, len(raw), lambda: parse_request(parse_json(raw), chat),
                                       completion_route=V1_COMPLETION.path.removeprefix(V1_PREFIX).format(api_name=api_name)
                                       if chat else None)
            deltas = c.generate(prepared)
            object_ = "chat.completion" if chat else "completion"
            is_safe = prepared.is_safe
            if prepared.req.stream:
                sentence_ids = iter(range(1 << 62))

                def render(chunk: Chunk) -> bytes:
                    return frame(self._body(c, object_, chunk, is_safe, next(sentence_ids)))

                def error_line(error: ApiError) -> bytes:
                    return (compact(error_body(error, c.rid)) + "\n").encode()

                return await c.stream(request, chunks(deltas, self.calls.settings.stream_chunk_tokens), render,
                                      error_line)
            chunk = await c.collect(request, collect(deltas))
            if chunk is None:
                return Response(status_code=204)
            await c.succeeded(chunk.completion_tokens)
            return Response(compact(self._body(c, object_, chunk, is_safe, None)), media_type="application/json",
                            headers=c.headers)
        except Exception as e:
            error = await c.failed(e)
            return error_response(error, c.rid, error.headers)
