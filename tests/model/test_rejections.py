"""Config and checkpoint inputs the loader refuses, with their exact messages."""
from __future__ import annotations

import re
import shutil

import pytest
import torch

from neoxserve.model.config import NeoXConfig, UnsupportedModelError
from neoxserve.model.dtype_policy import resolve_dtype
from neoxserve.model.loader import CheckpointError, load_model

BASE = dict(architectures=["GPTNeoXForCausalLM"], vocab_size=960, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=256)


def _exact(message: str) -> str:
    return f"^{re.escape(message)}$"


@pytest.mark.parametrize("change,message", [
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}},
     "rope_type 'linear' is not supported; expected 'default'"),
    ({"rotary_pct": 0.2}, "rotary dimension 3 must be even"),
])
def test_config_refusals(change, message):
    with pytest.raises(UnsupportedModelError, match=_exact(message)):
        NeoXConfig.from_dict({**BASE, **change})


@pytest.mark.parametrize("text,message", [("{", "not valid JSON: "), ("[1, 2]", "not a JSON object")])
def test_config_file_that_is_not_a_json_object(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(UnsupportedModelError, match="^" + re.escape(message)):
        NeoXConfig.from_file(path)


def test_unknown_dtype():
    with pytest.raises(ValueError, match=_exact("dtype must be auto, float32, bfloat16, float16; got 'int8'")):
        resolve_dtype("int8", NeoXConfig(**{k: v for k, v in BASE.items() if k != "architectures"}),
                      torch.device("cpu"))


def _model_dir(tmp_path, demo_model_dir):
    d = tmp_path / "m"
    d.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(demo_model_dir / name, d / name)
    return d


@pytest.mark.parametrize("index", ['{"weight_map": 3}', '{"metadata": {}}', "not json"])
def test_invalid_weight_index(tmp_path, demo_model_dir, index):
    d = _model_dir(tmp_path, demo_model_dir)
    (d / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError,
                       match="^" + re.escape(f"{d / 'model.safetensors.index.json'}: not a valid weight index (")):
        load_model(d)


def test_pickle_entry_that_is_not_a_tensor(tmp_path, demo_model_dir):
    d = _model_dir(tmp_path, demo_model_dir)
    torch.save({"gpt_neox.embed_in.weight": [1, 2, 3]}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=_exact(
            f"{d / 'pytorch_model.bin'}: entry 'gpt_neox.embed_in.weight' is not a tensor")):
        load_model(d)


def test_pickle_that_is_not_a_state_dict(tmp_path, demo_model_dir):
    d = _model_dir(tmp_path, demo_model_dir)
    torch.save([torch.zeros(2)], d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=_exact(
            f"{d / 'pytorch_model.bin'}: cannot read weight file (truncated or corrupt?): not a state dict")):
        load_model(d)
