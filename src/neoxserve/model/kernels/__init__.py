"""The project's own CPU kernels (wq_gemm.cpp: int8 / int4 / bf16-weight linears over weight_tiles.py's tiles, a
bf16 x bf16 decode GEMV, decode attention over the paged cache), built once per instruction set and chosen at
run time.

One source, several builds (VARIANTS): each with its own compiler flags, its own module name and its own op
namespace (`torch.ops.neoxserve_<variant>`), so several may be loaded in one process (the tests run every variant
this CPU can run) and a variant the CPU lacks is never loaded, let alone called. `select()` picks the variant
once, at model load, from the CPU's flags (`auto`: the widest one this CPU has, of those on by default), or the one
the `kernels` setting forces; forcing one the CPU lacks is a KernelsError naming the missing flags, never a
SIGILL. `ops()` is the chosen variant's op namespace.

Building uses PyTorch's cpp_extension (the machine's C++ compiler and ninja; the result is cached by PyTorch under
~/.cache/torch_extensions, keyed by the source and flags, so a later start loads it in well under a second). It
happens while the model loads, before the engine reports ready. Where no variant can be built (no compiler, no
AVX2) `load()` logs why and returns False, and quantized linears use PyTorch's own kernels instead.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neoxserve.model.weight_tiles import TILE

log = logging.getLogger(__name__)
# Above this many rows a native linear expands its weight (a slice at a time) and runs PyTorch's GEMM: the
# dot-product kernels' cost grows with the rows, the expansion's does not (bench/profile_step.py, docs/engine.md).
GEMM_ROWS = 16
# A bfloat16 model's linears run bf16_gemv (AVX512-BF16 builds) up to this many rows, PyTorch's bf16 GEMM (oneDNN)
# above: the GEMV streams the weight once per call, which is what a decode step with a few rows is bound by.
BF16_GEMV_ROWS = 4
# Above GEMM_ROWS, builds with AVX512-VNNI run int8_gemm / int4_gemm (wq_gemm.cpp) on the packed tiles instead of
# the expansion: int8 activations are quantized per row in blocks of INT8_GEMM_BLOCK columns (0: the whole row, one
# scale per row), int4 ones per weight group. int4 groups below INT4_GEMM_MIN_GROUP convert the int32 sums to float
# too often; with bfloat16 activations on a bf16 CPU the bf16 expansion beats them (docs/benchmarks.md).
INT8_GEMM_BLOCK = 0
INT4_GEMM_MIN_GROUP = 64
# The expansion for a GEMM goes a slice of about this many weights at a time (4 MB of float32, in cache when the
# GEMM reads it back): expanding a whole 3B-shape MLP weight (268 MB) per call cost more than the GEMM.
EXPAND_FLOATS = 1 << 20

SOURCE = Path(__file__).with_name("wq_gemm.cpp")
# -fopenmp: at::parallel_for is a header template that runs serially without it. The library then uses the libgomp
# that torch ships (same soname, already loaded), not a second OpenMP runtime.
BASE_CFLAGS = ("-O3", "-fopenmp")


class KernelsError(ValueError):
    """The kernels asked for cannot run here (the CPU lacks their instructions, or they do not build)."""


@dataclass(frozen=True)
class Variant:
    name: str
    cpu_flags: tuple[str, ...]    # /proc/cpuinfo flags every instruction of the build needs
    cflags: tuple[str, ...]
    auto: bool = True             # `auto` may choose it (only variants that have run on a CPU with their flags)

    @property
    def namespace(self) -> str:
        return f"neoxserve_{self.name}"


_AVX2 = Variant("avx2", ("avx2", "fma", "f16c"), ("-mavx2", "-mfma", "-mf16c"))
_AVX512 = Variant("avx512", (*_AVX2.cpu_flags, "avx512f", "avx512bw", "avx512vl"),
                  (*_AVX2.cflags, "-mavx512f", "-mavx512bw", "-mavx512vl"))
_VNNI = Variant("avx512_vnni", (*_AVX512.cpu_flags, "avx512_vnni"), (*_AVX512.cflags, "-mavx512vnni"))
_BF16 = Variant("avx512_bf16", (*_VNNI.cpu_flags, "avx512_bf16"), (*_VNNI.cflags, "-mavx512bf16"))
# Narrowest first; `auto` takes the last one the CPU can run. The names are the `kernels` setting's values
# (choices.py: Kernels; a test checks that the two agree).
VARIANTS: dict[str, Variant] = {v.name: v for v in (_AVX2, _AVX512, _VNNI, _BF16)}

_active: str | None = None
_selected = False


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 Linux). Where it cannot be read, what PyTorch's own CPU
    capability implies (AVX2 / AVX512 builds of PyTorch need avx2 and fma), else nothing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return frozenset(_AVX2.cpu_flags)
    return frozenset()


def missing_flags(name: str) -> list[str]:
    """The CPU flags variant `name` needs that this CPU lacks."""
    have = cpu_flags()
    return [f for f in VARIANTS[name].cpu_flags if f not in have]


def runnable() -> list[str]:
    """The variants this CPU has every instruction of, narrowest first."""
    return [name for name in VARIANTS if not missing_flags(name)]


def auto_variant() -> str | None:
    """What `auto` chooses on this CPU: the widest runnable variant that is on by default."""
    names = [n for n in runnable() if VARIANTS[n].auto]
    return names[-1] if names else None


def select(requested: str = "auto") -> str | None:
    """Make `requested` ("auto" or a VARIANTS name) the variant `ops()` gives, building it if needed; returns its
    name, or None where `auto` finds none that builds (then PyTorch's kernels run). A forced variant the CPU lacks,
    or one that does not build, is a KernelsError."""
    global _active, _selected
    if requested != "auto" and requested not in VARIANTS:
        raise KernelsError(f"kernels must be auto or one of {', '.join(VARIANTS)}; got {requested!r}")
    if requested != "auto":
        missing = missing_flags(requested)
        if missing:
            raise KernelsError(
                f"kernels {requested} were asked for, but this CPU lacks {', '.join(missing)} (it can run: "
                f"{', '.join(runnable()) or 'none of them'}); set kernels to auto or one of those")
        error = _build(requested)
        if error:
            raise KernelsError(f"kernels {requested} were asked for, but building them failed: {error}")
        _active, _selected = requested, True
        log.info("native kernels: %s (forced by the kernels setting; this CPU can run %s)", requested,
                 ", ".join(runnable()))
        return _active
    candidates = [n for n in runnable() if VARIANTS[n].auto]
    if not candidates:
        log.warning("quantized kernels: this CPU has no AVX2 (capability %s); using PyTorch's kernels",
                    torch.backends.cpu.get_cpu_capability())
    _active, _selected = None, True
    for name in reversed(candidates):
        error = _build(name)
        if not error:
            _active = name
            log.info("native kernels: %s (chosen from the CPU's flags; this CPU can run %s)", name,
                     ", ".join(runnable()))
            break
        log.warning("quantized kernels: building %s for %s failed, using %s: %s", SOURCE.name, name,
                    "a narrower variant" if name != candidates[0] else "PyTorch's kernels instead (slower on AVX2 "
                    "CPUs)", error)
    return _active


def active() -> str | None:
    """The selected variant (None: PyTorch's kernels); selects `auto` the first time."""
    if not _selected:
        select("auto")
    return _active


def load() -> bool:
    """True when a variant is selected and built (`auto` unless `select` chose otherwise)."""
    return active() is not None


def ops() -> Any:
    """The op namespace of the selected variant (torch.ops.neoxserve_<variant>)."""
    name = active()
    if name is None:
        raise KernelsError("no native kernels are loaded on this machine")
    return getattr(torch.ops, VARIANTS[name].namespace)


def cpu_has_bf16() -> bool:
    """The CPU computes bf16 products in hardware (`avx512_bf16` or `amx_bf16`), whichever variant is selected."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def has_bf16_gemv() -> bool:
    """The selected variant multiplies bfloat16 by bfloat16 in hardware (bf16_gemv)."""
    return active() == _BF16.name


def has_int8_gemm() -> bool:
    """The selected variant has the VNNI GEMM over packed tiles (int8_gemm, int4_gemm)."""
    return active() in (_VNNI.name, _BF16.name)


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Run the block with variant `name` selected (tests), then restore the previous choice."""
    global _active, _selected
    before = (_active, _selected)
    select(name)
    try:
        yield
    finally:
        _active, _selected = before


@functools.cache
def _build(name: str) -> str:
    """Build (or load the cached build of) variant `name`; '' when its ops are registered, else why not."""
    variant = VARIANTS[name]
    try:
        _ensure_ninja_on_path()
        from torch.utils.cpp_extension import load as build
        build(name=f"neoxserve_kernels_{name}", sources=[str(SOURCE)],
              extra_cflags=[*BASE_CFLAGS, *variant.cflags, f"-DNEOX_NS={variant.namespace}"],
              extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
    except Exception as e:   # no compiler, a failed build: many exception types, all mean "not available"
        text = str(e).strip()
        return text.splitlines()[-1] if text else type(e).__name__
    if not hasattr(getattr(torch.ops, variant.namespace), "int8_linear"):
        return "the built library registered no ops"
    return ""


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
    """x [M, K] times a tiled weight, for many rows: `expand(t0, t1, n)` gives the weight [n, K] of tiles t0..t1
    (n of their rows are real) in x's dtype, which `F.linear` multiplies; slice by slice (EXPAND_FLOATS)."""
    K = x.shape[1]
    tiles_per_slice = max(1, EXPAND_FLOATS // (TILE * K))
    parts = []
    for t0 in range(0, tiles.shape[0], tiles_per_slice):
        t1 = min(t0 + tiles_per_slice, tiles.shape[0])
        n = min(t1 * TILE, out_features) - t0 * TILE
        parts.append(torch.nn.functional.linear(x, expand(t0, t1, n)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
