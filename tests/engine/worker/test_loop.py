"""The engine process's loop (engine/worker/loop.py): acks by kind, aborts, shutdown, loud on unknown messages;
the per-shape GEMM caches it bounds."""
from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing import Pipe

import pytest

from neoxserve.engine.errors import EngineOverloaded, RequestRejected
from neoxserve.engine.protocol import AbortRequest, Ack, AckError, AddRequest, Output, ProtocolError, Shutdown
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker import loop


class _StubEngine:
    """Just enough of LLMEngine for the process loop: add_request behaves as told, nothing ever runs."""

    def __init__(self, add_error: Exception | None = None) -> None:
        self.add_error = add_error
        self.aborted: list[str] = []

    def add_request(self, request_id, prompt_token_ids, params) -> None:
        if self.add_error is not None:
            raise self.add_error

    def abort(self, request_id: str) -> bool:
        self.aborted.append(request_id)
        return True

    def has_unfinished(self) -> bool:
        return False

    def stats(self) -> dict:
        return {}


def _run_loop(engine, *messages) -> list:
    """Feed messages to the engine loop; what it sent back until it returned (on Shutdown)."""
    requests_read, requests_write = Pipe(duplex=False)
    outputs_read, outputs_write = Pipe(duplex=False)
    for msg in messages:
        requests_write.send(msg)
    loop._loop(engine, requests_read, outputs_write)
    sent = []
    while outputs_read.poll(0):
        sent.append(outputs_read.recv())
    return sent


@pytest.mark.parametrize("error,kind", [
    (EngineOverloaded("queue full"), AckError.OVERLOADED),
    (RequestRejected("too long"), AckError.REJECTED),
    (KeyError("a bug"), AckError.INTERNAL),
])
def test_add_errors_are_acked_by_kind(error, kind):
    ack = loop._add(_StubEngine(error), AddRequest("r1", [1, 2], SamplingParams()))
    assert ack == Ack("r1", kind, str(error) if kind is not AckError.INTERNAL else "KeyError: 'a bug'")
    assert loop._add(_StubEngine(), AddRequest("r2", [1], SamplingParams())) == Ack("r2")


def test_the_loop_aborts_stops_on_shutdown_and_raises_on_unknown_messages():
    engine = _StubEngine()
    assert _run_loop(engine, AbortRequest("a1"), Shutdown()) == [Output(stats={})]   # the idle stats push
    assert engine.aborted == ["a1"]
    with pytest.raises(ProtocolError, match="unknown message: \\('add', 'r1'\\)"):
        _run_loop(engine, ("add", "r1"))


_GEMM_CACHE_PROBE = """
import os, random, sys
from neoxserve.engine.worker.loop import GEMM_CACHE_VARIABLES, bound_gemm_caches
bound_gemm_caches()
print([os.environ[name] for name in GEMM_CACHE_VARIABLES])
import torch, torch.nn.functional as F
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
torch.set_num_threads(1)
w = torch.randn(1536, 512, dtype=torch.bfloat16)
token_counts = random.Random(0).sample(range(1, 1500), 600)
for m in token_counts[:200]:
    F.linear(torch.randn(m, 512, dtype=torch.bfloat16), w)
filled = rss_mb()
for m in token_counts[200:]:
    F.linear(torch.randn(m, 512, dtype=torch.bfloat16), w)
print(round(rss_mb() - filled, 1))
"""


def _run_gemm_cache_probe(env_overrides: dict[str, str]) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    # a fixed mmap threshold: glibc's heap fragmentation under activations of every size is not what is measured
    env.update(env_overrides, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", _GEMM_CACHE_PROBE], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr
    values, growth = result.stdout.strip().splitlines()
    return values, float(growth)


def test_the_engine_bounds_the_per_shape_gemm_caches():
    # 400 bf16 GEMMs of token counts not seen before, once 200 have filled the caches: bounded caches evict
    values, growth = _run_gemm_cache_probe({})
    assert values == "['128', '128']"
    assert growth < 20, f"RSS grew {growth} MB over 400 new GEMM shapes with the caches bounded"


def test_an_operators_gemm_cache_capacity_wins():
    # oneDNN's and ideep's defaults (1024 entries each): the same 400 shapes keep the memory they were given
    values, growth = _run_gemm_cache_probe({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"})
    assert values == "['1024', '1024']"
    assert growth > 100, f"RSS grew only {growth} MB with unbounded caches: the probe no longer shows the growth"
