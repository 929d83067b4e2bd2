"""Readiness: whether the engine takes requests now, and if not, what it is doing and why (for /ready and logs)."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class EngineState(enum.Enum):
    READY = "ready"             # the model is loaded in a live engine process: requests are served
    RESTARTING = "restarting"   # the engine process died; a new one starts after the backoff
    LOADING = "loading"         # a new engine process is loading the model
    FAILED = "failed"           # the engine is down and will not be restarted
    STOPPED = "stopped"         # shut down (the server is stopping)


@dataclass(frozen=True)
class Readiness:
    state: EngineState
    reason: str | None = None   # why the engine is not ready (None when it is)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @property
    def engine_alive(self) -> bool:
        """An engine process runs (ready, or loading the model)."""
        return self.state in (EngineState.READY, EngineState.LOADING)
