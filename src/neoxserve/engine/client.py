"""AsyncEngineClient: the HTTP process's handle on the engine process (the messages are in engine/protocol.py).

Threads in the HTTP process: a reader (engine -> per-request asyncio queues, one loop callback per engine
message), a sender (so a full pipe never blocks the event loop), and a watchdog on the process sentinel. If the
engine process dies, every pending request fails with EngineDead at once and `is_alive()` turns false; one
AsyncEngineClient never comes back (engine/supervisor.py's EngineSupervisor starts a new one).

Importing this module does not import torch: only the spawned engine process does (it runs engine/worker/, which
nothing in the HTTP process imports; engine/spawn.py starts it); this side speaks the protocol and loads the
tokenizer.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Protocol

from neoxserve.engine.config import EngineConfig
from neoxserve.engine.errors import (EngineDead, EngineError, EngineInternalError, EngineOverloaded, QueueTimeout,
                                     RequestRejected)
from neoxserve.engine.outputs import Delta, Failure
from neoxserve.engine.protocol import (AbortRequest, Ack, AckError, AddRequest, ClientMessage, ModelInfo, Output,
                                       ProtocolError, Shutdown)
from neoxserve.engine.readiness import EngineState, Readiness
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.spawn import exit_reason, spawn_engine, stop_process
from neoxserve.engine.stats import StatsSnapshot
from neoxserve.model.tokenizer import Tokenizer, TooManyTokens as TooManyTokens  # re-exported for the API

log = logging.getLogger(__name__)

_ACK_ERRORS: dict[AckError, type[EngineError]] = {
    AckError.OVERLOADED: EngineOverloaded,
    AckError.REJECTED: RequestRejected,
    AckError.INTERNAL: EngineInternalError,
}
_FAILURE_ERRORS: dict[Failure, type[EngineError]] = {
    Failure.QUEUE_TIMEOUT: QueueTimeout,
    Failure.STEP_FAILED: EngineInternalError,
}


def failure_error(delta: Delta) -> EngineError | None:
    """The exception a finished delta stands for (finish_reason "error"), or None. The one place a failed
    generation becomes an exception."""
    if delta.failure is None:
        return None
    return _FAILURE_ERRORS[delta.failure](delta.error or delta.failure.value)


class PromptTokenizer(Protocol):
    """What the HTTP process needs of a tokenizer (model/tokenizer.py's Tokenizer has it). Both encoders raise
    TooManyTokens, counted without building the ids, when the text has more than `max_tokens` tokens."""

    @property
    def max_chars_per_token(self) -> float | None:
        """At most how many characters one token stands for (None: no bound known); api/inputs.py checks a
        prompt's length in characters against it before tokenizing."""
        ...

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]: ...

    def encode_chat(self, messages: Sequence[Mapping[str, str]], system: str | None = None,
                    max_tokens: int | None = None) -> list[int]: ...

    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes:
        """The bytes one token stands for (to show the tokens of logprobs)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Token ids are 0 to vocab_size - 1."""
        ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary's string for a token id (byte-level BPE spelling), as `POST /tokenize` shows it."""
        ...


class DeltaStream(Protocol):
    """One request's deltas (an async iterator); closing it early aborts the request in the engine."""

    def __aiter__(self) -> AsyncIterator[Delta]: ...

    def __anext__(self) -> Awaitable[Delta]: ...

    def aclose(self) -> Awaitable[None]: ...


class EngineClient(Protocol):
    """What the API needs of the engine: EngineSupervisor (engine/supervisor.py, what `serve` uses),
    AsyncEngineClient below, and the tests' FakeEngine (tests/api/fakes.py); mypy checks each against this."""

    @property
    def model_info(self) -> ModelInfo: ...

    @property
    def tokenizer(self) -> PromptTokenizer: ...

    def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> DeltaStream:
        """Submit a request. Errors that refuse it (EngineOverloaded, RequestRejected, EngineDead) and a failed
        generation (QueueTimeout, EngineInternalError) are raised by the stream, never sent as deltas.

        With `params.n` > 1 the stream interleaves the deltas of the n samples, each tagged with its
        `Delta.index`, and ends after the final delta of every one; a failure of any sample raises (and aborts
        the others). Logprobs, when asked, come in `Delta.logprobs` (and `Delta.prompt_logprobs`: once, on sample
        0's first delta)."""
        ...

    def is_alive(self) -> bool:
        """The engine takes requests now (readiness().ready)."""
        ...

    def readiness(self) -> Readiness:
        """Whether the engine takes requests, and if not, what it is doing and why."""
        ...

    def stats(self) -> Mapping[str, object]:
        """The engine's stats (engine/stats.py); {} before the first snapshot."""
        ...


class RequestStream:
    """What `generate` returns: an async iterator of Deltas for one request (all its `n` samples).

    Raises EngineOverloaded / RequestRejected / EngineDead on the first `__anext__` (before any delta),
    QueueTimeout if it waited past queue_timeout_seconds, EngineInternalError if the step running it failed, and
    EngineDead if the engine dies meanwhile. Each sample's last delta has `finished=True`; the iteration ends
    after the last of them. Leaving early (`aclose()`, cancellation of the awaiting task, or dropping the object)
    or a failed sample aborts the request in the engine.
    """

    def __init__(self, request_id: str, samples: int, loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self._unfinished = samples   # samples whose final delta has not come yet
        self._queue: asyncio.Queue[Delta | EngineError] = asyncio.Queue()
        self._ack: asyncio.Future[Ack] = loop.create_future()
        self._done = False
        # set once the request is sent to the engine (a refused one never is): called once when the stream closes,
        # with whether the request must be aborted in the engine
        self._on_close: Callable[[RequestStream, bool], None] | None = None

    # ---- what the client tells the stream (on the event loop) -------------------------------------------------

    def sent(self, on_close: Callable[[RequestStream, bool], None]) -> None:
        """The request went to the engine: closing the stream calls `on_close(self, abort)`."""
        self._on_close = on_close

    def acknowledge(self, ack: Ack) -> None:
        """The engine's answer to the add (a refusal raises on the first `__anext__`); a later one is ignored."""
        if not self._ack.done():
            self._ack.set_result(ack)

    def refuse(self, error: EngineError) -> None:
        """Refused before it reached the engine: the first `__anext__` raises `error`."""
        self._ack.set_exception(error)
        self._ack.exception()   # mark retrieved; __anext__ raises it

    def put(self, delta: Delta) -> None:
        """One of the request's deltas, in the engine's order."""
        self._queue.put_nowait(delta)

    def fail(self, error: EngineError) -> None:
        """The engine is gone: the next `__anext__` raises `error` (in place of the ack if none came yet)."""
        if not self._ack.done():
            self._ack.set_exception(error)
        else:
            self._queue.put_nowait(error)

    # ---- what the API sees ------------------------------------------------------------------------------------

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        try:
            ack = await self._ack        # done after the first call: returns at once
            if ack.error is not None:
                self._close(abort=False)
                raise _ACK_ERRORS[ack.error](ack.message)
            item = await self._queue.get()
        except asyncio.CancelledError:
            self._close(abort=True)
            raise
        except BaseException:
            self._close(abort=False)
            raise
        if isinstance(item, BaseException):
            self._close(abort=False)
            raise item
        if item.finished:
            self._unfinished -= 1
            error = failure_error(item)
            if error is not None or self._unfinished == 0:
                self._close(abort=self._unfinished > 0)   # a failed sample ends the request: stop the others
            if error is not None:
                raise error
        return item

    async def aclose(self) -> None:
        self._close(abort=True)

    def _close(self, abort: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._on_close is not None:
            self._on_close(self, abort)

    def __del__(self) -> None:
        if not self._done:
            self._close(abort=True)


class AsyncEngineClient:
    def __init__(self, process: mp.process.BaseProcess, requests: Connection, outputs: Connection,
                 model_info: ModelInfo, tokenizer: Tokenizer, loop: asyncio.AbstractEventLoop) -> None:
        self._process = process
        self._requests = requests
        self._outputs = outputs
        self.model_info = model_info
        self.tokenizer = tokenizer
        self._loop = loop
        self._streams: dict[str, RequestStream] = {}
        self._stats: StatsSnapshot | None = None
        self._dead: str | None = None          # why the engine is gone
        self._death_callbacks: list[Callable[[str], None]] = []
        self._shutting_down = False
        self._outbox: queue.SimpleQueue[ClientMessage | None] = queue.SimpleQueue()   # None stops the sender
        self._threads = [threading.Thread(target=f, name=f"engine-{f.__name__.strip('_')}", daemon=True)
                         for f in (self._reader, self._sender, self._watchdog)]
        for t in self._threads:
            t.start()

    @classmethod
    async def start(cls, config: EngineConfig, startup_timeout: float | None = None) -> AsyncEngineClient:
        """Spawn the engine process and return once its model is loaded. A load failure raises EngineDead
        with the engine's error text (e.g. the CheckpointError message)."""
        engine = await spawn_engine(config, startup_timeout)
        return cls(engine.process, engine.requests, engine.outputs, engine.model_info, engine.tokenizer,
                   asyncio.get_running_loop())

    # ---- requests ---------------------------------------------------------------------------------------

    def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> RequestStream:
        """Submit a request; iterate the result for its deltas (errors surface on the first `__anext__`)."""
        stream = RequestStream(request_id, params.n, self._loop)
        if self._dead is not None:
            stream.refuse(EngineDead(self._dead))
            return stream
        if request_id in self._streams:
            stream.acknowledge(Ack(request_id, AckError.REJECTED, f"request id {request_id!r} is already in use"))
            return stream
        self._streams[request_id] = stream
        stream.sent(self._stream_closed)
        self._send(AddRequest(request_id, list(prompt_token_ids), params))
        return stream

    def is_alive(self) -> bool:
        return self._dead is None and self._process.is_alive()

    def readiness(self) -> Readiness:
        if self.is_alive():
            return Readiness(EngineState.READY)
        if self._shutting_down:
            return Readiness(EngineState.STOPPED, "the engine was shut down")
        return Readiness(EngineState.FAILED, self._dead or exit_reason(self._process.exitcode))

    def stats(self) -> Mapping[str, object]:
        """The latest stats snapshot pushed by the engine (engine/stats.py), {} before the first one."""
        return self._stats or {}

    @property
    def snapshot(self) -> StatsSnapshot | None:
        """The latest stats snapshot, typed (None before the first one); kept after the engine died."""
        return self._stats

    def on_death(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` on the event loop when the engine process dies (not when it is shut down), in
        the same loop step that fails the requests in flight, before any of them sees its error."""
        if self._dead is not None and not self._shutting_down:
            self._loop.call_soon(callback, self._dead)
        else:
            self._death_callbacks.append(callback)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the engine process (it finishes its loop iteration), or make sure a dead one is reaped. Safe to
        cancel: the process is stopped either way."""
        self._shutting_down = True
        if self._dead is None:
            self._send(Shutdown())
        try:
            await self._loop.run_in_executor(None, self._process.join, timeout)
        finally:
            stop_process(self._process)
            self._mark_dead("the engine was shut down")
            self._outbox.put(None)

    # ---- threads and plumbing ---------------------------------------------------------------------------

    def _stream_closed(self, stream: RequestStream, abort: bool) -> None:
        """A sent request's stream closed (the stream calls this once): forget it, and abort it in the engine if
        asked."""
        if self._streams.get(stream.request_id) is stream:
            del self._streams[stream.request_id]
        if abort:
            self._send(AbortRequest(stream.request_id))

    def _send(self, msg: ClientMessage) -> None:
        if self._dead is None:
            self._outbox.put(msg)

    def _sender(self) -> None:
        while (msg := self._outbox.get()) is not None:
            try:
                self._requests.send(msg)
            except (OSError, ValueError):
                self._died("the engine process is gone (pipe closed)")
                return

    def _reader(self) -> None:
        try:
            while True:
                msg = self._outputs.recv()
                if not isinstance(msg, Output):
                    raise ProtocolError(f"the client got an unexpected message after start: {msg!r}")
                self._loop.call_soon_threadsafe(self._dispatch, msg)
        except (EOFError, OSError):
            pass
        except ProtocolError as e:   # a bug: stop the engine, so that every pending request fails now
            log.error("%s; stopping the engine", e)
            self._died(str(e))
            stop_process(self._process)
            return
        except RuntimeError:   # the event loop is closed
            return
        except Exception as e:   # a message that cannot be read (unpickling failed, no memory): as a bug above
            log.exception("the engine client cannot read the engine's messages; stopping the engine")
            self._died(f"the engine's messages cannot be read: {type(e).__name__}: {e}")
            stop_process(self._process)
            return
        self._process.join(0.5)
        self._died(exit_reason(self._process.exitcode))

    def _watchdog(self) -> None:
        wait([self._process.sentinel])
        # let the reader hand over what the engine sent before it died, then fail whatever is still pending
        self._threads[0].join(timeout=1.0)
        self._died(exit_reason(self._process.exitcode))

    def _died(self, reason: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._mark_dead, reason)
        except RuntimeError:
            self._dead = self._dead or reason

    def _mark_dead(self, reason: str) -> None:
        if self._dead is not None and not self._streams:
            return
        died = self._dead is None and not self._shutting_down
        if self._dead is None:
            if died:   # the one line about the death; the requests it fails log nothing
                pending = len(self._streams)
                failed = f"; {pending} request{'s' * (pending != 1)} in flight failed" if pending else ""
                log.error("engine dead: %s%s", reason, failed)
            self._dead = reason
            self._outbox.put(None)
        for stream in list(self._streams.values()):
            stream.fail(EngineDead(self._dead))
            self._streams.pop(stream.request_id, None)
        if died:
            for callback in self._death_callbacks:
                callback(reason)

    def _dispatch(self, msg: Output) -> None:
        streams = self._streams
        for ack in msg.acks:
            stream = streams.get(ack.request_id)
            if stream is not None:
                stream.acknowledge(ack)
        for delta in msg.deltas:
            stream = streams.get(delta.request_id)
            if stream is not None:
                stream.put(delta)
        if msg.stats is not None:
            self._stats = msg.stats
