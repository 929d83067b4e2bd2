"""One model call, whatever route it came through (v1, Qianfan v2, OpenAI): the handler every model route runs.

`ModelCallRunner.answer` is that handler. A route (a `ModelRoute`) brings only what differs: how it authenticates
the app, which service its request addresses and its body parser (`address`), how it renders the answer
(`rendering`) and its error shape. The steps between are the same for all: `ModelCall.admit` finds the service,
checks the app's permission, parses, tokenizes and runs moderation in a worker thread (api/inputs.py), fits the
output to the service and the context, builds the engine's parameters and admits the request against the app's
limits (reserving prompt + maximum output tokens of its TPM budget). `ModelCall.generate` starts the engine, and
the answer is rendered whole or as stream frames (`ModelCall.stream`). However the call ends, its CallLedger
records it once in the app's quotas and usage, and the metrics count it under the route's label.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response

from ..config import Settings
from ..engine.client import DeltaStream, EngineClient
from ..engine.errors import EngineDead, EngineOverloaded, QueueTimeout, RequestRejected
from ..engine.outputs import Delta
from ..engine.sampling_params import SamplingParams
from ..platform import App, Platform
from .call_ledger import CallLedger
from .errors import INTERNAL, OVERLOADED, ApiError, compact, new_id, out_of_range
from .metrics import Metrics
from .inputs import InputPreparer
from .structured import Grammars
from .moderation import Moderator
from .context_fit import max_new_tokens
from .params import sampling_params
from .platform_calls import platform_call, platform_check
from .responses import ClientGone, StreamResponse, unless_disconnected
from .completion_request import CompletionRequest

log = logging.getLogger("neoxserve.api")

T = TypeVar("T")
# What the HTTP-status routes' 503 for an overloaded engine says in Retry-After: a queue drains in about a second
# (v1 answers at HTTP 200, where the SDK retries 336100 by itself)
OVERLOADED_RETRY_AFTER = 1


def engine_error(e: BaseException, request_id: str) -> ApiError:
    """The ApiError an exception of a model call stands for; anything unexpected is logged as the bug it is and
    becomes 336000."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, (EngineOverloaded, QueueTimeout)):
        return ApiError(OVERLOADED, retry_after=OVERLOADED_RETRY_AFTER)
    if isinstance(e, RequestRejected):
        return out_of_range(str(e) or "request rejected by the engine")
    if isinstance(e, EngineDead):   # the engine client logged the death once; /ready says why it is down
        return ApiError(INTERNAL)
    log.error("request %s failed: %s", request_id, e, exc_info=e)
    return ApiError(INTERNAL)


async def _no_output(prompt_tokens: int) -> AsyncGenerator[Delta, None]:
    """What a flagged input gets under moderation_action "empty": no generation at all."""
    yield Delta("", "", [], prompt_tokens, 0, finished=True, finish_reason="stop")


@dataclass(frozen=True)
class Addressed:
    """What a request addresses, as its route reads it: the service's api_name and the body's parser (run in a
    worker thread). `completion_route` marks a chat route: where a completion model's callers go instead (the
    refusal's message says so); `default_max_tokens` is the output limit when the request sets none (else the
    service's)."""

    api_name: str
    parse: Callable[[], CompletionRequest]
    completion_route: str | None = None
    default_max_tokens: int | None = None


@dataclass
class Admitted:
    """An admitted request, ready for the engine."""

    req: CompletionRequest
    prompt_ids: list[int]
    params: SamplingParams
    is_safe: bool


class StreamItem(Protocol):
    """What a route streams: each item is rendered as frames once it is ready."""

    @property
    def completion_tokens(self) -> int: ...   # cumulative: what the client has received once this item is sent

    @property
    def is_end(self) -> bool: ...


class WholeAnswer(Protocol):
    """What a route answers a non-stream request with, before it is rendered."""

    @property
    def completion_tokens(self) -> int: ...


Item = TypeVar("Item", bound=StreamItem)
Whole = TypeVar("Whole", bound=WholeAnswer)


class Rendering(Protocol[Item, Whole]):
    """One call's answer in its route's shape: the stream's items and their frames, or the whole answer and its
    JSON body."""

    def items(self, deltas: DeltaStream) -> AsyncGenerator[Item, None]: ...

    def frames(self, item: Item) -> bytes: ...

    def error_frames(self, error: ApiError) -> bytes:
        """The frames that end a stream an error cut short."""
        ...

    async def whole(self, deltas: DeltaStream) -> Whole: ...

    def body(self, whole: Whole) -> dict[str, Any]: ...


class ModelRoute(ABC, Generic[Item, Whole]):
    """What a model route brings to the handler every model route runs (`ModelCallRunner.answer`)."""

    label: str   # its metrics label (api/route_table.py)

    @abstractmethod
    async def authenticate(self, platform: Platform, request: Request) -> App: ...

    @abstractmethod
    async def address(self, request: Request, raw: bytes) -> Addressed:
        """The service `raw` (the request's body) addresses, and the parser of the body."""

    @abstractmethod
    def rendering(self, call: ModelCall, addressed: Addressed, admitted: Admitted) -> Rendering[Item, Whole]: ...

    @abstractmethod
    def error_response(self, error: ApiError, response_id: str) -> Response:
        """The answer to a call that failed before any output (its headers are in `error.headers`)."""


class ModelCallRunner:
    """What every model call uses; `answer` runs one for a route, `start` begins one."""

    def __init__(self, settings: Settings, engine: EngineClient, platform: Platform, moderator: Moderator,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.platform = platform
        self.metrics = metrics
        self.inputs = InputPreparer(engine.tokenizer, engine.model_info, moderator)
        self.grammars = Grammars(engine.model_info, settings.structured_output_compile_timeout)

    def start(self, label: str) -> ModelCall:
        """A new call; `label` is its metrics label."""
        return ModelCall(self, label)

    async def answer(self, route: ModelRoute[Item, Whole], request: Request) -> Response:
        """The handler of every model route: authenticate, read the body, admit, generate, answer whole or as a
        stream, record."""
        call = self.start(route.label)
        try:
            app = await route.authenticate(self.platform, request)
            raw = await request.body()
            addressed = await route.address(request, raw)
            admitted = await call.admit(app, addressed, len(raw))
            rendering = route.rendering(call, addressed, admitted)
            deltas = call.generate(admitted)
            if admitted.req.stream:
                return await call.stream(request, rendering.items(deltas), rendering.frames, rendering.error_frames)
            whole = await call.unless_gone(request, rendering.whole(deltas))
            if whole is None:
                return Response(status_code=204)
            await call.succeeded(whole.completion_tokens)
            return Response(compact(rendering.body(whole)), media_type="application/json", headers=call.headers)
        except Exception as e:
            error = await call.failed(e)
            return route.error_response(error, call.rid)


class ModelCall:
    def __init__(self, runner: ModelCallRunner, label: str) -> None:
        self.runner = runner
        self.label = label
        self.rid = new_id()                       # the response id, also the engine's request id
        self.started = time.monotonic()
        self.ledger = CallLedger(runner.platform)
        self.headers: dict[str, str] = {}         # the answer's X-Ratelimit-* headers, once admitted

    async def admit(self, app: App, addressed: Addressed, body_size: int) -> Admitted:
        """Find the service, check the app's permission, then, off the event loop (api/inputs.py), parse the
        body (`body_size` bytes), tokenize and run moderation; fit the output, build the engine's parameters, and
        admit: count the call against the app's limits, reserving prompt + maximum output tokens of its TPM
        budget."""
        runner = self.runner
        api_name, completion_route = addressed.api_name, addressed.completion_route
        try:
            service = await platform_call(runner.platform.get_service, api_name)
        except ApiError as e:
            e.detail, e.param = f"the model {api_name!r} does not exist (no service is published as it)", "model"
            raise
        self.ledger.identified(app, service)
        try:
            platform_check(runner.platform.check_permission, app, service)
        except ApiError as e:
            e.detail, e.param = f"this app ({app.name}) may not call the model {api_name!r}", "model"
            raise
        info = runner.engine.model_info
        if completion_route is not None and not info.is_chat:
            raise out_of_range(f"the chat route needs a chat model; the model of {api_name} is a completion "
                               f"model: use {completion_route}", param="model")
        inputs = await runner.inputs.prepare(body_size, addressed.parse)
        req = inputs.req
        service_max = service.max_output_tokens or runner.settings.default_max_output_tokens
        max_tokens = max_new_tokens(req, service_max, inputs.prompt_tokens, info, addressed.default_max_tokens)
        # max_new_tokens refused any prompt too long to have been tokenized
        prompt_ids = inputs.prompt_ids
        assert prompt_ids is not None
        grammar = None
        if req.structured is not None:
            grammar = await runner.grammars.compile(req.structured, req.structured_param)
        params = sampling_params(req, service, max_tokens, grammar)
        if not inputs.is_safe:
            log.info("request %s: input flagged by moderation (action %s)", self.rid,
                     runner.settings.moderation_action)
        # every sample may write max_tokens; the prompt is read once
        admission = await platform_call(runner.platform.admit, app, service, len(prompt_ids) + req.n * max_tokens)
        self.ledger.admitted(admission, len(prompt_ids))
        self.headers = admission.rate_limit_headers()
        return Admitted(req, prompt_ids, params, inputs.is_safe)

    def generate(self, admitted: Admitted) -> DeltaStream:
        if not admitted.is_safe and self.runner.settings.moderation_action == "empty":
            return _no_output(len(admitted.prompt_ids))
        return self.runner.engine.generate(self.rid, admitted.prompt_ids, admitted.params)

    def _observe(self, outcome: int, completion_tokens: int = 0) -> None:
        self.runner.metrics.observe(self.label, outcome, time.monotonic() - self.started, completion_tokens)

    async def succeeded(self, completion_tokens: int) -> None:
        """Answered in full."""
        await self.ledger.succeeded(completion_tokens)
        self._observe(0, completion_tokens)

    async def failed(self, e: BaseException) -> ApiError:
        """The call ends in an error before any output reached the client: record it, and return the error to
        answer with (its headers include the answer's X-Ratelimit-* headers)."""
        error = engine_error(e, self.rid)
        await self.ledger.failed()
        self._observe(error.code)
        error.headers = {**self.headers, **error.headers}
        return error

    async def unless_gone(self, request: Request, work: Awaitable[T]) -> T | None:
        """The result of `work` (the whole generation), or None when the client left first (recorded: the
        route answers 204 to nobody)."""
        try:
            return await unless_disconnected(work, request.receive)
        except ClientGone:
            await self.ledger.ended_early(0)
            self._observe(0)
            return None

    async def stream(self, request: Request, items: AsyncGenerator[Item, None], render: Callable[[Item], bytes],
                     error_frames: Callable[[ApiError], bytes]) -> Response:
        """A text/event-stream answer: each item rendered as it comes. The first item is awaited before the
        response starts, so an error before any output is raised here (the route answers it like a non-stream
        error). An error after output ends the stream with `error_frames`. `items` is closed however the stream
        ends (which aborts the generation) and the call is recorded once, with the tokens the client received."""
        try:
            first = await unless_disconnected(items.__anext__(), request.receive)
        except ClientGone:
            await items.aclose()
            await self.ledger.ended_early(0)
            self._observe(0)
            return Response(status_code=204)
        except BaseException:
            await items.aclose()
            raise

        # `pending` is the item whose frames are being written; `delivered` the last one handed to the server
        pending, delivered, code, finished = first, None, 0, False

        def sent() -> None:
            nonlocal delivered
            if code == 0:            # not the error frames
                delivered = pending

        async def finish() -> None:
            """Close the generation and record the call, once, with the tokens of the last item the client was
            sent: answered in full if that item ended the generation."""
            nonlocal finished
            if finished:
                return
            finished = True
            await items.aclose()
            tokens = delivered.completion_tokens if delivered is not None else 0
            if code == 0 and delivered is not None and delivered.is_end:
                await self.ledger.succeeded(tokens)
            else:
                await self.ledger.ended_early(tokens)
            self._observe(code, tokens)

        async def frames() -> AsyncGenerator[bytes, None]:
            nonlocal pending, code
            try:
                while True:
                    yield render(pending)
                    if pending.is_end:
                        return
                    pending = await items.__anext__()
            except Exception as e:
                error = engine_error(e, self.rid)
                code = error.code
                yield error_frames(error)

        return StreamResponse(frames(), headers=self.headers, on_sent=sent, on_close=finish)
