"""Fixtures for the model tests: a paged runner for one sequence and a reference greedy loop (the tiny random
Hugging Face GPT-NeoX directories are in tests/conftest.py: the engine tests use them too)."""
from __future__ import annotations

import pytest
import torch

from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache

BLOCK_SIZE = 8


class Runner:
    """Drives one sequence through a model with a contiguous block table: prefill, then one token per step."""

    def __init__(self, model, max_tokens: int, dtype: torch.dtype | None = None):
        cfg = model.cfg
        dtype = dtype or model.cache_dtype()   # the model's own: bfloat16 where `auto` picked it
        self.model = model
        self.num_blocks = -(-max_tokens // BLOCK_SIZE)
        self.kv = allocate_kv_cache(cfg, self.num_blocks, BLOCK_SIZE, dtype, "cpu")
        self.table = list(range(self.num_blocks))
        self.n = 0

    def step(self, ids: list[int]) -> torch.Tensor:
        """Feed new tokens; return float32 logits [len(ids), V]."""
        q = len(ids)
        meta = AttentionMetadata.build([q], [self.n + q], [self.table], BLOCK_SIZE)
        with torch.inference_mode():
            hidden = self.model(torch.tensor(ids), torch.arange(self.n, self.n + q), meta, self.kv)
            self.n += q
            return self.model.compute_logits(hidden)


def greedy(model, prompt: list[int], new_tokens: int) -> tuple[list[int], list[float], torch.Tensor]:
    """(generated ids, top1-top2 logit margin at each step, prompt logits)."""
    runner = Runner(model, len(prompt) + new_tokens)
    prompt_logits = runner.step(prompt)
    logits = prompt_logits[-1]
    out, margins = [], []
    for _ in range(new_tokens):
        top = logits.topk(2).values
        margins.append(float(top[0] - top[1]))
        out.append(int(logits.argmax()))
        logits = runner.step(out[-1:])[-1]
    return out, margins, prompt_logits


@pytest.fixture
def runner_cls():
    return Runner


@pytest.fixture
def greedy_loop():
    return greedy


def variant_params(names=None) -> list:
    """The kernels variants `names` (default all), each skipped where this CPU lacks one of its flags (named in the
    reason); the ones it has run, so a kernel test runs once per variant this machine can run."""
    from neoxserve.model import kernels

    params = []
    for name in names or kernels.VARIANTS:
        missing = kernels.missing_flags(name)
        marks = [pytest.mark.skip(reason=f"kernels {name}: this CPU lacks {', '.join(missing)}")] if missing else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def _selected(name: str):
    from neoxserve.model import kernels

    error = kernels._build(name)
    if error:
        pytest.fail(f"kernels {name} did not build on a CPU that has their flags: {error}")
    return kernels.use(name)


@pytest.fixture(params=variant_params())
def kernel_variant(request):
    """The test runs with this kernels variant selected (kernels.use), built if needed; must build here."""
    with _selected(request.param):
        yield request.param


@pytest.fixture(params=variant_params(["avx512_bf16"]))
def bf16_variant(request):
    """As kernel_variant, for the variants with the bf16 x bf16 GEMV."""
    with _selected(request.param):
        yield request.param


@pytest.fixture(params=variant_params(["avx2", "avx512", "avx512_vnni"]))
def no_bf16_variant(request):
    """As kernel_variant, for the variants without the bf16 x bf16 GEMV."""
    with _selected(request.param):
        yield request.param


@pytest.fixture(params=variant_params(["avx512_vnni", "avx512_bf16"]))
def vnni_variant(request):
    """As kernel_variant, for the variants with the VNNI GEMM over packed tiles (int8_gemm, int4_gemm)."""
    with _selected(request.param):
        yield request.param


@pytest.fixture(params=variant_params(["avx2", "avx512"]))
def no_vnni_variant(request):
    """As kernel_variant, for the variants without the VNNI GEMM."""
    with _selected(request.param):
        yield request.param
