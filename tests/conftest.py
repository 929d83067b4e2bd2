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
