"""The demo model: deterministic bytes, loads, a working tokenizer, written once into the data directory."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from neoxserve.model.demo import ensure_demo_model, write_demo_model
from neoxserve.model.loader import load_model


def _digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_same_seed_same_bytes_in_another_process(demo_model_dir, tmp_path):
    # another interpreter: BPE training and hashing must not depend on per-process state
    code = "import sys; from neoxserve.model.demo import write_demo_model; write_demo_model(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "again")], check=True)
    assert _digests(tmp_path / "again") == _digests(demo_model_dir)
    assert set(_digests(demo_model_dir)) == {"README.md", "config.json", "model.safetensors", "tokenizer.json"}


def test_other_seed_other_weights(demo_model_dir, tmp_path):
    write_demo_model(tmp_path, seed=1)
    a, b = _digests(demo_model_dir), _digests(tmp_path)
    assert a["model.safetensors"] != b["model.safetensors"]
    assert a["tokenizer.json"] == b["tokenizer.json"]


def test_config_and_readme(demo_model_dir):
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["architectures"] == ["GPTNeoXForCausalLM"]
    assert config["vocab_size"] % 64 == 0
    assert "random" in (demo_model_dir / "README.md").read_text()


def test_tokenizer(demo_model_dir):
    tok = load_model(demo_model_dir).tokenizer
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    assert 900 <= tok.vocab_size <= json.loads((demo_model_dir / "config.json").read_text())["vocab_size"]
    assert tok.is_chat
    for text in ["The city of Beijing is the capital of China.", "北京是中国的首都，有着三千多年的历史。",
                 "mixed 混合 text, émoji 🙂 and\nnewlines  "]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
    assert len(tok.encode("The city of Beijing")) < len(b"The city of Beijing")  # merges were learned
    chat = tok.encode("<|SYSTEM|>be brief<|USER|>hi<|ASSISTANT|>")
    assert tok.token_to_id("<|USER|>") in chat and tok.token_to_id("<|ASSISTANT|>") in chat


def test_logits_are_not_degenerate(demo_model_dir, runner_cls):
    loaded = load_model(demo_model_dir)
    logits = runner_cls(loaded.model, 16).step(loaded.tokenizer.encode("The city of Beijing is"))[-1]
    probs = logits.softmax(-1)
    entropy = float(-(probs * probs.log()).sum())
    assert torch.isfinite(logits).all()
    assert entropy < 0.8 * torch.log(torch.tensor(float(logits.numel())))  # clearly below uniform


def test_ensure_demo_model_writes_once(tmp_path):
    path = ensure_demo_model(tmp_path)
    assert path == tmp_path / "demo-random-model" and (path / "model.safetensors").is_file()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["demo-random-model"]  # no temporary directory left behind
