"""Random GPT-NeoX model directories for the benchmarks: a shape by name, seeded weights, the real tokenizer.

The weights are what neoxserve loads (a Hugging Face directory: config.json, sharded bf16 safetensors with an
index, tokenizer.json) and what bench/neox_gguf.py converts for llama.cpp. They are chosen so that both programs
get exactly the same numbers:
- drawn as normal(0, 0.02) (transformers' init), rounded to bf16, and values below f16's normal range (2**-14)
  set to 0, so every weight is exact in bf16, f16 and f32 alike;
- biases and LayerNorm weights are random too (not 0 / 1), so that a wrong layout of any of them shows in the
  llama.cpp agreement check;
- the output-head rows of `<|endoftext|>` (id 0) and of the padded ids past the tokenizer are zero: their logit
  is then exactly 0, far below the largest of 50k others, so no request ends early or emits an id without text,
  and every request generates exactly the tokens it asked for, in neoxserve and llama.cpp alike.
One shard per layer (plus one for the embeddings, one for the head) keeps the writer's memory at one layer.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "assets" / "gpt-neox-20b-tokenizer.json"
TOKENIZER_SIZE = 50277           # ids of the GPT-NeoX-20B tokenizer; the embeddings are padded past it
INIT_STD = 0.02
F16_MIN_NORMAL = 2.0 ** -14

# Context 4096 for both (StableLM-Alpha's), so a 2048-token prompt plus its output fits; speed does not depend
# on it. Pythia-160M itself has 2048.
SHAPES = {
    "pythia-160m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        vocab_size=50432),
    "stablelm-3b": dict(hidden_size=4096, num_hidden_layers=16, num_attention_heads=32, intermediate_size=16384,
                        vocab_size=50688),
}
COMMON = dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", rotary_pct=0.25,
              rotary_emb_base=10000, max_position_embeddings=4096, layer_norm_eps=1e-5, use_parallel_residual=True,
              hidden_act="gelu", tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, torch_dtype="bfloat16")
FORMAT = "random-neox-v1"        # bump when the weights written here change, so cached directories are rewritten


def config_for(shape: str) -> dict:
    return {**COMMON, **SHAPES[shape]}


def parameter_count(config: dict) -> int:
    H, F, V, L = (config[k] for k in ("hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers"))
    per_layer = 4 * H + (3 * H * H + 3 * H) + (H * H + H) + (F * H + F) + (H * F + H)
    return 2 * V * H + L * per_layer + 2 * H


def _weights(g: torch.Generator, *shape: int) -> torch.Tensor:
    w = (torch.randn(*shape, generator=g) * INIT_STD).to(torch.bfloat16)
    w[w.abs() < F16_MIN_NORMAL] = 0
    return w


def _layer(g: torch.Generator, config: dict, i: int) -> dict[str, torch.Tensor]:
    H, F = config["hidden_size"], config["intermediate_size"]
    p = f"gpt_neox.layers.{i}."
    out = {}
    for norm in ("input_layernorm", "post_attention_layernorm"):
        out[p + norm + ".weight"] = (1 + _weights(g, H).float()).to(torch.bfloat16)
        out[p + norm + ".bias"] = _weights(g, H)
    for name, (rows, cols) in {"attention.query_key_value": (3 * H, H), "attention.dense": (H, H),
                               "mlp.dense_h_to_4h": (F, H), "mlp.dense_4h_to_h": (H, F)}.items():
        out[p + name + ".weight"] = _weights(g, rows, cols)
        out[p + name + ".bias"] = _weights(g, rows)
    return out


def _head(g: torch.Generator, config: dict) -> dict[str, torch.Tensor]:
    H = config["hidden_size"]
    head = _weights(g, config["vocab_size"], H)
    head[0] = 0                          # <|endoftext|>
    head[TOKENIZER_SIZE:] = 0            # padded ids: no text
    return {"gpt_neox.final_layer_norm.weight": (1 + _weights(g, H).float()).to(torch.bfloat16),
            "gpt_neox.final_layer_norm.bias": _weights(g, H), "embed_out.weight": head}


def write_model(path: Path, shape: str, seed: int = 0) -> Path:
    """Write the model directory at `path` unless a complete one of the same shape, seed and format is there."""
    config = config_for(shape)
    stamp = hashlib.sha256(json.dumps([FORMAT, config, seed, TOKENIZER.read_text(encoding="utf-8")],
                                      sort_keys=True).encode()).hexdigest()
    if (path / "stamp").is_file() and (path / "stamp").read_text() == stamp:
        return path
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    L = config["num_hidden_layers"]
    shards = [lambda: {"gpt_neox.embed_in.weight": _weights(g, config["vocab_size"], config["hidden_size"])}]
    shards += [lambda i=i: _layer(g, config, i) for i in range(L)]
    shards += [lambda: _head(g, config)]
    weight_map = {}
    for n, make in enumerate(shards, 1):
        name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        tensors = make()
        save_file(tensors, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map},
                                                                  indent=1))
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(TOKENIZER, path / "tokenizer.json")
    (path / "stamp").write_text(stamp)
    return path
