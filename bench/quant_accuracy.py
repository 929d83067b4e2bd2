"""The accuracy of int8 and int4 weights against the float32 model, on the check's models and inputs
(bench/quant_check.py; tests/model/test_quant_accuracy.py enforces thresholds on the same values).

    .venv/bin/python bench/quant_accuracy.py [--group-sizes 32 64 128 256]

Prints, for every configuration and quantization, the mean KL divergence of the next-token distributions (nats),
the top-1 agreement and the mean cosine similarity of the logits over the check's 256 positions, as a markdown
table for docs/engine.md.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from quant_check import CHECK_CONFIGS, check_model, check_token_ids, compare_logits, teacher_forced_logits
from neoxserve.choices import GROUP_SIZES
from neoxserve.model.quant_format import QuantConfig
from neoxserve.model.quant_linear import choose_kernel, quantize_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group-sizes", type=int, nargs="+", default=[128], choices=GROUP_SIZES,
                    help="int4 group sizes to measure")
    args = ap.parse_args()
    torch.set_num_threads(1)
    quants = [QuantConfig("int8")] + [QuantConfig("int4", g) for g in args.group_sizes]
    print(f"kernel: {choose_kernel(torch.device('cpu'))}")
    print("| configuration | weights | mean KL (nats) | top-1 agreement | logit cosine |")
    print("|---|---|---|---|---|")
    ids = check_token_ids()
    for name in CHECK_CONFIGS:
        model = check_model(name)
        reference = teacher_forced_logits(model, ids)
        for quant in quants:
            a = compare_logits(reference, teacher_forced_logits(quantize_model(copy.deepcopy(model), quant), ids))
            print(f"| {name} | {quant.describe()} | {a.mean_kl:.5f} | {a.top1_agreement:.4f} | "
                  f"{a.mean_cosine:.5f} |", flush=True)


if __name__ == "__main__":
    main()
