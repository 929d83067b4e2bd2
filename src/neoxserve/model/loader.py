"""Load a Hugging Face GPT-NeoX directory into a GPTNeoX module, one tensor at a time.

The module is built on the meta device (no memory), then every checkpoint tensor is read (safetensors
`safe_open`, or `torch.load(mmap=True)` for pickle shards), checked against the config, converted to the target
dtype and device, and assigned. Only one source tensor is in flight at a time, so a fp32 checkpoint becomes a bf16
model without ever holding a fp32 copy of the whole model.

With a quantization (quant_format.QuantConfig), the linears are swapped for QuantLinears (quant_linear.py) and
each linear weight is quantized as it is read, the same one-tensor-at-a-time way. A directory written by
`neoxserve quantize` (config.json has a `quantization_config`) holds the quantized parts already; they are
loaded as they are, never quantized again.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import torch
from torch import Tensor
from tqdm import tqdm

from neoxserve.model import dtype_policy
from neoxserve.model.checkpoint_names import LEGACY_SUFFIXES, checkpoint_name, module_name
from neoxserve.model.config import NeoXConfig, UnsupportedModelError
from neoxserve.model.errors import CheckpointError
from neoxserve.model.heap_trim import release_freed_memory
from neoxserve.model.neox import GPTNeoX, Linear
from neoxserve.model.tokenizer import Tokenizer
from neoxserve.model.quant_format import PART_DTYPES, PARTS, QuantConfig, QuantizationError, part_shapes, quantize
from neoxserve.model.quant_linear import QuantLinear, log_quantization, swap_linears
from neoxserve.model.stored_quantization import read_quantization, resolve_quantization

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: GPTNeoX
    config: NeoXConfig
    tokenizer: Tokenizer
    path: Path
    quantization: QuantConfig = QuantConfig()     # what the linears hold (none, or as requested / as stored)
    dtype: str = "float32"     # the weights' dtype as asked for and resolved ("bfloat16" also for bf16 linears)
    kernels: str = "none"      # the native kernels' variant (model/kernels: VARIANTS), "none" for PyTorch's own


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", dtype: str = "auto",
               quantization: QuantConfig | None = None, kernels: str = "auto") -> LoadedModel:
    """quantization: quantize a float checkpoint while loading. A quantized directory loads as stored; asking for
    another quantization of it is a CheckpointError (quantize the float checkpoint instead).
    kernels: the native kernels' variant on CPU, "auto" (from the CPU's flags) or one of kernels.VARIANTS; one the
    CPU lacks is a kernels.KernelsError (a ValueError), raised before anything is read."""
    from neoxserve.model import kernels as native_kernels

    path = Path(model_dir)
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist")
    config = read_config(path)
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{tokenizer_file} is missing (the model directory needs its tokenizer.json)")
    device = torch.device(device)
    variant = native_kernels.select(kernels) if device.type == "cpu" else None
    torch_dtype = dtype_policy.resolve_dtype(dtype, config, device)
    stored = read_quantization(path)
    quant = resolve_quantization(path, quantization or QuantConfig(), stored)
    bf16_linears = not quant.enabled and dtype_policy.uses_bf16_weight_kernel(torch_dtype, device, config)
    if bf16_linears:
        log.info("bfloat16 on a CPU without bf16 units: the linears hold bfloat16 weights and the K/V cache is "
                 "bfloat16, both widened to float32 by the native kernels; the arithmetic is float32")
        torch_dtype = torch.float32

    with torch.device("meta"):
        model = GPTNeoX(config, linear_splits=0 if quant.enabled or bf16_linears else
                        dtype_policy.linear_splits(torch_dtype, device), bf16_linears=bf16_linears,
                        device=device, dtype=torch_dtype, native_kernels=variant is not None)
    if quant.enabled:
        try:
            kernel = swap_linears(model, quant, torch_dtype, device)
        except QuantizationError as e:
            raise CheckpointError(f"{path / 'config.json'}: {e}") from None
        log_quantization(quant, kernel, device)
    state = load_state_dict(path, config, model, torch_dtype, device, quant, stored is not None)
    model.load_state_dict(state, assign=True, strict=True)
    model.init_rotary()
    model.eval().requires_grad_(False)

    dtype_name = "bfloat16" if bf16_linears else str(torch_dtype).removeprefix("torch.")
    return LoadedModel(model=model, config=config, tokenizer=Tokenizer.from_dir(path), path=path,
                       quantization=quant, dtype=dtype_name, kernels=variant or "none")


def read_config(path: Path) -> NeoXConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing")
    try:
        return NeoXConfig.from_file(config_file)
    except UnsupportedModelError as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def checkpoint_entries(model: GPTNeoX, quant: QuantConfig, prequantized: bool) -> dict[str, tuple[int, ...]]:
    """What the checkpoint of `model` holds, by module-side name, with shapes as stored: [out, in] for every float
    linear weight, the portable parts (quant_format) for a prequantized one."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for lname, m in model.named_modules():
        if isinstance(m, (Linear, QuantLinear)):
            shapes = part_shapes(quant, m.out_features, m.in_features) if prequantized else \
                {"weight": (m.out_features, m.in_features)}
            expected.update({f"{lname}.{part}": shape for part, shape in shapes.items()})
    return expected


def iter_checkpoint(path: Path, expected: dict[str, tuple[int, ...]],
                    desc: str = "Loading weights") -> Iterator[tuple[str, str, Tensor]]:
    """(module-side name, checkpoint name, tensor) for every tensor of the directory's weight files, one at a time,
    each checked against `expected`; CheckpointError for an unexpected, misshapen or missing tensor."""
    files = weight_files(path)
    done: set[str] = set()
    bar = tqdm(total=len(expected), desc=desc, unit="tensor", file=sys.stderr, disable=not sys.stderr.isatty())
    with bar:
        for file in files:
            for ckpt_name, read in _tensors(file):
                if ckpt_name.endswith(LEGACY_SUFFIXES):
                    continue
                name = module_name(ckpt_name)
                if name not in expected:
                    raise CheckpointError(f"{file}: unexpected tensor {ckpt_name!r} (not part of GPTNeoXForCausalLM)")
                tensor = _read(file, ckpt_name, read)
                if tuple(tensor.shape) != expected[name]:
                    raise CheckpointError(
                        f"{file}: tensor {ckpt_name!r} has shape {list(tensor.shape)}, but config.json implies "
                        f"{list(expected[name])}")
                done.add(name)
                bar.update(1)
                yield name, f"{file}: tensor {ckpt_name!r}", tensor
    missing = [n for n in expected if n not in done]
    if missing:
        where = ", ".join(f.name for f in files)
        raise CheckpointError(f"{path}: tensor {checkpoint_name(missing[0])!r} is missing from {where}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def load_state_dict(path: Path, config: NeoXConfig, model: GPTNeoX, dtype: torch.dtype, device: torch.device,
                    quant: QuantConfig = QuantConfig(), prequantized: bool = False) -> dict[str, Tensor]:
    """The module's state, read one checkpoint tensor at a time. A quantized linear's entries are collected (its
    portable parts, or its float weight quantized as read) and converted once all of them are read."""
    linears = {name: m for name, m in model.named_modules() if isinstance(m, (Linear, QuantLinear))}
    state: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for name, where, tensor in iter_checkpoint(path, checkpoint_entries(model, quant, prequantized)):
        lname, _, part = name.rpartition(".")
        module = linears.get(lname)
        if not isinstance(module, QuantLinear) or part == "bias":
            state[name] = _convert(name, tensor, config, dtype, device, module)
            if isinstance(module, Linear) and module.bf16_tiles and part == "weight":
                del tensor
                release_freed_memory()     # the float weight and the tiling's temporaries (see below)
            continue
        want = PART_DTYPES.get(part, {}).get(quant.method) if prequantized else None
        if want is not None and tensor.dtype != want:
            raise CheckpointError(f"{where} has dtype {tensor.dtype}, but {quant.describe()} weights are {want}")
        tensor = _reorder_qkv(name, tensor, config)
        if prequantized:
            parts = pending.setdefault(lname, {})
            parts[part] = tensor
            if len(parts) < len(PARTS[quant.method]):
                continue
            del pending[lname]
        else:
            parts = quantize(quant, tensor)
        for key, value in module.runtime_tensors(parts, dtype, device).items():
            state[f"{lname}.{key}"] = value
        del tensor, parts
        release_freed_memory()
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


def _reorder_qkv(name: str, tensor: Tensor, config: NeoXConfig) -> Tensor:
    """Rows of the fused QKV (weight, bias, or a quantized part): checkpoint per head [nh, 3, hd, ...] -> module
    [3, nh, hd, ...] (q heads | k heads | v heads). Other tensors as they are."""
    if ".attention.query_key_value" not in name:
        return tensor
    nh, hd = config.num_attention_heads, config.head_dim
    return tensor.reshape(nh, 3, hd, -1).transpose(0, 1).reshape(tensor.shape)


def _convert(name: str, tensor: Tensor, config: NeoXConfig, dtype: torch.dtype, device: torch.device,
             linear: Linear | QuantLinear | None) -> Tensor:
    source = tensor
    tensor = _reorder_qkv(name, tensor, config)
    if isinstance(linear, Linear) and name.endswith(".weight"):
        tensor = linear.load_layout(tensor)
        if linear.bf16_tiles:
            dtype = torch.bfloat16
    out = tensor.to(device=device, dtype=dtype).contiguous()
    if out.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        # Still the checkpoint's memory-mapped bytes (dtype and layout matched): copy them into memory of our own.
        # Mapped pages are read from disk on first use, so the first request would pay for paging the weights in
        # (8.6 s before the first token of a 3B bf16 model, issue 9), and the kernel may drop them again later.
        out = out.clone()
    return out
