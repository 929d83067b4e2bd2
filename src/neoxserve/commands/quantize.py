"""`neoxserve quantize`: write a weight-only quantized copy of a model directory, which `serve --model` and
`generate --model` then load as it is (no quantizing at start-up)."""
from __future__ import annotations

import argparse
import sys
import time

from .model_flags import setting_choices


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("quantize", help="write an int8 or int4 copy of a model directory",
                              description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face GPT-NeoX directory with float weights")
    p.add_argument("--out", required=True, help="new directory to write (must not exist, or be empty)")
    p.add_argument("--quantization", required=True, choices=[c for c in setting_choices("quantization")
                                                             if c != "none"])
    p.add_argument("--quantization-group-size", dest="quantization_group_size", type=int, default=None,
                   choices=setting_choices("quantization_group_size"), help="int4: input columns sharing one scale")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import Settings
    from ..model.errors import CheckpointError
    from ..model.quant_format import QuantConfig
    from ..model.quantize_dir import write_quantized

    group = args.quantization_group_size or Settings.model_fields["quantization_group_size"].default
    quant = QuantConfig(args.quantization, group)
    start = time.perf_counter()
    try:
        out = write_quantized(args.model, args.out, quant)
    except CheckpointError as e:
        print(f"neoxserve quantize: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({quant.describe()}) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
