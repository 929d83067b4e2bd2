"""Fixtures shared by every test folder."""
from __future__ import annotations

import os
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
