"""The project's own CPU kernels (wq_gemm.cpp, for AVX2: int8 / int4 / bf16-weight linears over weight_tiles.py's
tiles, decode attention over the paged cache), compiled on first use.

`load()` builds the extension with PyTorch's cpp_extension (the machine's C++ compiler and ninja; the result is
cached by PyTorch under ~/.cache/torch_extensions, keyed by the source, so a later start loads it in well under a
second) and registers the ops `torch.ops.neoxserve.*`. It is called once, while the model loads, so the build
(tens of seconds the first time) is paid before the engine reports ready. Where it cannot be built (no compiler,
no AVX2) `load()` logs why and returns False, and quantized linears use PyTorch's own kernels instead.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from neoxserve.model.weight_tiles import TILE

log = logging.getLogger(__name__)
# Above this many rows a native linear expands its weight to float32 and runs PyTorch's float GEMM: the
# dot-product kernels' cost grows with the rows, the expansion's does not (bench/profile_step.py, docs/engine.md).
GEMM_ROWS = 16
# The expansion for a float GEMM goes a slice of about this many float32 weights at a time (4 MB, in cache when
# the GEMM reads it back): expanding a whole 3B-shape MLP weight (268 MB) per call cost more than the GEMM.
EXPAND_FLOATS = 1 << 20

SOURCE = Path(__file__).with_name("wq_gemm.cpp")
# -fopenmp: at::parallel_for is a header template that runs serially without it. The library then uses the libgomp
# that torch ships (same soname, already loaded), not a second OpenMP runtime.
CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"]


def cpu_supports_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


@functools.cache
def load() -> bool:
    """Build (or load the cached build of) the kernels; True when `torch.ops.neoxserve` has them."""
    if not cpu_supports_avx2():
        log.warning("quantized kernels: this CPU has no AVX2 (capability %s); using PyTorch's kernels",
                    torch.backends.cpu.get_cpu_capability())
        return False
    try:
        _ensure_ninja_on_path()
        from torch.utils.cpp_extension import load as build
        build(name="neoxserve_kernels", sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
              is_python_module=False, verbose=False)
    except Exception as e:   # no compiler, a failed build: many exception types, all mean "not available"
        log.warning("quantized kernels: building %s failed, using PyTorch's kernels instead (slower on AVX2 "
                    "CPUs): %s", SOURCE.name, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
        return False
    return hasattr(torch.ops.neoxserve, "int8_linear")


def _ensure_ninja_on_path() -> None:
    """cpp_extension runs `ninja` from PATH; the `ninja` package installs one beside this interpreter, which is not
    on PATH when the venv's python is run by its full path."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def expanded_linear(x: torch.Tensor, tiles: torch.Tensor, out_features: int,
                    expand: Callable[[int, int, int], torch.Tensor]) -> torch.Tensor:
    """x [M, K] float32 times a tiled weight, for many rows: `expand(t0, t1, n)` gives the float32 weight [n, K] of
    tiles t0..t1 (n of their rows are real), which `F.linear` multiplies; slice by slice (EXPAND_FLOATS)."""
    K = x.shape[1]
    tiles_per_slice = max(1, EXPAND_FLOATS // (TILE * K))
    parts = []
    for t0 in range(0, tiles.shape[0], tiles_per_slice):
        t1 = min(t0 + tiles_per_slice, tiles.shape[0])
        n = min(t1 * TILE, out_features) - t0 * TILE
        parts.append(torch.nn.functional.linear(x, expand(t0, t1, n)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
