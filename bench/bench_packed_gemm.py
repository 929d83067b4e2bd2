"""The VNNI GEMM over packed tiles (int8_gemm / int4_gemm) against the expansion path it replaces, side by side.

    flock /work/.bench.lock .venv/bin/python bench/bench_packed_gemm.py [--shapes 160m 3b] [--rows 128 512]

For each shape's four layer linears (QKV, dense, MLP up, MLP down; random weights), int8 and int4 (group 128), and
each row count: ms per call (best of --repeats) of QuantLinear above GEMM_ROWS with the GEMM, and with the
expansion (float32 activations: float32 expansion + MKL; bfloat16: bf16 expansion + oneDNN where the CPU has bf16
units), interleaved in one process. GMAC/s and the share of an assumed int8 peak: 64 MACs per vpdpbusd zmm, one per
cycle per core (Zen 4 runs 512-bit ops as two 256-bit halves on its two vector pipes), at --ghz.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from neoxserve.model import kernels
from neoxserve.model.quant_format import QuantConfig, quantize
from neoxserve.model.quant_linear import QuantLinear

SHAPES = {"160m": (768, 3072), "3b": (4096, 16384)}


def best(f, repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["160m"], choices=SHAPES)
    ap.add_argument("--rows", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ghz", type=float, default=3.0)
    ap.add_argument("--kernels", default="auto")
    args = ap.parse_args()
    print(f"kernels {kernels.select(args.kernels)}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    peak = 64 * args.ghz * torch.get_num_threads()
    print("| shape | weights | rows | GEMM ms | GMAC/s (share of peak) | expand f32 ms | expand bf16 ms |")
    print("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for shape in args.shapes:
        h, i = SHAPES[shape]
        dims = [(h, 3 * h), (h, h), (h, i), (i, h)]
        for cfg in (QuantConfig("int8"), QuantConfig("int4", 128)):
            mods = []
            for k, n in dims:
                m = QuantLinear(k, n, False, cfg, torch.float32, "cpu", "native")
                m.load_state_dict(m.runtime_tensors(quantize(cfg, torch.randn(n, k) * 0.02), torch.float32,
                                                    torch.device("cpu")), assign=True)
                mods.append(m)
            for rows in args.rows:
                xs = {k: torch.randn(rows, k) for k in (h, i)}
                xb = {k: v.bfloat16() for k, v in xs.items()}

                def run(packed: bool, x: dict, mods: list = mods) -> None:
                    with torch.inference_mode():
                        for m in mods:
                            m.packed_gemm = packed
                            m(x[m.in_features])
                t_new = best(lambda xs=xs: run(True, xs), args.repeats)
                t_f32 = best(lambda xs=xs: run(False, xs), args.repeats)
                t_bf = best(lambda xb=xb: run(False, xb), args.repeats)
                gmac = rows * sum(k * n for k, n in dims) / 1e9
                print(f"| {shape} | {cfg.describe()} | {rows} | {t_new * 1e3:.1f} | {gmac / t_new:.0f} "
                      f"({gmac / t_new / peak:.0%}) | {t_f32 * 1e3:.1f} | {t_bf * 1e3:.1f} |", flush=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
