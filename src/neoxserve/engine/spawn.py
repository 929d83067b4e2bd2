"""Starting and stopping the engine process, from the HTTP process: spawn it (engine/process.py's `engine_main`
is its target), wait until its model is loaded, load the tokenizer it reports, and say why it exited.

engine/client.py's AsyncEngineClient.start uses these; engine/supervisor.py restarts an engine through it.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from neoxserve.engine.config import EngineConfig
from neoxserve.engine.errors import EngineDead
from neoxserve.engine.process import engine_main
from neoxserve.engine.protocol import Failed, ModelInfo, ProtocolError, Ready
from neoxserve.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class SpawnedEngine:
    """An engine process that has loaded its model, and the HTTP process's ends of its two pipes."""
    process: mp.process.BaseProcess
    requests: Connection   # client -> engine
    outputs: Connection    # engine -> client
    model_info: ModelInfo
    tokenizer: Tokenizer


async def spawn_engine(config: EngineConfig, startup_timeout: float | None = None) -> SpawnedEngine:
    """Spawn the engine process and return once its model and the tokenizer are loaded. A load failure raises
    EngineDead with the engine's error text (e.g. the CheckpointError message); the process is stopped then."""
    loop = asyncio.get_running_loop()
    ctx = mp.get_context("spawn")
    req_read, req_write = ctx.Pipe(duplex=False)
    out_read, out_write = ctx.Pipe(duplex=False)
    process = ctx.Process(target=engine_main, args=(config, req_read, out_write),
                          name="neoxserve-engine", daemon=True)
    process.start()
    req_read.close()
    out_write.close()   # so that the engine's death reads as EOF here
    try:
        info = await loop.run_in_executor(None, _wait_ready, process, out_read, startup_timeout)
        tokenizer = await loop.run_in_executor(None, Tokenizer.from_dir, info.path)
    except BaseException:
        stop_process(process)
        req_write.close()
        out_read.close()
        raise
    return SpawnedEngine(process, req_write, out_read, info, tokenizer)


def _wait_ready(process: mp.process.BaseProcess, outputs: Connection, timeout: float | None) -> ModelInfo:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if outputs.poll(0.1):
            try:
                msg = outputs.recv()
            except EOFError:
                raise EngineDead(f"the engine process exited while loading (exit code {process.exitcode})") from None
            match msg:
                case Ready():
                    return msg.model_info
                case Failed():
                    raise EngineDead(f"the engine failed to start: {msg.error}")
                case _:
                    raise ProtocolError(f"the client got an unexpected message while the engine loads: {msg!r}")
        if not process.is_alive():
            if outputs.poll(0):
                continue
            raise EngineDead(f"the engine process exited while loading (exit code {process.exitcode})")
        if deadline is not None and time.monotonic() > deadline:
            raise EngineDead(f"the engine did not load within {timeout} s")


def exit_reason(exitcode: int | None) -> str:
    """Why the engine process ended, from its exit code (a signal's name when it was killed)."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the engine process was killed by {name}"
    return f"the engine process exited (exit code {exitcode})"


def stop_process(process: mp.process.BaseProcess) -> None:
    """Terminate the engine process if it still runs (SIGKILL if that does not end it in 5 s), and reap it."""
    if process.is_alive():
        process.terminate()
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)
