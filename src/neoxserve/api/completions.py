"""The completion and chat handlers: authenticate, look up the service, validate, admit, generate, answer."""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ..config import Settings
from ..engine.client import DeltaStream, EngineClient
from ..engine.errors import EngineOverloaded, QueueTimeout, RequestRejected
from ..engine.outputs import Delta
from ..engine.sampling_params import SamplingParams
from ..platform import Platform
from ..platform.errors import QuotaError
from .call_ledger import CallLedger
from .errors import INTERNAL, OVERLOADED, ApiError, compact, error_body, error_response, new_id, out_of_range
from .inputs import InputPreparer
from .metrics import Metrics
from .moderation import Moderator
from .params import max_new_tokens, sampling_params
from .platform_calls import authenticate, call
from .responses import ClientGone, StreamResponse, unless_disconnected
from .streaming import Chunk, chunks, collect, frame
from .validation import CompletionRequest

log = logging.getLogger("neoxserve.api")


def engine_error(e: BaseException, request_id: str) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, (EngineOverloaded, QueueTimeout)):
        return ApiError(OVERLOADED)
    if isinstance(e, RequestRejected):
        return out_of_range(str(e) or "request rejected by the engine")
    log.error("request %s failed: %s", request_id, e, exc_info=e)
    return ApiError(INTERNAL)


async def _no_output(prompt_tokens: int) -> AsyncGenerator[Delta, None]:
    """What a flagged input gets under moderation_action "empty": no generation at all."""
    yield Delta("", "", [], prompt_tokens, 0, finished=True, finish_reason="stop")


class Completions:
    def __init__(self, settings: Settings, engine: EngineClient, platform: Platform, moderator: Moderator,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.platform = platform
        self.metrics = metrics
        self.inputs = InputPreparer(engine.tokenizer, engine.model_info, moderator)

    def _body(self, rid: str, object_: str, chunk: Chunk, is_safe: bool, sentence_id: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": rid, "object": object_, "created": int(time.time())}
        if sentence_id is not None:
            body.update(sentence_id=sentence_id, is_end=chunk.is_end)
        body.update(result=chunk.text, is_safe=int(is_safe), usage={
            "prompt_tokens": chunk.prompt_tokens,
            "completion_tokens": chunk.tokens,
            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
        })
        return body

    async def _prepare(self, request: Request, api_name: str, chat: bool, rid: str, ledger: CallLedger) -> _Call:
        """Authenticate, find the service, check permission, validate the body, then admit it: count it against
        the app's limits, reserving prompt + maximum output tokens of its TPM budget."""
        app = await authenticate(self.platform, request)
        service = await call(self.platform.get_service, api_name)
        ledger.identified(app, service)
        await call(self.platform.check_permission, app, service)
        info = self.engine.model_info
        if chat and not info.is_chat:
            raise out_of_range(f"the chat route needs a chat model; the model of {api_name} is a completion "
                               f"model: use /completions/{api_name}")
        prepared = await self.inputs.prepare(await request.body(), chat)
        req = prepared.req
        service_max = service.max_output_tokens or self.settings.default_max_output_tokens
        max_tokens = max_new_tokens(req, service_max, prepared.prompt_tokens, info)
        # max_new_tokens refused any prompt too long to have been tokenized
        prompt_ids = prepared.prompt_ids
        assert prompt_ids is not None
        params = sampling_params(req, service, max_tokens)
        is_safe = prepared.is_safe
        if not is_safe:
            log.info("request %s: input flagged by moderation (action %s)", rid, self.settings.moderation_action)
        admission = await call(self.platform.admit, app, service, len(prompt_ids) + max_tokens)
        ledger.admitted(admission, len(prompt_ids))
        return _Call(req, prompt_ids, params, is_safe, admission.rate_limit_headers())

    async def handle(self, request: Request, api_name: str, chat: bool) -> Response:
        route = "chat" if chat else "completions"
        started = time.monotonic()
        rid = new_id()
        headers: dict[str, str] = {}
        ledger = CallLedger(self.platform)
        try:
            c = await self._prepare(request, api_name, chat, rid, ledger)
            headers = c.headers
            deltas: DeltaStream
            if not c.is_safe and self.settings.moderation_action == "empty":
                deltas = _no_output(len(c.prompt_ids))
            else:
                deltas = self.engine.generate(rid, c.prompt_ids, c.params)
            object_ = "chat.completion" if chat else "completion"
            if c.req.stream:
                return await self._stream(request, rid, object_, deltas, c.is_safe, headers, ledger, route, started)
            try:
                chunk = await unless_disconnected(collect(deltas), request.receive)
            except ClientGone:
                await ledger.ended_early(0)
                self.metrics.observe(route, 0, time.monotonic() - started)
                return Response(status_code=204)
            await ledger.succeeded(chunk.completion_tokens)
            self.metrics.observe(route, 0, time.monotonic() - started, chunk.completion_tokens)
            return Response(compact(self._body(rid, object_, chunk, c.is_safe, None)),
                            media_type="application/json", headers=headers)
        except Exception as e:
            error = engine_error(e, rid)
            await ledger.failed()
            self.metrics.observe(route, error.code, time.monotonic() - started)
            return error_response(error, rid, {**headers, **quota_headers(e)})

    async def _stream(self, request: Request, rid: str, object_: str, deltas: DeltaStream,
                      is_safe: bool, headers: dict[str, str], ledger: CallLedger, route: str,
                      started: float) -> Response:
        parts = chunks(deltas, self.settings.stream_chunk_tokens)
        try:
            # An error before the first chunk is answered like a non-stream error, so wait for it here.
            first = await unless_disconnected(parts.__anext__(), request.receive)
        except ClientGone:
            await parts.aclose()
            await ledger.ended_early(0)
            self.metrics.observe(route, 0, time.monotonic() - started)
            return Response(status_code=204)
        except BaseException:
            await parts.aclose()
            raise

        chunk, code, complete, finished = first, 0, False, False

        async def finish() -> None:
            """Close the generation and record the call, once: from the end of `frames`, or from the response
            if the client left before `frames` started (then its body never runs)."""
            nonlocal finished
            if finished:
                return
            finished = True
            await parts.aclose()
            # `chunk` is the last one sent: its tokens reached the client
            if complete:
                await ledger.succeeded(chunk.completion_tokens)
            else:
                await ledger.ended_early(chunk.completion_tokens)
            self.metrics.observe(route, code, time.monotonic() - started, chunk.completion_tokens)

        async def frames() -> AsyncGenerator[bytes, None]:
            nonlocal chunk, code, complete
            sentence_id = 0
            try:
                while True:
                    yield frame(self._body(rid, object_, chunk, is_safe, sentence_id))
                    if chunk.is_end:
                        complete = True
                        break
                    chunk = await parts.__anext__()
                    sentence_id += 1
            except Exception as e:
                error = engine_error(e, rid)
                code = error.code
                yield (compact(error_body(error, rid)) + "\n").encode()
            finally:
                await finish()

        return StreamResponse(frames(), headers=headers, on_close=finish)


def quota_headers(e: BaseException) -> dict[str, str]:
    """The X-Ratelimit-* headers a refusal by the app's limits carries."""
    cause = e.__cause__
    return cause.headers if isinstance(cause, QuotaError) else {}


@dataclass
class _Call:
    """An admitted request, ready for the engine."""

    req: CompletionRequest
    prompt_ids: list[int]
    params: SamplingParams
    is_safe: bool
    headers: dict[str, str]
