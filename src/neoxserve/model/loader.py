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

import ctypes
import functools
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

from neoxserve.model.config import NeoXConfig, UnsupportedModelError
from neoxserve.model.neox import GPTNeoX, Linear
from neoxserve.model.tokenizer import Tokenizer
from neoxserve.model.quant_format import PART_DTYPES, PARTS, QuantConfig, QuantizationError, part_shapes, quantize
from neoxserve.model.quant_linear import QuantLinear, swap_linears

log = logging.getLogger(__name__)
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
    torch_dtype = resolve_dtype(dtype, config, device)
    stored = read_quantization(path)
    quant = resolve_quantization(path, quantization or QuantConfig(), stored)
    bf16_linears = not quant.enabled and uses_bf16_weight_kernel(torch_dtype, device, config)
    if bf16_linears:
        log.info("bfloat16 on a CPU without bf16 units: the linears hold bfloat16 weights and the K/V cache is "
                 "bfloat16, both widened to float32 by the native kernels; the arithmetic is float32")
        torch_dtype = torch.float32

    with torch.device("meta"):
        model = GPTNeoX(config, linear_splits=0 if quant.enabled or bf16_linears else
                        linear_splits(torch_dtype, device), bf16_linears=bf16_linears)
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
    if device.type == "cpu" and torch_dtype == torch.float32:
        model.use_native_attention(variant is not None)
    if device.type == "cpu" and torch_dtype == torch.bfloat16 and not quant.enabled:
        model.use_native_gemv(native_kernels.has_bf16_gemv())
    if bf16_linears:
        model.kv_dtype = torch.bfloat16     # read by the native decode kernel, widened to float32 like the weights

    dtype_name = "bfloat16" if bf16_linears else str(torch_dtype).removeprefix("torch.")
    return LoadedModel(model=model, config=config, tokenizer=Tokenizer.from_dir(path), path=path,
                       quantization=quant, dtype=dtype_name, kernels=variant or "none")


def log_quantization(quant: QuantConfig, kernel: str, device: torch.device) -> None:
    if kernel == "dequant":
        log.warning("quantization %s on %s: there is no quantized kernel for this device; the weights stay %s in "
                    "memory and are expanded for every product, which saves memory but is slower than unquantized "
                    "weights", quant.describe(), device, quant.method)
    else:
        log.info("quantization %s: linears run the %s kernel", quant.describe(), kernel)


def read_quantization(path: Path) -> QuantConfig | None:
    """The quantization a directory's config.json declares (`quantization_config`), or None for float weights."""
    raw = json.loads((path / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    if raw is None:
        return None
    try:
        return QuantConfig.from_hf(raw)
    except (QuantizationError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from None


def resolve_quantization(path: Path, requested: QuantConfig, stored: QuantConfig | None) -> QuantConfig:
    if stored is None:
        return requested
    if requested.enabled and requested != stored:
        raise CheckpointError(f"{path} holds weights quantized as {stored.describe()}; they cannot be loaded as "
                              f"{requested.describe()} (quantize the float checkpoint instead, or leave "
                              f"quantization at none to load them as they are)")
    return stored


def read_config(path: Path) -> NeoXConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing")
    try:
        return NeoXConfig.from_file(config_file)
    except UnsupportedModelError as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def resolve_dtype(dtype: str, config: NeoXConfig, device: torch.device) -> torch.dtype:
    """`auto` is, on CPU, bfloat16 where the CPU has bf16 units (cpu_has_native_bf16) and float32 elsewhere; on
    CUDA the checkpoint's 16-bit dtype, else bfloat16.

    On CPUs without bf16 units (AVX2 only) every bf16 product is converted in software and float32 is faster (and
    matches the reference exactly); on CPUs with them bf16 measured faster. The figures are in docs/engine.md,
    "The model on CPU".
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
        return DTYPES[dtype]
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if config.torch_dtype in ("bfloat16", "float16"):
        return DTYPES[config.torch_dtype]
    return torch.bfloat16


def uses_bf16_weight_kernel(dtype: torch.dtype, device: torch.device, config: NeoXConfig) -> bool:
    """bfloat16 on a CPU without bf16 units runs as bf16 weights with float32 arithmetic (neox.Linear's bf16 tiles)
    where the native kernels build: PyTorch's own bf16 products there convert every operand in software, and took
    4x (decode) to 5x (prefill) the time of float32 on the Pythia-160M shape (docs/benchmarks.md)."""
    if dtype != torch.bfloat16 or device.type != "cpu" or cpu_has_native_bf16():
        return False
    if config.hidden_size % 8 or config.intermediate_size % 8:
        return False
    from neoxserve.model import kernels
    return kernels.load()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 products in hardware: `avx512_bf16` or `amx_bf16` among /proc/cpuinfo's flags
    (x86 Linux; False where the file cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def linear_splits(dtype: torch.dtype, device: torch.device) -> int:
    """float32 on CPU splits linear weights across the torch threads (see neox.Linear); others keep nn.Linear's."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" and dtype == torch.float32 else 0


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
                name = _module_name(ckpt_name)
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
        raise CheckpointError(f"{path}: tensor {_checkpoint_name(missing[0])!r} is missing from {where}"
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
                _release_freed_memory()     # the float weight and the tiling's temporaries (see below)
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
        _release_freed_memory()
    return state


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):     # not glibc
        return None


def _release_freed_memory() -> None:
    """Give the float weight and the quantization temporaries just freed back to the OS. glibc keeps freed blocks
    below its mmap threshold (up to 32 MB) in the heap, and the pattern of one float tensor read, several
    temporaries and a smaller quantized result per linear fragments it: loading a model of 4 MB tensors as int8
    was measured to hold up to 130 MB of freed memory, as much as half the fp32 checkpoint (tests/model/
    test_loader.py checks the peak). Larger tensors are mmapped by glibc and released on free anyway."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
    return name if name.startswith("embed_out.") else f"gpt_neox.{name}"


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
