"""Engine test fixtures: the demo model loaded once, engines built from settings overrides, a step driver."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.config import EngineConfig
from neoxserve.engine.core import LLMEngine
from neoxserve.engine.outputs import Delta

MAX_STEPS = 5000


@pytest.fixture(scope="session")
def demo_loaded(demo_model_dir):
    from neoxserve.model.loader import load_model
    return load_model(demo_model_dir, dtype="float32")   # fp32 whatever auto picks on this CPU


@pytest.fixture(scope="session")
def tiny_loaded(demo_model_dir):
    """A small random NeoX of another shape (sequential residual, full rotary) with the demo tokenizer."""
    from neoxserve.model.config import NeoXConfig
    from neoxserve.model.loader import LoadedModel
    from neoxserve.model.neox import GPTNeoX
    from neoxserve.model.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(demo_model_dir)
    cfg = NeoXConfig(vocab_size=-(-tokenizer.vocab_size // 64) * 64, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=128, rotary_pct=1.0, max_position_embeddings=256,
                     use_parallel_residual=False)
    torch.manual_seed(0)
    model = GPTNeoX(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.init_rotary()
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, config=cfg, tokenizer=tokenizer, path=Path(demo_model_dir))


def small_config(**overrides) -> EngineConfig:
    """The engine config of the default settings on the random-weight model (the engines here get demo_loaded or
    tiny_loaded), with a small KV pool (allocating 512 MB per engine is slow)
    unless overridden."""
    return replace(engine_config(Settings(model="demo-random", kv_cache_memory_mb=16)), **overrides)


@pytest.fixture
def make_engine(demo_loaded):
    def make(loaded=None, **overrides) -> LLMEngine:
        return LLMEngine(loaded or demo_loaded, small_config(**overrides))
    return make


def run_all(engine: LLMEngine, max_steps: int = MAX_STEPS) -> dict[str, list[Delta]]:
    """Step until nothing is left; every request's deltas in order."""
    out: dict[str, list[Delta]] = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return out
        for d in engine.step():
            out.setdefault(d.request_id, []).append(d)
    raise AssertionError(f"engine still busy after {max_steps} steps")


def tokens_of(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def fail_step(engine: LLMEngine, step: int, message: str) -> None:
    """Make the runner's `step`-th call (1-based) raise RuntimeError(message); the other calls run normally."""
    run = engine.runner.run
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise RuntimeError(message)
        return run(batch)

    engine.runner.run = flaky


class Helpers:
    run_all = staticmethod(run_all)
    fail_step = staticmethod(fail_step)
    tokens_of = staticmethod(tokens_of)
    text_of = staticmethod(text_of)
    config = staticmethod(small_config)


@pytest.fixture
def h() -> type[Helpers]:
    """Helpers (importlib import mode cannot import conftest from test modules)."""
    return Helpers
