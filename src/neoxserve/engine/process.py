"""The engine process: loads the model, then loops `LLMEngine.step()` and talks to the client over two pipes.

Messages in (client -> engine), one tuple each:
    ("add", request_id, prompt_token_ids, params)   ("abort", request_id)   ("shutdown",)
Messages out (engine -> client):
    ("ready", model_info: dict) or ("failed", error text)          once, after loading
    ("out", acks, deltas, stats)                                    at most one per loop iteration
where acks is [(request_id, None | (error kind, message))] for the adds read in that iteration (kind is
"overloaded" or "rejected"), deltas is every Delta the step produced (batched: one message per step, not per
token), and stats is the latest `LLMEngine.stats()` dict or None (pushed at most every STATS_INTERVAL while busy,
and whenever the engine goes idle).
"""
from __future__ import annotations

import logging
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from neoxserve.engine.errors import EngineOverloaded, RequestRejected

STATS_INTERVAL = 0.25
log = logging.getLogger(__name__)


def settings_to_dict(settings: Any) -> dict[str, Any]:
    # Settings.load builds a local subclass, which spawn cannot pickle: ship plain field values instead
    return settings.model_dump()


def model_info(engine: Any, settings: Any) -> dict[str, Any]:
    path = engine.loaded.path
    name = settings.api_name or ("demo" if settings.model == "demo" else path.name)
    return {"name": name, "path": str(path), "max_context": engine.max_context,
            "is_chat": bool(getattr(engine.tokenizer, "is_chat", False))}


def engine_main(settings_dict: dict[str, Any], requests: Connection, outputs: Connection) -> None:
    """Entry point of the spawned process."""
    # Ctrl-C in a terminal reaches the whole process group: let the HTTP process decide when the engine stops
    # (it sends "shutdown"; if it dies instead, the pipe closes and this loop ends)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    try:
        import torch

        from neoxserve.config import Settings
        from neoxserve.engine.core import LLMEngine

        settings = Settings.model_construct(**settings_dict)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        engine = LLMEngine.from_settings(settings)
    except BaseException as e:
        outputs.send(("failed", "".join(traceback.format_exception_only(type(e), e)).strip()))
        return
    outputs.send(("ready", model_info(engine, settings)))
    try:
        _loop(engine, requests, outputs)
    except (EOFError, OSError):
        pass   # the client went away
    except BaseException:
        log.exception("engine loop crashed")   # the client sees the process exit and fails pending requests
        raise


def _loop(engine: Any, requests: Connection, outputs: Connection) -> None:
    last_stats = 0.0
    stats_dirty = True
    while True:
        if not engine.has_unfinished():
            if stats_dirty:
                outputs.send(("out", [], [], engine.stats()))
                stats_dirty = False
            requests.poll(None)           # idle: block until the client sends something
        acks: list[tuple[str, Any]] = []
        while requests.poll(0):
            msg = requests.recv()
            kind = msg[0]
            if kind == "add":
                _, request_id, prompt, params = msg
                try:
                    engine.add_request(request_id, prompt, params)
                    acks.append((request_id, None))
                except EngineOverloaded as e:
                    acks.append((request_id, ("overloaded", str(e))))
                except RequestRejected as e:
                    acks.append((request_id, ("rejected", str(e))))
                except Exception as e:    # a malformed request must not take the engine down
                    acks.append((request_id, ("rejected", f"{type(e).__name__}: {e}")))
            elif kind == "abort":
                engine.abort(msg[1])
            elif kind == "shutdown":
                return
        deltas = engine.step() if engine.has_unfinished() else []
        stats_dirty = True
        now = time.monotonic()
        stats = None
        if now - last_stats >= STATS_INTERVAL:
            stats, last_stats = engine.stats(), now
        if acks or deltas or stats is not None:
            outputs.send(("out", acks, deltas, stats))
        if engine.has_unfinished() and not engine.last_step_ran and not deltas:
            requests.poll(0.005)          # work exists but none could run (should not happen): do not spin
