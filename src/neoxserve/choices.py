"""The values a few settings may take, stated once: the service Settings (config.py), the engine's EngineConfig, the
CLI flags and the model code all read them from here. Plain Python, no torch and no other neoxserve import, so
that every layer may import it (docs/architecture.md, "Why the seams are what they are")."""
from __future__ import annotations

from typing import Literal, get_args

# The weights' dtype: auto (model/dtype_policy.py:resolve_dtype decides) or one of the torch dtypes by name.
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)

# Weight-only quantization of every linear (model/quant_format.py) and int4's input columns per scale and zero.
QuantizationMethod = Literal["none", "int8", "int4"]
QUANTIZATION_METHODS: tuple[QuantizationMethod, ...] = get_args(QuantizationMethod)
GroupSize = Literal[32, 64, 128, 256]
GROUP_SIZES: tuple[GroupSize, ...] = get_args(GroupSize)
DEFAULT_GROUP_SIZE: GroupSize = 128

# The native CPU kernels' instruction set: auto or one of model/kernels' VARIANTS (a test checks the two agree).
Kernels = Literal["auto", "avx2", "avx512", "avx512_vnni", "avx512_bf16"]

DEMO_MODEL = "demo"   # the default `model`: the embedded trained demo model (model/demo_trained/README.md)
DEMO_RANDOM_MODEL = "demo-random"   # the embedded random-weight model (model/demo.py), for tests needing its properties
