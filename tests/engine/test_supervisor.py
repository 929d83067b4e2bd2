"""EngineSupervisor with real engine processes on a copy of the demo model: a killed engine comes back, what
callers see meanwhile, an engine that cannot come back, and shutdowns during a backoff or a model load.

Timing is checked only from below (a backoff is never cut short), which a loaded machine cannot break; every wait
is bounded.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import time

import pytest

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.errors import EngineDead
from neoxserve.engine.readiness import EngineState
from neoxserve.engine.restart_policy import RestartPolicy
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.supervisor import EngineSupervisor

LOAD_TIMEOUT = 120.0    # an engine process loading the demo model on a busy machine
SHORT = SamplingParams(greedy=True, max_new_tokens=5, ignore_eos=True)
LONG = SamplingParams(greedy=True, max_new_tokens=1500, ignore_eos=True)
GAUGES = ("running", "waiting", "kv_blocks_used", "kv_blocks_total", "up")


def _policy(limit=3, backoff=0.2, backoff_max=0.4) -> RestartPolicy:
    return RestartPolicy(engine_restart_limit=limit, engine_restart_window_seconds=600.0,
                         engine_restart_backoff_seconds=backoff, engine_restart_backoff_max_seconds=backoff_max)


@pytest.fixture
def model_dir(demo_model_dir, tmp_path):
    """A copy of the demo model that a test may take away."""
    path = tmp_path / "model"
    shutil.copytree(demo_model_dir, path)
    return path


def _config(model_dir, tmp_path):
    return engine_config(Settings(model=str(model_dir), data_dir=tmp_path, kv_cache_memory_mb=16, torch_threads=1))


async def _until(predicate, timeout: float, what: str) -> float:
    """Poll every 10 ms; the time the predicate first held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {what}"
        await asyncio.sleep(0.01)
    return time.monotonic()


async def _complete(supervisor: EngineSupervisor, request_id: str) -> int:
    prompt = supervisor.tokenizer.encode("The city of Beijing")
    deltas = [d async for d in supervisor.generate(request_id, prompt, SHORT)]
    return deltas[-1].completion_tokens


def _engines() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "neoxserve-engine"]


def test_a_killed_engine_comes_back_after_the_backoff(model_dir, tmp_path):
    backoff = 1.0

    async def scenario():
        supervisor = await EngineSupervisor.start(_config(model_dir, tmp_path),
                                                  _policy(backoff=backoff, backoff_max=backoff))
        try:
            assert await _complete(supervisor, "before") == 5
            await _until(lambda: supervisor.stats()["generation_tokens_total"] >= 5, 10, "stats pushed")
            assert supervisor.readiness().ready and supervisor.stats()["restarts"] == 0

            running = supervisor.generate("in-flight", supervisor.tokenizer.encode("Hello"), LONG)
            await running.__anext__()
            await _until(lambda: supervisor.stats()["kv_blocks_used"] > 0, 10, "the long request's blocks")
            first_pid = supervisor.pid
            os.kill(first_pid, signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(EngineDead, match="killed by SIGKILL"):
                async for _ in running:
                    pass
            failed_after = time.monotonic() - killed

            readiness = supervisor.readiness()
            assert readiness.state is EngineState.RESTARTING and not readiness.engine_alive
            assert readiness.reason.startswith("the engine process was killed by SIGKILL; restarting in 1 s "
                                               "(restart 1 of at most 3 within 600 s)")
            with pytest.raises(EngineDead, match="killed by SIGKILL"):
                await supervisor.generate("during", [1, 2], SHORT).__anext__()
            stats = supervisor.stats()
            assert [stats[g] for g in GAUGES] == [0, 0, 0, 0, 0]   # live, not the dead engine's last values
            assert stats["generation_tokens_total"] >= 6 and stats["restarts"] == 0

            loading = await _until(lambda: supervisor.readiness().state is not EngineState.RESTARTING, 30,
                                   "the restart begins")
            assert loading - killed >= backoff * 0.95   # the backoff is waited out (never cut short)
            assert supervisor.stats()["restarts"] == 1
            await _until(lambda: supervisor.readiness().ready, LOAD_TIMEOUT, "the engine is back")
            assert supervisor.pid not in (None, first_pid)
            assert await _complete(supervisor, "after") == 5
            await _until(lambda: supervisor.stats()["kv_blocks_total"] > 0 and supervisor.stats()["running"] == 0,
                         10, "the new engine's idle stats")
            stats = supervisor.stats()
            assert stats["restarts"] == 1 and stats["up"] == 1
            # counters carry over the restart: the first engine's tokens plus the new one's
            assert stats["generation_tokens_total"] >= 5 + 1 + 5
            assert stats["requests_finished_total"]["length"] >= 2
            return failed_after
        finally:
            await supervisor.shutdown()

    failed_after = asyncio.run(scenario())
    assert failed_after < 5.0   # at once (measured 0.2 s or less; bounded loosely for a loaded machine)
    assert _engines() == []


def test_an_engine_that_cannot_come_back_fails_after_the_restart_limit(model_dir, tmp_path):
    async def scenario():
        supervisor = await EngineSupervisor.start(_config(model_dir, tmp_path),
                                                  _policy(limit=2, backoff=0.2, backoff_max=0.3))
        try:
            model_dir.rename(model_dir.with_name("moved-away"))
            os.kill(supervisor.pid, signal.SIGKILL)
            killed = time.monotonic()
            reason = await asyncio.wait_for(supervisor.wait_failed(), LOAD_TIMEOUT)
            assert time.monotonic() - killed >= 0.2 + 0.3   # both backoffs, the second doubled up to its cap
            assert reason.startswith("the engine process was killed by SIGKILL; restart 2 failed: the engine "
                                     "failed to start: ")
            assert str(model_dir) in reason and "does not exist" in reason
            assert reason.endswith("; the restart limit is reached (2 restarts within 600 s): the engine stays "
                                   "down until the server is restarted")
            assert supervisor.readiness().state is EngineState.FAILED
            assert supervisor.readiness().reason == reason
            stats = supervisor.stats()
            assert stats["restarts"] == 2 and [stats[g] for g in GAUGES] == [0, 0, 0, 0, 0]
            with pytest.raises(EngineDead, match="restart limit"):
                await supervisor.generate("refused", [1, 2], SHORT).__anext__()
            assert _engines() == []
        finally:
            await asyncio.wait_for(supervisor.shutdown(), 10)
        assert supervisor.readiness().state is EngineState.STOPPED

    asyncio.run(scenario())


def test_restarts_off_the_first_death_is_final(model_dir, tmp_path):
    async def scenario():
        supervisor = await EngineSupervisor.start(_config(model_dir, tmp_path), _policy(limit=0))
        try:
            os.kill(supervisor.pid, signal.SIGKILL)
            reason = await asyncio.wait_for(supervisor.wait_failed(), 30)
            assert reason == ("the engine process was killed by SIGKILL; restarts are off (engine_restart_limit = 0): "
                              "the engine stays down until the server is restarted")
            assert supervisor.stats()["restarts"] == 0
        finally:
            await supervisor.shutdown()

    asyncio.run(scenario())


def test_another_model_after_a_restart_is_a_failed_restart(model_dir, tmp_path):
    """The HTTP process keeps the tokenizer and model facts of the model it started with, so a restart must bring
    back the same model; a different one (the directory changed meanwhile) is refused."""
    async def scenario():
        supervisor = await EngineSupervisor.start(_config(model_dir, tmp_path), _policy(limit=1))
        try:
            config = model_dir / "config.json"
            config.write_text(config.read_text().replace('"max_position_embeddings": 4096',
                                                         '"max_position_embeddings": 2048'))
            os.kill(supervisor.pid, signal.SIGKILL)
            reason = await asyncio.wait_for(supervisor.wait_failed(), LOAD_TIMEOUT)
            assert "restart 1 failed: the engine loaded another model (" in reason
            assert "max_context=2048" in reason and "restart the server to change models" in reason
            assert _engines() == []
        finally:
            await supervisor.shutdown()

    asyncio.run(scenario())


@pytest.mark.parametrize("during", [EngineState.RESTARTING, EngineState.LOADING])
def test_shutdown_during_a_backoff_or_a_model_load_does_not_hang(model_dir, tmp_path, during):
    backoff = 60.0 if during is EngineState.RESTARTING else 0.0

    async def scenario():
        supervisor = await EngineSupervisor.start(_config(model_dir, tmp_path),
                                                  _policy(backoff=backoff, backoff_max=backoff))
        os.kill(supervisor.pid, signal.SIGKILL)
        await _until(lambda: supervisor.readiness().state is during, 30, during.value)
        started = time.monotonic()
        await asyncio.wait_for(supervisor.shutdown(), 20)
        assert time.monotonic() - started < 20
        assert supervisor.readiness().state is EngineState.STOPPED
        await _until(lambda: _engines() == [], 10, "no engine process left")

    asyncio.run(scenario())


def test_start_fails_with_the_load_error(tmp_path):
    """A model that cannot load at start is not retried: the server does not come up (exit code 1)."""
    config = _config(tmp_path / "missing", tmp_path)

    async def scenario():
        with pytest.raises(EngineDead, match="does not exist"):
            await EngineSupervisor.start(config, _policy())

    asyncio.run(scenario())
