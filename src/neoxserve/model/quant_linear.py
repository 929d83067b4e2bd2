"""Weight-only quantized linears, swapped in beside the model (as gpt-fast's quantize.py does): GPTNeoX itself
knows nothing of quantization. `swap_linears` replaces every `neox.Linear` (the layer linears and the output head)
of a meta-device model with a `QuantLinear` before the loader fills it; `quantize_model` does the same to a model
whose float weights are already loaded (benchmarks, tests).

Kernels, chosen once for the model by `choose_kernel` (docs/engine.md, "Quantized weights", has the figures):
- "native":  the project's AVX2 kernels (kernels/wq_gemm.cpp): 8-bit dot products on activations quantized per
             block of 32, as llama.cpp does, over weights in tiles of 8 rows (weight_tiles.py); for many rows
             (prefill) the weight is expanded to float32 by a native kernel and multiplied by PyTorch's float GEMM.
             The default on x86 CPUs where it builds.
- "aten":    PyTorch's own CPU kernels, `_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu`: the fallback on
             CPUs where the native kernels cannot be built (fast with bfloat16 activations on CPUs with AVX-512).
- "dequant": the weight is expanded to the activation dtype for each call and multiplied with `F.linear`. Every
             device runs it; it saves memory, not time. CUDA uses it (said at start-up).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neoxserve.model import kernels, weight_tiles
from neoxserve.model.arith import cdiv
from neoxserve.model.quant_format import (QuantConfig, QuantizationError, check_shape, dequantize, quantize,
                                          unpack_nibbles)

log = logging.getLogger(__name__)
TILE = weight_tiles.TILE
KERNELS = ("native", "aten", "dequant")
NATIVE_GEMM_ROWS = kernels.GEMM_ROWS


def choose_kernel(device: torch.device) -> str:
    """"native" on CPUs where kernels/wq_gemm.cpp builds, else "aten" on CPU, "dequant" elsewhere."""
    if device.type != "cpu":
        return "dequant"
    return "native" if kernels.load() else "aten"


def log_quantization(quant: QuantConfig, kernel: str, device: torch.device) -> None:
    """Say at start-up which kernel the quantized linears run (and that "dequant" only saves memory)."""
    if kernel == "dequant":
        log.warning("quantization %s on %s: there is no quantized kernel for this device; the weights stay %s in "
                    "memory and are expanded for every product, which saves memory but is slower than unquantized "
                    "weights", quant.describe(), device, quant.method)
    else:
        log.info("quantization %s: linears run the %s kernel", quant.describe(), kernel)


class QuantLinear(nn.Module):
    """y = x W^T + b with W held as int8 (per-row scales) or int4 (per-group scales and zeros).

    Buffers (persistent, so `load_state_dict(assign=True)` fills them), by kernel:
      "native":            weight_tiles.py's tiles: int8 weight [out/8, in/32, 8, 32] + weight_scale [out];
                           int4 weight uint8 [out/8, in/64, 8, 32] + weight_scale, weight_zero [out/8, in/group, 8]
      "dequant":           quant_format's portable layout with float32 scales: int8 weight [out, in] +
                           weight_scale [out]; int4 weight uint8 [out, in / 2] + weight_scale, weight_zero
                           [out, in / group]
      "aten":              int8 weight [out, in] + weight_scale [out] in the activation dtype; int4 weight in the
                           CPU kernel's packing + weight_scale_zero [in / group, out, 2] in the activation dtype
    """

    weight: Tensor
    weight_scale: Tensor
    weight_zero: Tensor
    weight_scale_zero: Tensor
    # rows above NATIVE_GEMM_ROWS: the VNNI GEMM on the tiles where the kernels have it (False: the expansion;
    # benchmarks compare the two)
    packed_gemm = True

    def __init__(self, in_features: int, out_features: int, bias: bool, cfg: QuantConfig,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", kernel: str | None = None):
        super().__init__()
        check_shape(cfg, out_features, in_features)
        self.in_features, self.out_features, self.cfg = in_features, out_features, cfg
        device = torch.device(device)
        self.kernel = kernel or choose_kernel(device if device.type != "meta" else torch.device("cpu"))
        if self.kernel not in KERNELS:
            raise QuantizationError(f"unknown quantized kernel {self.kernel!r}")
        if self.kernel == "aten" and cfg.method == "int4" and out_features % 16:
            self.kernel = "dequant"      # PyTorch's int4 packing needs a multiple of 16 output rows
        if self.kernel == "native" and cfg.method == "int4" and in_features % 64:
            self.kernel = "dequant"      # the native int4 tiles hold two blocks of 32 columns per byte
        tiles, groups = cdiv(out_features, TILE), in_features // cfg.group_size
        if cfg.method == "int8":
            shape = (tiles, in_features // 32, TILE, 32) if self.kernel == "native" else (out_features, in_features)
            self.register_buffer("weight", torch.empty(shape, dtype=torch.int8, device=device))
            scale_dtype = dtype if self.kernel == "aten" else torch.float32
            self.register_buffer("weight_scale", torch.empty(out_features, dtype=scale_dtype, device=device))
        elif self.kernel == "native":
            self.register_buffer("weight", torch.empty(tiles, in_features // 64, TILE, 32, dtype=torch.uint8,
                                                       device=device))
            self.register_buffer("weight_scale", torch.empty(tiles, groups, TILE, device=device))
            self.register_buffer("weight_zero", torch.empty(tiles, groups, TILE, device=device))
        else:
            self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8,
                                                       device=device))
            if self.kernel == "aten":
                self.register_buffer("weight_scale_zero", torch.empty(groups, out_features, 2, dtype=dtype,
                                                                      device=device))
            else:
                self.register_buffer("weight_scale", torch.empty(out_features, groups, device=device))
                self.register_buffer("weight_zero", torch.empty(out_features, groups, device=device))
        self._sums: Tensor | None = None
        self._sums_key: tuple[int, int] | None = None
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    # ---- loading --------------------------------------------------------------------------------------------

    def runtime_tensors(self, parts: dict[str, Tensor], dtype: torch.dtype,
                        device: torch.device) -> dict[str, Tensor]:
        """Portable parts (quant_format) -> this module's buffers on device."""
        if self.kernel == "native":
            if self.cfg.method == "int8":
                tiled = {"weight": weight_tiles.int8_tiles(parts["weight"]), "weight_scale": parts["weight_scale"]}
            else:
                tiled = {"weight": weight_tiles.int4_tiles(parts["weight"]),
                         "weight_scale": weight_tiles.group_tiles(parts["weight_scale"]),
                         "weight_zero": weight_tiles.group_tiles(parts["weight_zero"])}
            return {k: v.to(device=device, dtype=torch.float32 if v.is_floating_point() else v.dtype).contiguous()
                    for k, v in tiled.items()}
        if self.kernel != "aten":
            return {k: v.to(device=device, dtype=torch.float32 if v.is_floating_point() else v.dtype).contiguous()
                    for k, v in parts.items()}
        if self.cfg.method == "int8":
            return {"weight": parts["weight"].to(device).contiguous(),
                    "weight_scale": parts["weight_scale"].to(device=device, dtype=dtype).contiguous()}
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            unpack_nibbles(parts["weight"]).to(torch.int32), 1)
        scale_zero = torch.stack((parts["weight_scale"], parts["weight_zero"]), dim=-1).transpose(0, 1)
        return {"weight": packed.to(device).contiguous(),
                "weight_scale_zero": scale_zero.to(device=device, dtype=dtype).contiguous()}

    def portable_parts(self) -> dict[str, Tensor]:
        """This module's weight in the portable layout (float32 scales): the inverse of runtime_tensors."""
        n = self.out_features
        if self.kernel == "native" and self.cfg.method == "int8":
            return {"weight": weight_tiles.int8_untiled(self.weight, n), "weight_scale": self.weight_scale}
        if self.kernel == "native":
            return {"weight": weight_tiles.int4_untiled(self.weight, n),
                    "weight_scale": weight_tiles.group_untiled(self.weight_scale, n),
                    "weight_zero": weight_tiles.group_untiled(self.weight_zero, n)}
        if self.kernel != "aten":
            return {k: v for k, v in self.named_buffers() if k.startswith("weight")}
        if self.cfg.method == "int8":
            return {"weight": self.weight, "weight_scale": self.weight_scale.float()}
        sz = self.weight_scale_zero.float().transpose(0, 1)
        return {"weight": self._aten_nibbles(), "weight_scale": sz[..., 0].contiguous(),
                "weight_zero": sz[..., 1].contiguous()}

    def _aten_nibbles(self) -> Tensor:
        # the CPU int4 packing is opaque: recover the levels by multiplying the identity with unit scales, zero 0
        eye = torch.eye(self.in_features, dtype=self.weight_scale_zero.dtype)
        unit = torch.zeros_like(self.weight_scale_zero)
        unit[..., 0] = 1.0
        levels = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight, self.cfg.group_size, unit)
        q = (levels.t() + 8).round().to(torch.uint8)                 # [out, in]
        return q[:, 0::2] | (q[:, 1::2] << 4)

    # ---- forward --------------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "native":
            out = self._native(x)
        elif self.kernel == "dequant":
            out = F.linear(x, dequantize(self.cfg, self.portable_parts()).to(x.dtype))
        elif self.cfg.method == "int8":
            out = torch.ops.aten._weight_int8pack_mm(x, self.weight, self.weight_scale)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight, self.cfg.group_size,
                                                              self.weight_scale_zero)
        return out if self.bias is None else out.add_(self.bias)

    def _native(self, x: Tensor) -> Tensor:
        ops = kernels.ops()
        int8 = self.cfg.method == "int8"
        zero = None if int8 else self.weight_zero
        if x.shape[0] > NATIVE_GEMM_ROWS and self.packed_gemm and kernels.has_int8_gemm() and (
                int8 or self.cfg.group_size >= kernels.INT4_GEMM_MIN_GROUP or x.dtype != torch.bfloat16
                or not kernels.cpu_has_bf16()):
            x32 = x.float().contiguous()
            if int8:
                block = kernels.INT8_GEMM_BLOCK or self.in_features
                out = ops.int8_gemm(x32, self.weight, self.weight_scale, self._block_sums(block), block)
            else:
                out = ops.int4_gemm(x32, self.weight, self.weight_scale, zero, self.cfg.group_size,
                                    self.out_features)
            return out if x.dtype == torch.float32 else out.to(x.dtype)
        if x.shape[0] > NATIVE_GEMM_ROWS:
            # bfloat16 activations on a CPU with bf16 units: the weight expands to bfloat16 and PyTorch's bf16 GEMM
            # (oneDNN) multiplies, at about twice its float32 GEMM's rate there; else both in float32
            bf16 = x.dtype == torch.bfloat16 and kernels.cpu_has_bf16()
            xin = x.contiguous() if bf16 else x.float().contiguous()
            w, scale, group, bits = self.weight, self.weight_scale, self.cfg.group_size, 8 if int8 else 4

            def expand(t0: int, t1: int, n: int) -> Tensor:
                if int8:
                    return ops.dequantize(w[t0:t1], scale[t0 * TILE:t0 * TILE + n], None, group, bits, n, bf16)
                assert zero is not None
                return ops.dequantize(w[t0:t1], scale[t0:t1], zero[t0:t1], group, bits, n, bf16)
            out = kernels.expanded_linear(xin, w, self.out_features, expand)
            return out if x.dtype == out.dtype else out.to(x.dtype)
        x32 = x.float().contiguous()
        if int8:
            out = ops.int8_linear(x32, self.weight, self.weight_scale)
        else:
            out = ops.int4_linear(x32, self.weight, self.weight_scale, zero, self.cfg.group_size, self.out_features)
        return out if x.dtype == torch.float32 else out.to(x.dtype)

    def _block_sums(self, block: int) -> Tensor:
        """int8_gemm's correction table for the current weight (weight_tiles.int8_block_sums), made on first use:
        K / block floats per output row, beside the weight rather than in the checkpoint."""
        key = (self.weight.data_ptr(), block)
        if self._sums_key != key:
            self._sums = weight_tiles.int8_block_sums(self.weight, block)
            self._sums_key = key
        assert self._sums is not None
        return self._sums

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.cfg.describe()}, kernel={self.kernel}")


def _linears(model: nn.Module):
    from neoxserve.model.neox import Linear
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Linear)]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def swap_linears(model: nn.Module, cfg: QuantConfig, dtype: torch.dtype, device: torch.device,
                 kernel: str | None = None) -> str:
    """Replace every neox.Linear of a (meta-device) model by an empty QuantLinear in place; returns the kernel."""
    kernel = kernel or choose_kernel(device)
    for name, lin in _linears(model):
        _set(model, name, QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, cfg, dtype,
                                      device="meta", kernel=kernel))
    return kernel


def quantize_model(model: nn.Module, cfg: QuantConfig, kernel: str | None = None) -> nn.Module:
    """Quantize the float weights of a loaded model in place (every neox.Linear); returns the model."""
    for name, lin in _linears(model):
        device, dtype = lin.weight.device, next(p for p in model.parameters() if p.is_floating_point()).dtype
        q = QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, cfg, dtype, device, kernel)
        weight = lin.weight if not lin.splits else lin.weight.transpose(0, 1).reshape(lin.in_features, -1).t()
        q.load_state_dict(q.runtime_tensors(quantize(cfg, weight), dtype, device)
                          | ({"bias": lin.bias} if lin.bias is not None else {}), assign=True)
        _set(model, name, q.requires_grad_(False))
    return model
