"""RestartPolicy: how often, and after how long a wait, the supervisor (engine/supervisor.py) restarts a dead
engine process.

Built from the service `Settings` by `commands.engine_config.restart_policy` (field names are the Settings
fields). Like systemd's StartLimitBurst / StartLimitIntervalSec: at most `engine_restart_limit` restarts within
any `engine_restart_window_seconds`; a death that would need one more is final. Each restart waits first, from
`engine_restart_backoff_seconds`, doubling with every restart still inside the window, up to
`engine_restart_backoff_max_seconds`; once restarts leave the window, the wait shrinks again.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    engine_restart_limit: int                  # 0 = never restart: the first death is final
    engine_restart_window_seconds: float
    engine_restart_backoff_seconds: float
    engine_restart_backoff_max_seconds: float

    def backoff(self, recent: int) -> float | None:
        """The wait before the next restart when `recent` restarts lie within the window, or None when the limit
        allows no more."""
        if recent >= self.engine_restart_limit:
            return None
        return min(self.engine_restart_backoff_seconds * 2.0 ** recent, self.engine_restart_backoff_max_seconds)

    def describe(self, n: int) -> str:
        """`restart n of at most L within W s`, for logs and readiness."""
        return (f"restart {n} of at most {self.engine_restart_limit} "
                f"within {self.engine_restart_window_seconds:g} s")

    def exhausted(self) -> str:
        """Why no restart follows, for logs and readiness."""
        if self.engine_restart_limit == 0:
            return "restarts are off (engine_restart_limit = 0)"
        limit = self.engine_restart_limit
        return (f"the restart limit is reached ({limit} restart{'s' * (limit != 1)} within "
                f"{self.engine_restart_window_seconds:g} s)")


class RestartHistory:
    """When the recent restarts happened: what RestartPolicy.backoff counts."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._times: deque[float] = deque()

    def next_backoff(self) -> float | None:
        """The wait before the next restart, or None when the limit is reached (see RestartPolicy)."""
        now = self._clock()
        while self._times and now - self._times[0] >= self.policy.engine_restart_window_seconds:
            self._times.popleft()
        return self.policy.backoff(len(self._times))

    @property
    def recent(self) -> int:
        """Restarts within the window as of the last `next_backoff()`."""
        return len(self._times)

    def restarted(self) -> None:
        self._times.append(self._clock())
