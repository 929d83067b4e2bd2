"""The spawned engine process's entry point. The HTTP process names `engine_main` as the target (engine/spawn.py),
so this module imports nothing of engine/worker/: the child imports it when it starts."""
from __future__ import annotations

from multiprocessing.connection import Connection

from neoxserve.engine.config import EngineConfig


def engine_main(config: EngineConfig, requests: Connection, outputs: Connection) -> None:
    from neoxserve.engine.worker.loop import run_engine

    run_engine(config, requests, outputs)
