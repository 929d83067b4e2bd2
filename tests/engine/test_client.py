"""AsyncEngineClient end to end: a spawned engine process on the demo model."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.client import AsyncEngineClient
from neoxserve.engine.errors import EngineDead, EngineOverloaded, QueueTimeout, RequestRejected
from neoxserve.engine.sampling_params import SamplingParams

TIMEOUT = 30.0
LONG = SamplingParams(greedy=True, max_new_tokens=1000, ignore_eos=True)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _settings(demo_model_dir, tmp_path_factory, **overrides) -> Settings:
    return Settings(model=str(demo_model_dir), data_dir=tmp_path_factory.mktemp("data"), kv_cache_memory_mb=16,
                    torch_threads=1, **overrides)


def run(loop, coro, timeout: float = TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def client(loop, demo_model_dir, tmp_path_factory):
    settings = _settings(demo_model_dir, tmp_path_factory, max_num_seqs=1, max_waiting_requests=0)
    client = run(loop, AsyncEngineClient.start(engine_config(settings)), 120)
    yield client
    run(loop, client.shutdown())


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _aborts(client) -> int:
    return client.stats().get("requests_finished_total", {}).get("abort", 0)


def _idle_after_aborts(client, aborts: int):
    """True once the engine has reported `aborts` aborts in total and holds no sequence and no block."""
    def check() -> bool:
        s = client.stats()
        return (_aborts(client) >= aborts and s.get("running") == 0 and s.get("waiting") == 0
                and s.get("kv_blocks_used") == 0)
    return check


def test_stream_matches_the_in_process_engine(loop, client, make_engine, h, cpu_auto_dtype, demo_model_dir):
    info = client.model_info
    assert info.max_context == 4096 and info.is_chat
    import torch
    if torch.cuda.is_available():
        assert info.device.startswith("cuda") and info.dtype in ("bfloat16", "float16")
    else:
        assert (info.device, info.dtype) == ("cpu", cpu_auto_dtype)   # "auto" resolved by the machine's rule
    prompt = client.tokenizer.encode("The city of Beijing is the capital of China.")
    params = SamplingParams(seed=3, temperature=0.8, max_new_tokens=12, ignore_eos=True)

    async def collect():
        return [d async for d in client.generate("s1", prompt, params)]

    deltas = run(loop, collect())
    assert deltas[-1].finished and deltas[-1].finish_reason == "length"
    assert deltas[-1].prompt_tokens == len(prompt) and deltas[-1].completion_tokens == 12

    from neoxserve.model.loader import load_model
    engine = make_engine(load_model(demo_model_dir, info.device, info.dtype))   # the dtype the process resolved
    engine.add_request("s1", prompt, params)
    local = h.run_all(engine)["s1"]
    assert h.tokens_of(deltas) == h.tokens_of(local)
    assert h.text_of(deltas) == h.text_of(local)
    run(loop, _until(lambda: client.stats().get("generation_tokens_total", 0) >= 12))
    assert client.stats()["time_to_first_token_seconds"]["count"] >= 1


def test_closing_the_iterator_aborts_and_frees_blocks(loop, client):
    prompt = client.tokenizer.encode("Please introduce yourself.")
    aborts = _aborts(client)

    async def close_early():
        stream = client.generate("c1", prompt, LONG)
        got = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return got

    got = run(loop, close_early())
    assert len(got) == 2 and not got[-1].finished
    run(loop, _until(_idle_after_aborts(client, aborts + 1)))


def test_cancelling_the_consumer_aborts(loop, client):
    prompt = client.tokenizer.encode("What is the weather like today?")
    aborts = _aborts(client)
    seen = []

    async def consume():
        async for d in client.generate("k1", prompt, LONG):
            seen.append(d)

    async def cancel_soon():
        task = asyncio.ensure_future(consume())
        await _until(lambda: len(seen) >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, cancel_soon())
    run(loop, _until(_idle_after_aborts(client, aborts + 1)))


def test_full_queue_and_impossible_requests_refuse_before_the_first_delta(loop, client):
    prompt = client.tokenizer.encode("Hello")
    aborts = _aborts(client)

    async def scenario():
        running = client.generate("busy", prompt, LONG)
        await running.__anext__()                      # it holds the only running slot
        with pytest.raises(EngineOverloaded):
            await client.generate("refused", prompt, LONG).__anext__()
        with pytest.raises(RequestRejected, match="context of 4096"):
            await client.generate("huge", prompt, SamplingParams(max_new_tokens=4096)).__anext__()
        duplicate = client.generate("busy", prompt, LONG)
        with pytest.raises(RequestRejected, match="in use"):
            await duplicate.__anext__()
        del duplicate                                  # must not abort the live request of that id
        assert not (await running.__anext__()).finished
        await running.aclose()

    run(loop, scenario())
    run(loop, _until(_idle_after_aborts(client, aborts + 1)))


def test_killed_engine_fails_pending_requests_promptly(loop, demo_model_dir, tmp_path_factory):
    settings = _settings(demo_model_dir, tmp_path_factory, max_num_seqs=1, queue_timeout_seconds=0.3)
    client = run(loop, AsyncEngineClient.start(engine_config(settings)), 120)
    prompt = client.tokenizer.encode("Numbers and code")

    async def scenario():
        running = client.generate("r", prompt, LONG)
        await running.__anext__()
        with pytest.raises(QueueTimeout):                 # waits behind "r" past its deadline
            await client.generate("late", prompt, LONG).__anext__()
        pending = client.generate("p", prompt, LONG)      # waiting when the engine dies
        os.kill(client.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(EngineDead):
            async for _ in running:
                pass
        with pytest.raises(EngineDead):
            await pending.__anext__()
        assert time.monotonic() - started < 5
        await _until(lambda: not client.is_alive(), 5)
        with pytest.raises(EngineDead):
            await client.generate("after", prompt, LONG).__anext__()

    try:
        run(loop, scenario())
    finally:
        run(loop, client.shutdown())


def test_load_error_surfaces_with_its_text(loop, tmp_path):
    settings = Settings(model=str(tmp_path / "no-such-model"), data_dir=tmp_path)
    with pytest.raises(EngineDead, match="does not exist"):
        run(loop, AsyncEngineClient.start(engine_config(settings)), 120)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_idle_engine_does_not_spin(loop, client):
    run(loop, _until(lambda: client.stats().get("running") == 0))
    before = _cpu_seconds(client.pid)
    run(loop, asyncio.sleep(1.0))
    assert _cpu_seconds(client.pid) - before < 0.2


def test_ctrl_c_in_the_terminal_does_not_kill_the_engine(loop, client):
    os.kill(client.pid, signal.SIGINT)          # what the terminal sends to the whole process group
    prompt = client.tokenizer.encode("Hello")

    async def one():
        return [d async for d in client.generate("after-sigint", prompt,
                                                 SamplingParams(greedy=True, max_new_tokens=3, ignore_eos=True))]

    assert run(loop, one())[-1].completion_tokens == 3
    assert client.is_alive()


@pytest.fixture(scope="module")
def samples_client(loop, demo_model_dir, tmp_path_factory):
    """Room for two running samples; a third waits, and times out after 2 s."""
    settings = _settings(demo_model_dir, tmp_path_factory, max_num_seqs=2, max_waiting_requests=4,
                         queue_timeout_seconds=2.0)
    client = run(loop, AsyncEngineClient.start(engine_config(settings)), 120)
    yield client
    run(loop, client.shutdown())


def test_a_stream_of_samples_ends_after_every_samples_final_delta(loop, samples_client, make_engine, h):
    client = samples_client
    prompt = client.tokenizer.encode("Tell me about the Great Wall of China.")
    params = SamplingParams(seed=21, temperature=1.0, max_new_tokens=6, ignore_eos=True, n=2, logprobs=1)

    async def collect():
        return [d async for d in client.generate("n2", prompt, params)]

    deltas = run(loop, collect())
    assert sorted(d.index for d in deltas if d.finished) == [0, 1]
    engine = make_engine()
    engine.add_request("n2", prompt, params)
    local = h.run_all(engine)["n2"]
    for i in (0, 1):
        got = [d for d in deltas if d.index == i]
        assert h.tokens_of(got) == h.tokens_of([d for d in local if d.index == i])
        assert [e.token_id for d in got for e in d.logprobs] == h.tokens_of(got)
        assert got[-1].finished and got[-1].completion_tokens == 6


def test_a_failed_sample_raises_and_aborts_the_others(loop, samples_client):
    client = samples_client
    prompt = client.tokenizer.encode("Count to a thousand.")
    aborts = _aborts(client)

    async def scenario():
        stream = client.generate("n3", prompt, SamplingParams(greedy=True, max_new_tokens=1000, ignore_eos=True, n=3))
        with pytest.raises(QueueTimeout):                # sample 2 waits behind samples 0 and 1 past 2 s
            async for _ in stream:
                pass

    run(loop, scenario())
    run(loop, _until(_idle_after_aborts(client, aborts + 2)))


def test_closing_a_stream_of_samples_aborts_them_all(loop, samples_client):
    client = samples_client
    prompt = client.tokenizer.encode("Please introduce yourself.")
    aborts = _aborts(client)

    async def close_early():
        stream = client.generate("c2", prompt, SamplingParams(seed=1, max_new_tokens=1000, ignore_eos=True, n=2))
        got = [await stream.__anext__() for _ in range(3)]
        await stream.aclose()
        return got

    assert not any(d.finished for d in run(loop, close_early()))
    run(loop, _until(_idle_after_aborts(client, aborts + 2)))


def test_more_samples_than_the_engine_can_queue_are_refused_before_the_first_delta(loop, client):
    prompt = client.tokenizer.encode("Hello")

    async def refused():
        await client.generate("n2", prompt, SamplingParams(max_new_tokens=4, n=2)).__anext__()

    with pytest.raises(RequestRejected, match=r"^n=2 samples can never be queued at once"):
        run(loop, refused())
