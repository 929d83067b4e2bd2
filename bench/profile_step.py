"""Where the time of one engine step goes, op by op (torch profiler), for a decode step and a mixed step.

    .venv/bin/python bench/profile_step.py [--shape 160m|3b] [--dtype float32|bfloat16] [--quantization none|int8|int4]
        [--group-size 128] [--batch 1] [--context 128] [--prefill 0] [--steps 20] [--rows 25] [--compile]

One step = what `ModelRunner.run` does: build the flat inputs and AttentionMetadata, run the model, compute the
logits of the rows to sample, sample (greedy). `--batch` sequences decode with `--context` tokens cached each;
`--prefill N` adds one sequence computing an N-token prompt chunk in the same step (a mixed prefill+decode step).
Random weights of the chosen shape (speed depends only on shapes). Prints the wall time per step (median of
`--steps`) and the profiler's table of ops by self CPU time over those steps, plus totals per op group.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

# --src DIR: profile the neoxserve package under DIR (another checkout: bench/compare_trees.py uses it)
_src = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, _src)

from neoxserve.engine.sampling_params import SamplingParams  # noqa: E402

try:
    from neoxserve.engine.worker.runner import ModelRunner
    from neoxserve.engine.worker.scheduler import ScheduledBatch
    from neoxserve.engine.worker.sequence import Sequence
except ModuleNotFoundError:   # a --src tree from before engine/worker/ (issue 18), e.g. compare_trees.py's --before
    from neoxserve.engine.runner import ModelRunner
    from neoxserve.engine.scheduler import ScheduledBatch
    from neoxserve.engine.sequence import Sequence

from neoxserve.model.config import NeoXConfig  # noqa: E402
from neoxserve.model.neox import GPTNeoX  # noqa: E402

SHAPES = {
    "160m": dict(vocab_size=50432, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=4096),
    "3b": dict(vocab_size=50688, hidden_size=4096, num_hidden_layers=16, num_attention_heads=32,
               intermediate_size=16384, rotary_pct=0.25, max_position_embeddings=4096),
}
BLOCK_SIZE = 16


def build_model(shape: str, dtype: torch.dtype, quantization: str, group_size: int) -> GPTNeoX:
    """Random weights in the layout the loader gives that dtype (fp32 linears split across the threads)."""
    try:
        from neoxserve.model import dtype_policy as policy
    except ImportError:     # older trees (--src): the loader held the dtype policy
        from neoxserve.model import loader as policy
    cfg = NeoXConfig(**SHAPES[shape])
    torch.manual_seed(0)
    # bf16 on a CPU without bf16 units: bf16 linears with float32 arithmetic, as the loader builds it
    bf16_linears = quantization == "none" and getattr(policy, "uses_bf16_weight_kernel", lambda *a: False)(
        dtype, torch.device("cpu"), cfg)
    if bf16_linears:
        dtype = torch.float32
    with torch.device("meta"):
        layout = dict(bf16_linears=True) if bf16_linears else dict(
            linear_splits=0 if quantization != "none" else policy.linear_splits(dtype, torch.device("cpu")))
        model = GPTNeoX(cfg, **layout)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    if not bf16_linears:
        model = model.to(dtype)
    model.init_rotary()
    model.eval().requires_grad_(False)
    if dtype == torch.float32 and hasattr(model, "use_native_attention"):   # as a loaded model has it (older trees: no)
        from neoxserve.model import kernels
        model.use_native_attention(kernels.load())
    if quantization == "none":
        return model
    from neoxserve.model.quant_format import QuantConfig
    from neoxserve.model.quant_linear import quantize_model
    return quantize_model(model, QuantConfig(quantization, group_size))


def make_batch(model: GPTNeoX, batch: int, context: int, prefill: int) -> tuple[ScheduledBatch, int]:
    """Sequences with contiguous block tables, as if their context were cached; returns (batch, blocks needed)."""
    params = SamplingParams(greedy=True, max_new_tokens=4096)
    g = torch.Generator().manual_seed(1)
    sched = ScheduledBatch()
    next_block = 0
    lengths = [(context + 1, 1)] * batch + ([(prefill, prefill)] if prefill else [])
    for i, (total, new) in enumerate(lengths):
        seq = Sequence(f"s{i}", torch.randint(2, 50000, (total,), generator=g).tolist(), params)
        seq.num_computed_tokens = total - new
        nblocks = -(-(total + 64) // BLOCK_SIZE)
        seq.block_table = list(range(next_block, next_block + nblocks))
        next_block += nblocks
        sched.seqs.append(seq)
        sched.num_new_tokens.append(new)
    return sched, next_block


def group_of(name: str) -> str:
    for key, group in (("int8pack", "linear (quantized)"), ("int4pack", "linear (quantized)"),
                       ("neoxserve::", "linear (quantized)"), ("addmm", "linear"), ("aten::mm", "linear"),
                       ("bmm", "linear"), ("linear", "linear"), ("matmul", "linear"),
                       ("scaled_dot_product", "attention"), ("_flash_attention", "attention"),
                       ("index", "kv cache write / gather"), ("nan_to_num", "kv finite guard"),
                       ("layer_norm", "layernorm"), ("gelu", "gelu"), ("cat", "rotary"), ("mul", "elementwise"),
                       ("add", "elementwise"), ("tensor", "input construction"), ("copy_", "copy / cast"),
                       ("to", "copy / cast")):
        if key in name:
            return group
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="160m")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--quantization", choices=["none", "int8", "int4"], default="none")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--wall-only", action="store_true", help="time the steps, skip the profiler")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile (Inductor, dynamic shapes) each layer's MLP and layer norms (the parts "
                         "without the paged cache): issue 9's trial, not kept (docs/benchmarks.md)")
    ap.add_argument("--src", help="the neoxserve source directory to import (default: this checkout's src)")
    args = ap.parse_args()

    dtype = getattr(torch, args.dtype)
    model = build_model(args.shape, dtype, args.quantization, args.group_size)
    batch, nblocks = make_batch(model, args.batch, args.context, args.prefill)
    runner = ModelRunner(model, model.cfg, nblocks, BLOCK_SIZE)
    if args.compile:
        for layer in model.layers:
            for name in ("mlp", "input_layernorm", "post_attention_layernorm"):
                setattr(layer, name, torch.compile(getattr(layer, name), dynamic=True))

    def step() -> None:
        runner.run(batch)
        for seq, n in zip(batch.seqs, batch.num_new_tokens):   # the same step again: its context stays put
            seq.token_ids = seq.token_ids[: seq.num_computed_tokens + n]

    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)

    tokens = sum(batch.num_new_tokens)
    print(f"shape {args.shape}, dtype {args.dtype}, quantization {args.quantization}, {args.batch} decoding "
          f"(context {args.context}) + prefill {args.prefill}: {tokens} tokens/step, torch threads "
          f"{torch.get_num_threads()}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"wall per step: median {statistics.median(times) * 1e3:.2f} ms, min {min(times) * 1e3:.2f} ms")
    if args.wall_only:
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    total = sum(groups.values())
    print("| group | ms per step (self CPU) | share |\n|---|---|---|")
    for name, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {us / args.steps / 1e3:.3f} | {us / total:.0%} |")


if __name__ == "__main__":
    main()
