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
