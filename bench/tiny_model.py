"""A one-layer random GPT-NeoX (hidden 64) around an existing tokenizer.json, for benchmarks and tests that need
that tokenizer's behaviour (the real GPT-NeoX vocabulary, say), not a model's: bench/health_latency.py and
tests/api/test_limits.py. It imports neoxserve from the path its importer set up."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file
from tokenizers import Tokenizer

from neoxserve.model.demo import demo_config, random_weights


def write_tiny_model(path: str | Path, tokenizer_file: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_file, path / "tokenizer.json")
    vocab = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    config = {**demo_config(vocab), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1}
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(random_weights(config, seed), str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
