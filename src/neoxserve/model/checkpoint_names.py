"""Checkpoint tensor names <-> the module's parameter names (GPTNeoXForCausalLM's, without `gpt_neox.`)."""
from __future__ import annotations

# Buffers some checkpoints carry that are not parameters (causal mask, rotary frequencies): skipped.
LEGACY_SUFFIXES = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")


def module_name(ckpt_name: str) -> str:
    if ckpt_name == "lm_head.weight":  # transformers 5's in-memory name for embed_out
        return "embed_out.weight"
    return ckpt_name.removeprefix("gpt_neox.")


def checkpoint_name(name: str) -> str:
    return name if name.startswith("embed_out.") else f"gpt_neox.{name}"
