"""Fixtures shared by every test folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_ASSETS = REPO.parent / "shared" / "assets"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """../shared/assets: the real GPT-NeoX-20B tokenizer and its test vectors."""
    if not (SHARED_ASSETS / "gpt-neox-20b-tokenizer.json").exists():
        pytest.skip(f"shared assets not found at {SHARED_ASSETS} (the real tokenizer lives there)")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The embedded demo model written once per test session (deterministic from its seed)."""
    from neoxserve.model.demo import write_demo_model

    path = tmp_path_factory.mktemp("demo-model")
    write_demo_model(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def native_kernels() -> bool:
    """Build (or find in the cache) the native CPU kernels once, before any test starts an engine: on a fresh machine
    the build takes tens of seconds, which would otherwise fall inside whichever test loads a float32 or quantized
    model first, and inside its start-up timeout. False where they cannot be built (the loader then falls back)."""
    from neoxserve.model import kernels

    return kernels.load()

@pytest.fixture(scope="session")
def cpu_auto_dtype() -> str:
    """The dtype `--dtype auto` picks on this machine's CPU (dtype_policy.resolve_dtype: bfloat16 where the CPU has bf16
    units, float32 elsewhere), for tests that check what a server reports rather than one machine's answer."""
    import torch

    from neoxserve.model.config import NeoXConfig
    from neoxserve.model.demo import BPE_VOCAB_SIZE, demo_config
    from neoxserve.model.dtype_policy import DTYPES, resolve_dtype

    picked = resolve_dtype("auto", NeoXConfig.from_dict(demo_config(BPE_VOCAB_SIZE)), torch.device("cpu"))
    return next(name for name, dtype in DTYPES.items() if dtype == picked)


@pytest.fixture(scope="session")
def cpu_auto_kernels() -> str:
    """The native kernels' variant `kernels = auto` picks on this machine's CPU ("none" where none builds), for tests
    that check what a server reports rather than one machine's answer."""
    from neoxserve.model import kernels

    return kernels.auto_variant() or "none"


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
    import torch
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
