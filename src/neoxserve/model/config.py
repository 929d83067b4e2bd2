"""NeoXConfig: the GPT-NeoX hyperparameters, parsed from a Hugging Face `config.json`.

Two key styles exist: transformers 4.x wrote `rotary_pct` / `rotary_emb_base`; transformers 5 writes
`rope_parameters: {partial_rotary_factor, rope_theta}`. Both are read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURE = "GPTNeoXForCausalLM"


class UnsupportedModelError(ValueError):
    """config.json describes a model this engine cannot run (or is not a model config at all)."""


@dataclass(frozen=True)
class NeoXConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000.0
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    bos_token_id: int | None = 0
    eos_token_id: int | None = 0
    torch_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise UnsupportedModelError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        if self.rotary_dim % 2:
            raise UnsupportedModelError(f"rotary dimension {self.rotary_dim} must be even")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeoXConfig:
        archs = d.get("architectures") or [SUPPORTED_ARCHITECTURE]
        arch = archs[0]
        if arch == "StableLMAlphaForCausalLM":
            raise UnsupportedModelError(
                "StableLMAlphaForCausalLM (StableLM-Alpha v2) is not supported yet; "
                "only GPTNeoXForCausalLM (StableLM-Alpha v1) models can be served")
        if arch != SUPPORTED_ARCHITECTURE:
            raise UnsupportedModelError(
                f"architecture {arch!r} is not supported; expected {SUPPORTED_ARCHITECTURE}")
        if d.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedModelError(f"hidden_act {d['hidden_act']!r} is not supported; expected 'gelu'")
        if d.get("tie_word_embeddings", False):
            raise UnsupportedModelError("tie_word_embeddings=true is not supported (GPT-NeoX has an untied embed_out)")

        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if rope.get("rope_type", "default") != "default":
            raise UnsupportedModelError(f"rope_type {rope['rope_type']!r} is not supported; expected 'default'")
        rotary_pct = d.get("rotary_pct", rope.get("partial_rotary_factor", 0.25))
        rotary_base = d.get("rotary_emb_base", rope.get("rope_theta", 10000.0))

        try:
            return cls(
                vocab_size=int(d["vocab_size"]),
                hidden_size=int(d["hidden_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]),
                num_attention_heads=int(d["num_attention_heads"]),
                intermediate_size=int(d["intermediate_size"]),
                rotary_pct=float(rotary_pct),
                rotary_emb_base=float(rotary_base),
                max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
                layer_norm_eps=float(d.get("layer_norm_eps", 1e-5)),
                use_parallel_residual=bool(d.get("use_parallel_residual", True)),
                bos_token_id=_single_id(d.get("bos_token_id", 0)),
                eos_token_id=_single_id(d.get("eos_token_id", 0)),
                torch_dtype=str(d.get("torch_dtype") or d.get("dtype") or "float32"),
            )
        except KeyError as e:
            raise UnsupportedModelError(f"missing key {e.args[0]!r}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> NeoXConfig:
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise UnsupportedModelError(f"not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise UnsupportedModelError("not a JSON object")
        return cls.from_dict(d)


def _single_id(value: Any) -> int | None:   # a JSON value
    if isinstance(value, list):  # some configs list several eos ids; the first is the canonical one
        value = value[0] if value else None
    return None if value is None else int(value)
