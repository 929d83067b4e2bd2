"""The quantization of a model directory's weights: what its config.json declares (`quantization_config`, written by
`neoxserve quantize`), and what the directory loads as given the quantization asked for."""
from __future__ import annotations

import json
from pathlib import Path

from neoxserve.model.errors import CheckpointError
from neoxserve.model.quant_format import QuantConfig, QuantizationError


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
    """A quantized directory loads as stored; asking for another quantization of it is a CheckpointError."""
    if stored is None:
        return requested
    if requested.enabled and requested != stored:
        raise CheckpointError(f"{path} holds weights quantized as {stored.describe()}; they cannot be loaded as "
                              f"{requested.describe()} (quantize the float checkpoint instead, or leave "
                              f"quantization at none to load them as they are)")
    return stored
