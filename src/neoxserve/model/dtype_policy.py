"""Which dtype a model is loaded in, and the weight layout that goes with it on CPU: what `dtype auto` is, when
bfloat16 runs as bf16 weights with float32 arithmetic, and when float32 linears are split across the threads."""
from __future__ import annotations

import functools

import torch

from neoxserve.choices import DTYPES as DTYPE_CHOICES
from neoxserve.model import kernels
from neoxserve.model.config import NeoXConfig

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_CHOICES if name != "auto"}


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
