"""EngineSupervisor: an EngineClient that brings the engine process back when it dies.

One AsyncEngineClient at a time serves requests. When its process dies, that client fails the requests in flight
at once (EngineDead) and logs the cause once; the supervisor then waits out a backoff and starts a new engine
process with the same EngineConfig, as often as the RestartPolicy allows (engine/restart_policy.py). Meanwhile
new requests are refused at once with EngineDead, `readiness()` says what is happening and why, and `stats()`
reports zero gauges (never the dead engine's last ones) and counts the restarts. When the policy allows no more
restarts, the engine stays down (FAILED) and `wait_failed()` returns; what the server does then is its setting
(commands/serve.py, `engine_failure_action`).

The API is written against EngineClient, so it sees restarts only through `readiness()` and `stats()`. Like
AsyncEngineClient, this imports no torch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from neoxserve.engine.client import AsyncEngineClient, DeltaStream, PromptTokenizer
from neoxserve.engine.config import EngineConfig
from neoxserve.engine.errors import EngineDead
from neoxserve.engine.outputs import Delta
from neoxserve.engine.readiness import EngineState, Readiness
from neoxserve.engine.restart_policy import RestartHistory, RestartPolicy
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.stats import StatsSnapshot, SupervisedStats, carry_over, idle_snapshot

log = logging.getLogger(__name__)


class RefusedStream:
    """The DeltaStream of a request the engine cannot take: its first `__anext__` raises the error."""

    def __init__(self, error: EngineDead) -> None:
        self._error: EngineDead | None = error

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self

    async def __anext__(self) -> Delta:
        error, self._error = self._error, None
        if error is None:
            raise StopAsyncIteration
        raise error

    async def aclose(self) -> None:
        self._error = None


class EngineSupervisor:
    def __init__(self, client: AsyncEngineClient, config: EngineConfig, policy: RestartPolicy) -> None:
        self._config = config
        self._history = RestartHistory(policy)
        self.model_info = client.model_info   # a restart must bring back the same model (see _restart)
        self._tokenizer = client.tokenizer
        self._client: AsyncEngineClient | None = None   # the serving engine; None while it is down
        self._state = EngineState.READY
        self._cause = ""            # the death this outage began with
        self._last_failure = ""     # the latest restart that failed, in this outage
        self._doing = ""            # what the supervisor does now (restarting in ..., loading ...)
        self._backoff: float | None = None   # the wait before the next restart; None: no more restarts
        self._restarts = 0
        self._ended: StatsSnapshot = idle_snapshot()   # counters of engine processes that died
        self._dead_clients: list[AsyncEngineClient] = []   # to be reaped by the supervising task
        self._down = asyncio.Event()      # the engine died: the supervising task takes over
        self._failed = asyncio.Event()    # the engine is down for good
        self._stopping = False
        self._serve_with(client)
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="engine-supervisor")
        self._task.add_done_callback(self._supervisor_ended)

    @classmethod
    async def start(cls, config: EngineConfig, policy: RestartPolicy) -> EngineSupervisor:
        """Start the engine and return once its model is loaded; a load failure at start raises EngineDead (it is
        not retried: a server that cannot load its model at all should not come up)."""
        return cls(await AsyncEngineClient.start(config), config, policy)

    # ---- EngineClient -----------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> PromptTokenizer:
        return self._tokenizer

    def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> DeltaStream:
        client = self._client
        if client is None:
            return RefusedStream(EngineDead(self._reason()))
        return client.generate(request_id, prompt_token_ids, params)   # a dead client refuses it itself

    def is_alive(self) -> bool:
        return self._client is not None and self._client.is_alive()

    @property
    def pid(self) -> int | None:
        """The serving engine process's id; None while the engine is down."""
        return self._client.pid if self._client is not None else None

    def readiness(self) -> Readiness:
        client = self._client
        if client is not None:
            readiness = client.readiness()
            if readiness.ready or self._stopping:
                return readiness
            # its process is gone; the client has not noticed yet (it does within a loop step or two)
            return Readiness(EngineState.RESTARTING, readiness.reason)
        return Readiness(self._state, self._reason())

    def stats(self) -> SupervisedStats:
        """The live engine's gauges (zero while it is down), counters and histograms since the server started
        (carried over engine restarts), `up` and `restarts` (engine/stats.py)."""
        client, ended, current = self._client, self._ended, idle_snapshot()
        alive = client is not None and client.is_alive()
        if client is not None and alive:
            current = client.snapshot or current
        elif client is not None:   # its process is gone, not yet noticed: its counters count, its gauges do not
            ended = carry_over(ended, client.snapshot or current)
        return {**carry_over(ended, current), "up": int(alive), "restarts": self._restarts}

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def wait_failed(self) -> str:
        """Return once the engine is down for good (the restart limit was reached): why."""
        await self._failed.wait()
        return self._reason()

    async def shutdown(self) -> None:
        """Stop supervising and stop the engine; a backoff or a model load under way is cut short."""
        self._stopping = True
        self._task.cancel()
        await asyncio.wait([self._task])   # its cancellation is not ours: a cancelled shutdown still raises
        self._state = EngineState.STOPPED
        if self._client is not None:
            await self._client.shutdown()

    # ---- supervising ------------------------------------------------------------------------------------------

    def _serve_with(self, client: AsyncEngineClient) -> None:
        client.on_death(self._lost)
        self._client, self._state = client, EngineState.READY
        self._down.clear()

    def _lost(self, cause: str) -> None:
        """The serving engine died (called by its client in the loop step that fails the requests in flight, so
        whoever sees an EngineDead also sees this state)."""
        client = self._client
        if client is None or self._stopping:
            return
        self._client = None
        self._dead_clients.append(client)
        self._state, self._cause, self._last_failure = EngineState.RESTARTING, cause, ""
        self._ended = carry_over(self._ended, client.snapshot or idle_snapshot())
        self._backoff = self._plan()
        self._down.set()

    def _plan(self) -> float | None:
        """What comes next: the wait before the next restart, or None when the policy allows no more (then the
        engine has failed for good)."""
        policy = self._history.policy
        backoff = self._history.next_backoff()
        if backoff is None:
            self._state = EngineState.FAILED
            self._doing = f"{policy.exhausted()}: the engine stays down until the server is restarted"
            log.error("engine: %s", self._reason())
            self._failed.set()
        else:
            self._doing = f"restarting in {backoff:g} s ({policy.describe(self._history.recent + 1)})"
            log.warning("engine: %s", self._doing)
        return backoff

    async def _supervise(self) -> None:
        while True:
            await self._down.wait()
            while self._dead_clients:
                await self._dead_clients.pop().shutdown()   # reaps the process, stops the client's threads
            client = await self._restart()
            if client is None:
                return
            self._serve_with(client)

    async def _restart(self) -> AsyncEngineClient | None:
        """Wait out the backoff, then start engine processes until one loads the model; None once the policy
        allows no more restarts."""
        policy = self._history.policy
        while (backoff := self._backoff) is not None:
            await asyncio.sleep(backoff)
            which = policy.describe(self._history.recent + 1)
            self._history.restarted()
            self._restarts += 1
            self._state, self._doing = EngineState.LOADING, f"loading the model ({which})"
            started = time.monotonic()
            try:
                client = await AsyncEngineClient.start(self._config)
            except (EngineDead, OSError) as e:
                self._failed_restart(f"restart {self._restarts} failed: {e}")
                continue
            if client.model_info != self.model_info:
                await client.shutdown()
                self._failed_restart(f"restart {self._restarts} failed: the engine loaded another model "
                                     f"({client.model_info}, not {self.model_info}); restart the server to change "
                                     f"models")
                continue
            log.info("engine: back after %s; the model loaded in %.1f s", which, time.monotonic() - started)
            return client
        return None

    def _failed_restart(self, failure: str) -> None:
        self._state, self._last_failure = EngineState.RESTARTING, failure
        log.error("engine: %s", failure)
        self._backoff = self._plan()

    def _supervisor_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # a bug in the supervisor: loud, and the engine counts as failed (the server exits or stays down)
        error = task.exception()
        log.error("engine supervisor crashed", exc_info=error)
        self._state, self._doing = EngineState.FAILED, f"the engine supervisor crashed: {error!r}"
        self._failed.set()

    def _reason(self) -> str:
        return "; ".join(part for part in (self._cause, self._last_failure, self._doing) if part)
