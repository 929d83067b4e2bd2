"""Weight-only quantized linears, swapped in beside the model (as gpt-fast's quantize.py does): GPTNeoX itself
knows nothing of quantization. `swap_linears` replaces every `neox.Linear` (the layer linears and the output head)
of a meta-device model with a `QuantLinear` before the loader fills it; `quantize_model` does the same to a model
whose float weights are already loaded (benchmarks, tests).

Kernels, chosen once per module by `choose_kernel` (see docs/engine.md, "Quantized weights", for the figures):
- "aten":    PyTorch's own CPU kernels, `_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu`.
- "dequant": the weight is expanded to the activation dtype for each call and multiplied with `F.linear`.
             Every device runs it; it saves memory, not time. CUDA uses it (logged at start-up).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neoxserve.model.quant_format import (QuantConfig, QuantizationError, check_shape, dequantize, quantize,
                                          unpack_nibbles)

log = logging.getLogger(__name__)
KERNELS = ("aten", "dequant")


def choose_kernel(device: torch.device) -> str:
    return "aten" if device.type == "cpu" else "dequant"


class QuantLinear(nn.Module):
    """y = x W^T + b with W held as int8 (per-row scales) or int4 (per-group scales and zeros).

    Buffers by kernel (all persistent, so `load_state_dict(assign=True)` fills them):
      int8, any kernel:  weight int8 [out, in], weight_scale [out] (activation dtype)
      int4, "aten":      weight uint8 [out, in / 2] in the CPU kernel's packing,
                         weight_scale_zero [in / group, out, 2] (activation dtype)
      int4, "dequant":   weight uint8 [out, in / 2] (portable packing), weight_scale_zero as above
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, cfg: QuantConfig,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", kernel: str | None = None):
        super().__init__()
        check_shape(cfg, out_features, in_features)
        self.in_features, self.out_features, self.cfg = in_features, out_features, cfg
        device = torch.device(device)
        self.kernel = kernel or choose_kernel(device if device.type != "meta" else torch.device("cpu"))
        if self.kernel not in KERNELS:
            raise QuantizationError(f"unknown quantized kernel {self.kernel!r}")
        if cfg.method == "int8":
            self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
            self.register_buffer("weight_scale", torch.empty(out_features, dtype=dtype, device=device))
        else:
            self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8,
                                                       device=device))
            self.register_buffer("weight_scale_zero", torch.empty(in_features // cfg.group_size, out_features, 2,
                                                                  dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    # ---- loading --------------------------------------------------------------------------------------------

    def runtime_tensors(self, parts: dict[str, Tensor], dtype: torch.dtype,
                        device: torch.device) -> dict[str, Tensor]:
        """Portable parts (quant_format) -> this module's buffers, on device, activation scales in dtype."""
        if self.cfg.method == "int8":
            return {"weight": parts["weight"].to(device).contiguous(),
                    "weight_scale": parts["weight_scale"].to(device=device, dtype=dtype).contiguous()}
        packed = parts["weight"]
        if self.kernel == "aten":
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_nibbles(packed).to(torch.int32), 1)
        scale_zero = torch.stack((parts["weight_scale"], parts["weight_zero"]), dim=-1).transpose(0, 1)
        return {"weight": packed.to(device).contiguous(),
                "weight_scale_zero": scale_zero.to(device=device, dtype=dtype).contiguous()}

    def portable_parts(self) -> dict[str, Tensor]:
        """This module's weight in the portable layout (float32 scales): the inverse of runtime_tensors."""
        if self.cfg.method == "int8":
            return {"weight": self.weight, "weight_scale": self.weight_scale.float()}
        sz = self.weight_scale_zero.float().transpose(0, 1)
        return {"weight": self._portable_nibbles(), "weight_scale": sz[..., 0].contiguous(),
                "weight_zero": sz[..., 1].contiguous()}

    def _portable_nibbles(self) -> Tensor:
        if self.kernel != "aten":
            return self.weight
        # the CPU packing is opaque: recover the levels by multiplying the identity with unit scales, zero 8
        eye = torch.eye(self.in_features, dtype=self.weight_scale_zero.dtype)
        unit = torch.zeros_like(self.weight_scale_zero)
        unit[..., 0] = 1.0
        levels = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight, self.cfg.group_size, unit)
        q = (levels.t() + 8).round().to(torch.uint8)                 # [out, in]
        return q[:, 0::2] | (q[:, 1::2] << 4)

    # ---- forward --------------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "dequant":
            w = dequantize(self.cfg, self._dequant_parts()).to(x.dtype)
            out = F.linear(x, w)
        elif self.cfg.method == "int8":
            out = torch.ops.aten._weight_int8pack_mm(x, self.weight, self.weight_scale)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight, self.cfg.group_size,
                                                              self.weight_scale_zero)
        return out if self.bias is None else out.add_(self.bias)

    def _dequant_parts(self) -> dict[str, Tensor]:
        if self.cfg.method == "int8":
            return {"weight": self.weight, "weight_scale": self.weight_scale}
        return {"weight": self.weight, "weight_scale": self.weight_scale_zero[..., 0].t(),
                "weight_zero": self.weight_scale_zero[..., 1].t()}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.cfg.describe()}, kernel={self.kernel}")


def _linears(model: nn.Module):
    from neoxserve.model.neox import Linear
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Linear)]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def swap_linears(model: nn.Module, cfg: QuantConfig, dtype: torch.dtype, device: torch.device) -> None:
    """Replace every neox.Linear of a (meta-device) model by an empty QuantLinear in place."""
    kernel = choose_kernel(device)
    for name, lin in _linears(model):
        _set(model, name, QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, cfg, dtype,
                                      device="meta", kernel=kernel))


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
