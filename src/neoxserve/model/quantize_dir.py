"""Write a quantized copy of a Hugging Face GPT-NeoX directory (`neoxserve quantize`).

The copy is a Hugging Face-style directory: safetensors shards (with model.safetensors.index.json when there is more
than one), config.json with a `quantization_config` entry (quant_format.QuantConfig.to_hf), and the tokenizer files.
Every linear weight (the layer linears and embed_out) is stored in quant_format's portable layout under the
checkpoint's own names plus `weight_scale` / `weight_zero`; every other tensor is copied as stored. Tensors are
read, quantized and written one shard at a time, so memory stays near one shard's size.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from neoxserve.model.errors import CheckpointError
from neoxserve.model.loader import checkpoint_entries, iter_checkpoint, read_config
from neoxserve.model.neox import GPTNeoX, Linear
from neoxserve.model.quant_format import QuantConfig, QuantizationError, check_shape, quantize
from neoxserve.model.stored_quantization import read_quantization

# Copied beside the weights when present (tokenizer.json is required, as the loader requires it).
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "README.md", "LICENSE")
SHARD_BYTES = 2 * 2**30


def write_quantized(src: str | Path, out: str | Path, quant: QuantConfig, shard_bytes: int = SHARD_BYTES) -> Path:
    """Quantize the float checkpoint in `src` into the new directory `out` (which must not exist or be empty)."""
    src, out = Path(src), Path(out)
    if not quant.enabled:
        raise QuantizationError("choose int8 or int4 to write a quantized directory")
    if not src.is_dir():
        raise CheckpointError(f"model directory {src} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not an empty directory")
    config = read_config(src)
    if read_quantization(src) is not None:
        raise CheckpointError(f"{src} is quantized already; quantize its float checkpoint instead")
    if not (src / "tokenizer.json").is_file():
        raise CheckpointError(f"{src / 'tokenizer.json'} is missing (the model directory needs its tokenizer.json)")
    with torch.device("meta"):
        model = GPTNeoX(config)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, Linear)}
    try:
        for m in linears.values():
            check_shape(quant, m.out_features, m.in_features)
    except QuantizationError as e:
        raise CheckpointError(f"{src / 'config.json'}: {e}") from None

    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    files: list[str] = []
    weight_map: dict[str, str] = {}

    def flush() -> None:
        nonlocal size
        if shards[-1]:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shards[-1], out / name, metadata={"format": "pt"})
            files.append(name)
            weight_map.update({k: name for k in shards[-1]})
            shards[-1], size = {}, 0

    for name, _, tensor in iter_checkpoint(src, checkpoint_entries(model, QuantConfig(), False), "Quantizing"):
        lname, _, part = name.rpartition(".")
        entries = quantize(quant, tensor) if lname in linears and part == "weight" else {part: tensor}
        prefix = lname if lname == "embed_out" else f"gpt_neox.{lname}"
        for key, value in entries.items():
            shards[-1][f"{prefix}.{key}"] = value.contiguous()
            size += value.nbytes
        if size >= shard_bytes:
            flush()
    flush()
    _finish(src, out, quant, files, weight_map)
    return out


def _finish(src: Path, out: Path, quant: QuantConfig, files: list[str], weight_map: dict[str, str]) -> None:
    if len(files) == 1:
        (out / files[0]).rename(out / "model.safetensors")
    else:
        total = sum((out / f).stat().st_size for f in files)
        renamed = {f: f.replace(".safetensors", f"-of-{len(files):05d}.safetensors") for f in files}
        for old, new in renamed.items():
            (out / old).rename(out / new)
        index = {"metadata": {"total_size": total}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = quant.to_hf()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
