"""Fixtures for the model tests: tiny random Hugging Face GPT-NeoX directories and a reference greedy loop."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache

BLOCK_SIZE = 8


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory) -> Path:
    """A small byte-level BPE tokenizer.json (the demo model's), for directories that need one."""
    from neoxserve.model.demo import build_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    path.write_text(build_tokenizer().to_str())
    return path


@pytest.fixture(scope="session")
def make_hf_model(tmp_path_factory, tokenizer_json):
    """make(**config) -> (transformers GPTNeoXForCausalLM in fp32 eval mode, directory saved with save_pretrained).

    Weights use a large initializer_range so logits are far from uniform and greedy argmax is well defined.
    """
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cache: dict = {}

    def make(seed: int = 0, **overrides):
        key = (seed, tuple(sorted(overrides.items())))
        if key in cache:
            return cache[key]
        kwargs = dict(vocab_size=960, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=256, rotary_pct=0.25, max_position_embeddings=512,
                      use_parallel_residual=True, initializer_range=0.2, bos_token_id=0, eos_token_id=None,
                      pad_token_id=None)
        kwargs.update(overrides)
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**kwargs)).eval()
        with torch.no_grad():  # the default init leaves biases at 0 and norms at 1: perturb them so they matter
            for name, p in model.named_parameters():
                if name.endswith("bias") or "layernorm" in name or "layer_norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        path = tmp_path_factory.mktemp("hf-model")
        model.save_pretrained(path)
        shutil.copy(tokenizer_json, path / "tokenizer.json")
        cache[key] = (model, path)
        return cache[key]

    return make


class Runner:
    """Drives one sequence through a model with a contiguous block table: prefill, then one token per step."""

    def __init__(self, model, max_tokens: int, dtype=torch.float32):
        cfg = model.cfg
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
