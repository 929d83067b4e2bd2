"""Weight-only quantization: the numbers (how a float weight becomes int8 or int4) and the portable layout in
which quantized weights are stored in a checkpoint. Kernels and their layouts are in quant_linear.py.

int8: symmetric, one scale per output row: w ~= q * scale, q in [-127, 127].
int4: asymmetric, one scale and one zero per `group_size` consecutive input columns of a row:
      w ~= (q - 8) * scale + zero, q in [0, 15] (the convention of PyTorch's int4 kernels; zero is the value of the
      group's middle level, so q spans [min, max] of the group).

Portable int4 layout (what `neoxserve quantize` writes): `weight` uint8 [out, in / 2], column 2j in the low
nibble and column 2j + 1 in the high nibble of byte j; `weight_scale` and `weight_zero` float32
[out, in / group_size]. int8: `weight` int8 [out, in], `weight_scale` float32 [out]. Rows are in the order of the
float checkpoint's rows, so reordering rows (as the loader does for the fused QKV) reorders all three alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neoxserve.choices import DEFAULT_GROUP_SIZE, GROUP_SIZES, QUANTIZATION_METHODS, QuantizationMethod

QUANT_METHOD_NAME = "neoxserve"      # config.json quantization_config.quant_method of our files
FORMAT_VERSION = 1
# The tensors a quantized linear weight is stored as, after the linear's name (e.g. "...dense" + ".weight").
PARTS = {"int8": ("weight", "weight_scale"), "int4": ("weight", "weight_scale", "weight_zero")}


class QuantizationError(ValueError):
    """A quantization setting or a quantized checkpoint that cannot be used; the message says why."""


@dataclass(frozen=True)
class QuantConfig:
    method: QuantizationMethod = "none"
    group_size: int = DEFAULT_GROUP_SIZE     # int4 only

    def __post_init__(self) -> None:
        if self.method not in QUANTIZATION_METHODS:
            raise QuantizationError(f"quantization must be one of {', '.join(QUANTIZATION_METHODS)}; "
                                    f"got {self.method!r}")
        if self.method == "int4" and self.group_size not in GROUP_SIZES:
            raise QuantizationError(f"quantization_group_size must be one of {', '.join(map(str, GROUP_SIZES))}; "
                                    f"got {self.group_size}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def describe(self) -> str:
        return f"int4 (group {self.group_size})" if self.method == "int4" else self.method

    def to_hf(self) -> dict[str, Any]:
        """The config.json `quantization_config` entry of a directory quantized this way."""
        d: dict[str, Any] = {"quant_method": QUANT_METHOD_NAME, "format_version": FORMAT_VERSION,
                             "weights": self.method, "bits": 8 if self.method == "int8" else 4}
        if self.method == "int4":
            d["group_size"] = self.group_size
        return d

    @classmethod
    def from_hf(cls, d: Any) -> QuantConfig:
        if not isinstance(d, dict) or d.get("quant_method") != QUANT_METHOD_NAME:
            method = d.get("quant_method") if isinstance(d, dict) else d
            raise QuantizationError(f"quantization_config with quant_method {method!r} is not supported; only "
                                    f"directories written by `neoxserve quantize` ({QUANT_METHOD_NAME!r}) load")
        if d.get("format_version") != FORMAT_VERSION:
            raise QuantizationError(f"quantization_config format_version {d.get('format_version')!r} is not "
                                    f"supported (expected {FORMAT_VERSION})")
        method = d.get("weights")
        if method not in ("int8", "int4"):
            raise QuantizationError(f"quantization_config weights must be 'int8' or 'int4'; got {method!r}")
        return cls(method, int(d.get("group_size", DEFAULT_GROUP_SIZE)))


def check_shape(cfg: QuantConfig, out_features: int, in_features: int) -> None:
    if cfg.method == "int4" and in_features % cfg.group_size:
        raise QuantizationError(f"int4 with group size {cfg.group_size} needs input sizes that are multiples of it; "
                                f"a linear has {in_features} inputs")


def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """w [out, in] -> (q int8 [out, in], scale float32 [out])."""
    w = w.float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-10)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale[:, None].float()


def quantize_int4(w: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """w [out, in] -> (q uint8 [out, in] with values 0..15, scale, zero float32 [out, in / group_size])."""
    out_f, in_f = w.shape
    g = w.float().reshape(out_f, in_f // group_size, group_size)
    lo, hi = g.amin(dim=2), g.amax(dim=2)
    scale = ((hi - lo) / 15).clamp_min(1e-10)
    zero = lo + 8 * scale
    q = torch.round((g - lo[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8)
    return q.reshape(out_f, in_f), scale, zero


def dequantize_int4(q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """q uint8 [out, in] (values 0..15) -> float32 [out, in]."""
    out_f, in_f = q.shape
    groups = scale.shape[1]
    g = (q.float().reshape(out_f, groups, -1) - 8) * scale[..., None].float() + zero[..., None].float()
    return g.reshape(out_f, in_f)


def pack_nibbles(q: Tensor) -> Tensor:
    """uint8 [out, in] of values 0..15 -> uint8 [out, in / 2] (column 2j low nibble, 2j + 1 high nibble)."""
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(packed: Tensor) -> Tensor:
    """The inverse of pack_nibbles."""
    return torch.stack((packed & 15, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def quantize(cfg: QuantConfig, w: Tensor, chunk_elements: int = 2**20) -> dict[str, Tensor]:
    """A float weight [out, in] in the portable layout: {"weight": ..., "weight_scale": ..., ["weight_zero"]}.

    Rows are quantized a chunk of about `chunk_elements` weights at a time, so the float temporaries stay small
    whatever the size of the tensor (the output head of a 7B model has 300M weights)."""
    if not cfg.enabled:
        raise QuantizationError(f"nothing to quantize with quantization {cfg.method!r}")
    check_shape(cfg, *w.shape)
    rows = max(1, chunk_elements // w.shape[1])
    chunks: list[tuple[Tensor, ...]] = []
    for start in range(0, w.shape[0], rows):
        part = w[start:start + rows]
        if cfg.method == "int8":
            chunks.append(quantize_int8(part))
        else:
            q, scale, zero = quantize_int4(part, cfg.group_size)
            chunks.append((pack_nibbles(q), scale, zero))
    names = PARTS[cfg.method]
    return {name: torch.cat([c[i] for c in chunks]) for i, name in enumerate(names)}


def dequantize(cfg: QuantConfig, parts: dict[str, Tensor]) -> Tensor:
    """The float32 weight [out, in] that portable parts stand for."""
    if cfg.method == "int8":
        return dequantize_int8(parts["weight"], parts["weight_scale"])
    return dequantize_int4(unpack_nibbles(parts["weight"]), parts["weight_scale"], parts["weight_zero"])


def part_shapes(cfg: QuantConfig, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the portable parts of a [out, in] weight (what the loader checks a checkpoint against)."""
    if cfg.method == "int8":
        return {"weight": (out_features, in_features), "weight_scale": (out_features,)}
    groups = in_features // cfg.group_size
    return {"weight": (out_features, in_features // 2), "weight_scale": (out_features, groups),
            "weight_zero": (out_features, groups)}


PART_DTYPES = {"weight": {"int8": torch.int8, "int4": torch.uint8}}
