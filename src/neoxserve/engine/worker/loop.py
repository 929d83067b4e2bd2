"""The engine process: loads the model, then loops `LLMEngine.step()` and talks to the client over two pipes
(the messages are in engine/protocol.py). engine/process.py's `engine_main`, the spawned process's target, calls
`run_engine`.

The engine core (and with it torch) is imported inside `run_engine`, after `bound_gemm_caches`: both caches read
their variable once, when torch loads.
"""
from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from neoxserve.engine.config import EngineConfig
from neoxserve.engine.errors import EngineOverloaded, RequestRejected
from neoxserve.engine.protocol import (STATS_INTERVAL, Ack, AckError, AbortRequest, AddRequest, Failed,
                                       Output, ProtocolError, Ready, Shutdown)

if TYPE_CHECKING:
    from neoxserve.engine.worker.core import LLMEngine

log = logging.getLogger(__name__)

# oneDNN (its primitive cache) and ideep (its LRU cache) keep one entry per GEMM shape, 1024 each by default, and
# an entry of a bf16 linear holds about 0.4 MB. Prefill batches have a new token count almost every step, so with
# the defaults a bf16 engine grows by hundreds of MB over hours of varied traffic (docs/operations.md, "Memory").
# 128 entries keep every decode batch size of the recent past cached. Read once, when torch loads; an operator's
# own value wins.
GEMM_CACHE_CAPACITY = "128"
GEMM_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def run_engine(config: EngineConfig, requests: Connection, outputs: Connection) -> None:
    """Load the model, report Ready (or Failed), then serve the client until Shutdown or until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group: let the HTTP process decide when the engine stops
    # (it sends Shutdown; if it dies instead, the pipe closes and this loop ends)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    bound_gemm_caches()
    try:
        from neoxserve.engine.worker.core import LLMEngine

        engine = LLMEngine.from_config(config)
    except BaseException as e:
        outputs.send(Failed("".join(traceback.format_exception_only(type(e), e)).strip()))
        return
    outputs.send(Ready(engine.model_info))
    try:
        _loop(engine, requests, outputs)
    except (EOFError, OSError):
        pass   # the client went away
    except BaseException:
        log.exception("engine loop crashed")   # the client sees the process exit and fails pending requests
        raise


def bound_gemm_caches() -> None:
    """Cap oneDNN's and ideep's per-shape caches (GEMM_CACHE_CAPACITY) unless the environment sets them. Must run
    before torch is imported: both read their variable once."""
    for name in GEMM_CACHE_VARIABLES:
        os.environ.setdefault(name, GEMM_CACHE_CAPACITY)


def _add(engine: LLMEngine, msg: AddRequest) -> Ack:
    try:
        engine.add_request(msg.request_id, msg.prompt_token_ids, msg.params)
    except EngineOverloaded as e:
        return Ack(msg.request_id, AckError.OVERLOADED, str(e))
    except RequestRejected as e:
        return Ack(msg.request_id, AckError.REJECTED, str(e))
    except Exception as e:
        # a bug in the engine, not the caller's fault: fail this request loudly and keep serving the others
        log.exception("adding request %s failed", msg.request_id)
        return Ack(msg.request_id, AckError.INTERNAL, f"{type(e).__name__}: {e}")
    return Ack(msg.request_id)


def _loop(engine: LLMEngine, requests: Connection, outputs: Connection) -> None:
    last_stats = 0.0
    stats_dirty = True
    while True:
        if not engine.has_unfinished():
            if stats_dirty:
                outputs.send(Output(stats=engine.stats()))
                stats_dirty = False
            requests.poll(None)           # idle: block until the client sends something
        acks: list[Ack] = []
        while requests.poll(0):
            match msg := requests.recv():
                case AddRequest():
                    acks.append(_add(engine, msg))
                case AbortRequest():
                    engine.abort(msg.request_id)
                case Shutdown():
                    return
                case _:
                    raise ProtocolError(f"the engine got an unknown message: {msg!r}")
        deltas = engine.step() if engine.has_unfinished() else []
        stats_dirty = True
        now = time.monotonic()
        stats = None
        if now - last_stats >= STATS_INTERVAL:
            stats, last_stats = engine.stats(), now
        if acks or deltas or stats is not None:
            outputs.send(Output(acks, deltas, stats))
