"""Load a Hugging Face GPT-NeoX directory into a GPTNeoX module, one tensor at a time.

The module is built on the meta device (no memory), then every checkpoint tensor is read (safetensors
`safe_open`, or `torch.load(mmap=True)` for pickle shards), checked against the config, converted to the target
dtype and device, and assigned. Only one source tensor is in flight at a time, so a fp32 checkpoint becomes a bf16
model without ever holding a fp32 copy of the whole model.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import torch
from torch import Tensor
from tqdm import tqdm

from neoxserve.model.config import NeoXConfig, UnsupportedModelError
from neoxserve.model.neox import GPTNeoX, Linear
from neoxserve.model.tokenizer import Tokenizer

# Buffers some checkpoints carry that are not parameters (causal mask, rotary frequencies): skipped.
LEGACY_SUFFIXES = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(Exception):
    """The model directory cannot be loaded; the message names the file (and tensor)."""


@dataclass
class LoadedModel:
    model: GPTNeoX
    config: NeoXConfig
    tokenizer: Tokenizer
    path: Path


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", dtype: str = "auto") -> LoadedModel:
    path = Path(model_dir)
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist")
    config = read_config(path)
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{tokenizer_file} is missing (the model directory needs its tokenizer.json)")
    device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, config, device)

    with torch.device("meta"):
        model = GPTNeoX(config, linear_splits=linear_splits(torch_dtype, device))
    state = load_state_dict(path, config, model, torch_dtype, device)
    model.load_state_dict(state, assign=True, strict=True)
    model.init_rotary()
    model.eval().requires_grad_(False)

    return LoadedModel(model=model, config=config, tokenizer=Tokenizer.from_dir(path), path=path)


def read_config(path: Path) -> NeoXConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing")
    try:
        return NeoXConfig.from_file(config_file)
    except UnsupportedModelError as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def resolve_dtype(dtype: str, config: NeoXConfig, device: torch.device) -> torch.dtype:
    """`auto` is float32 on CPU and the checkpoint's 16-bit dtype (else bfloat16) on CUDA.

    float32 on CPU: on CPUs without bf16 units (AVX2 only) bf16 is converted in software and batched work gains
    nothing from it (the spec's measurement with transformers), and fp32 matches the reference exactly. Measured
    with bench/bench_decode.py on a CPU that has AVX512-BF16 (the 2-core AMD EPYC of docs/benchmarks.md):
    single-stream decode is about the same (fp32 68 tok/s, bf16 67-88), but 16 sequences decoding together run
    745 tok/s in bf16 vs 378 in fp32. On such CPUs pass dtype="bfloat16" for batched serving.
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
        return DTYPES[dtype]
    if device.type == "cpu":
        return torch.float32
    if config.torch_dtype in ("bfloat16", "float16"):
        return DTYPES[config.torch_dtype]
    return torch.bfloat16


def linear_splits(dtype: torch.dtype, device: torch.device) -> int:
    """float32 on CPU splits linear weights across the torch threads (see neox.Linear); others keep nn.Linear's."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" and dtype == torch.float32 else 0


def load_state_dict(path: Path, config: NeoXConfig, model: GPTNeoX, dtype: torch.dtype,
                    device: torch.device) -> dict[str, Tensor]:
    linears = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, Linear)}
    # shapes as the checkpoint stores them ([out, in] for every linear weight)
    expected = {name: (linears[name].out_features, linears[name].in_features) if name in linears else tuple(p.shape)
                for name, p in model.named_parameters()}
    files = weight_files(path)
    state: dict[str, Tensor] = {}
    bar = tqdm(total=len(expected), desc="Loading weights", unit="tensor", file=sys.stderr,
               disable=not sys.stderr.isatty())
    with bar:
        for file in files:
            for ckpt_name, read in _tensors(file):
                if ckpt_name.endswith(LEGACY_SUFFIXES):
                    continue
                name = _module_name(ckpt_name)
                if name not in expected:
                    raise CheckpointError(f"{file}: unexpected tensor {ckpt_name!r} (not part of GPTNeoXForCausalLM)")
                tensor = _read(file, ckpt_name, read)
                if tuple(tensor.shape) != expected[name]:
                    raise CheckpointError(
                        f"{file}: tensor {ckpt_name!r} has shape {list(tensor.shape)}, but config.json implies "
                        f"{list(expected[name])}")
                state[name] = _convert(name, tensor, config, dtype, device, linears.get(name))
                bar.update(1)
    missing = [n for n in expected if n not in state]
    if missing:
        where = ", ".join(f.name for f in files)
        raise CheckpointError(f"{path}: tensor {_checkpoint_name(missing[0])!r} is missing from {where}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return state


def weight_files(path: Path) -> list[Path]:
    """The weight files of a directory, preferring safetensors; index files must name shards that exist."""
    for index_name, single_name in (("model.safetensors.index.json", "model.safetensors"),
                                    ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{index}: not a valid weight index ({e})") from None
            for shard in shards:
                if not (path / shard).is_file():
                    raise CheckpointError(f"{index}: names shard {shard}, which is missing")
            return [path / shard for shard in shards]
        if (path / single_name).is_file():
            return [path / single_name]
    raise CheckpointError(f"{path}: no weights found (model.safetensors, pytorch_model.bin or their sharded index)")


def _tensors(file: Path) -> Iterator[tuple[str, Any]]:
    """(name, zero-argument reader) for every tensor in one weight file."""
    try:
        if file.suffix == ".safetensors":
            from safetensors import safe_open
            handle = safe_open(str(file), framework="pt", device="cpu")
            names = list(handle.keys())
            readers = {n: (lambda n=n: handle.get_tensor(n)) for n in names}
        else:
            pickled = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            if not isinstance(pickled, dict):
                raise ValueError("not a state dict")
            readers = {n: (lambda t=t: t) for n, t in pickled.items()}
    except Exception as e:  # corrupt or truncated files raise many different types
        raise CheckpointError(f"{file}: cannot read weight file (truncated or corrupt?): {e}") from None
    yield from readers.items()


def _read(file: Path, name: str, read) -> Tensor:
    try:
        tensor = read()
    except Exception as e:
        raise CheckpointError(f"{file}: cannot read tensor {name!r} (truncated or corrupt?): {e}") from None
    if not isinstance(tensor, Tensor):
        raise CheckpointError(f"{file}: entry {name!r} is not a tensor")
    return tensor


def _module_name(ckpt_name: str) -> str:
    if ckpt_name == "lm_head.weight":  # transformers 5's in-memory name for embed_out
        return "embed_out.weight"
    return ckpt_name.removeprefix("gpt_neox.")


def _checkpoint_name(name: str) -> str:
    return name if name == "embed_out.weight" else f"gpt_neox.{name}"


def _convert(name: str, tensor: Tensor, config: NeoXConfig, dtype: torch.dtype, device: torch.device,
             linear: Linear | None) -> Tensor:
    if name.endswith("attention.query_key_value.weight") or name.endswith("attention.query_key_value.bias"):
        # checkpoint: per head [nh, 3, hd, ...]; module: [3, nh, hd, ...] (q heads | k heads | v heads)
        nh, hd = config.num_attention_heads, config.head_dim
        tensor = tensor.view(nh, 3, hd, -1).transpose(0, 1).reshape(tensor.shape)
    if linear is not None:
        tensor = linear.load_layout(tensor)
    # A no-op when dtype and device already match: the tensor then stays backed by the mapped file.
    return tensor.to(device=device, dtype=dtype).contiguous()
