"""Flags that choose how the model is loaded (quantization, kernels), shared by `serve` and `generate` (their values
are Settings fields)."""
from __future__ import annotations

import argparse
import typing

from ..config import Settings

LOAD_FLAGS = ("quantization", "quantization_group_size", "kernels")


def setting_choices(field: str) -> tuple[object, ...]:
    """The values a Literal-typed Settings field allows (one owner: the Settings annotation)."""
    return typing.get_args(Settings.model_fields[field].annotation)


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantization", choices=setting_choices("quantization"),
                   help="weight-only quantization of every linear, done while loading (default none; a directory "
                        "written by `neoxserve quantize` loads as stored)")
    p.add_argument("--quantization-group-size", dest="quantization_group_size", type=int,
                   choices=setting_choices("quantization_group_size"),
                   help="int4: input columns sharing one scale (default 128)")
    p.add_argument("--kernels", choices=setting_choices("kernels"),
                   help="the native CPU kernels' instruction set (default auto: the widest this CPU has; one it "
                        "lacks is refused at start-up)")
