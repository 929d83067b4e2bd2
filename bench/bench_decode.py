"""Single-stream greedy decode speed: neoxserve's GPT-NeoX vs transformers' generate, same random weights.

    .venv/bin/python bench/bench_decode.py [--repeats 3] [--new-tokens 128] [--prompt-tokens 32]

Pythia-160M-shaped model (hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 50432), fp32 and bf16.
Decode tokens/s = (new_tokens - 1) / (time(prompt + new_tokens) - time(prompt + 1 token)), so prefill is excluded
the same way for both. Bandwidth used = weight bytes read per token x tokens/s, compared with the copy bandwidth
measured here (bytes read + bytes written per second by a large tensor copy).
Prints a markdown table (median of the repeats).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache  # noqa: E402
from neoxserve.model.demo import build_tokenizer  # noqa: E402
from neoxserve.model.loader import load_model  # noqa: E402
from neoxserve.model.neox import Linear  # noqa: E402

from machine import copy_bandwidth  # noqa: E402

SHAPE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
             vocab_size=50432, rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True)
BLOCK_SIZE = 16


def read_bandwidth(mbytes: int = 512, repeats: int = 7) -> float:
    """Bytes read per second by summing a large float32 tensor (for reference: decode mostly reads weights)."""
    src = torch.ones(mbytes * 2**20 // 4)
    src.sum()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        src.sum()
        times.append(time.perf_counter() - t)
    return src.nbytes / statistics.median(times)


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Every parameter is read once per decoded token, except the input embedding (one row)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else model.embed_in.weight
    return total - emb.numel() * emb.element_size() + emb.shape[1] * emb.element_size()


def time_transformers(hf, prompt: torch.Tensor, new_tokens: int) -> float:
    t = time.perf_counter()
    hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - t


def time_neoxserve(model, kv, prompt: list[int], new_tokens: int) -> float:
    table = list(range(kv[0][0].shape[0]))
    t = time.perf_counter()
    ids, n = prompt, 0
    for _ in range(new_tokens):
        q = len(ids)
        meta = AttentionMetadata.build([q], [n + q], [table], BLOCK_SIZE)
        hidden = model(torch.tensor(ids), torch.arange(n, n + q), meta, kv)
        n += q
        ids = [int(model.compute_logits(hidden[-1:]).argmax())]
    return time.perf_counter() - t


def batched_rate(model, dtype: torch.dtype, batch: int, context: int, steps: int = 8) -> float:
    """Aggregate tokens/s of `batch` sequences decoding together (each with `context` tokens cached)."""
    blocks_per_seq = -(-(context + steps) // BLOCK_SIZE)
    kv = allocate_kv_cache(model.cfg, batch * blocks_per_seq, BLOCK_SIZE, dtype, "cpu")
    tables = [list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq)) for i in range(batch)]
    ids = torch.randint(2, 50000, (batch * context,), generator=torch.Generator().manual_seed(1))
    meta = AttentionMetadata.build([context] * batch, [context] * batch, tables, BLOCK_SIZE)
    model(ids, torch.arange(context).repeat(batch), meta, kv)
    t = time.perf_counter()
    for step in range(steps):
        n = context + step + 1
        meta = AttentionMetadata.build([1] * batch, [n] * batch, tables, BLOCK_SIZE)
        hidden = model(ids[:batch], torch.full((batch,), n - 1), meta, kv)
        model.compute_logits(hidden).argmax(-1)
    return batch * steps / (time.perf_counter() - t)


def decode_rates(timers: dict, new_tokens: int, repeats: int) -> dict[str, float]:
    """Median decode tokens/s per system; the systems alternate within each repeat so both see the same machine."""
    rates: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            first = timer(1)
            full = timer(new_tokens)
            rates[name].append((new_tokens - 1) / (full - first))
    return {name: statistics.median(r) for name, r in rates.items()}


def layout_rows(rows_list=(1, 2, 4, 8, 16, 32, 128), repeats: int = 15) -> list[tuple[int, float, float]]:
    """fp32 time of one model's worth of layer linears (12 x qkv, dense, h_to_4h, 4h_to_h) per row count:
    nn.Linear vs neoxserve's Linear split across the torch threads. (rows, ms nn.Linear, ms neoxserve)."""
    H, I = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    shapes = [(H, 3 * H), (H, H), (H, I), (I, H)] * SHAPE["num_hidden_layers"]
    plain = [torch.nn.Linear(i, o) for i, o in shapes]
    split = []
    for layer in plain:
        t = Linear(layer.in_features, layer.out_features, splits=torch.get_num_threads())
        t.weight.data, t.bias.data = t.load_layout(layer.weight.data).contiguous(), layer.bias.data
        split.append(t)
    out = []
    for rows in rows_list:
        xs = {n: torch.randn(rows, n) for n in (H, I)}
        times = []
        for layers in (plain, split):
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                for layer in layers:
                    layer(xs[layer.in_features])
                samples.append(time.perf_counter() - t)
            times.append(statistics.median(samples) * 1e3)
        out.append((rows, *times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the aggregate-throughput line")
    args = parser.parse_args()

    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    hf32 = GPTNeoXForCausalLM(GPTNeoXConfig(**SHAPE)).eval()
    prompt = torch.randint(2, 50000, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0))
    load_before = os.getloadavg()[0]
    bandwidth, read = copy_bandwidth(), read_bandwidth()
    rows, batched = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        hf32.save_pretrained(tmp)
        (Path(tmp) / "tokenizer.json").write_text(build_tokenizer().to_str())
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            hf = hf32.to(dtype) if dtype != torch.float32 else hf32
            ours = load_model(tmp, dtype=dtype_name).model
            kv = allocate_kv_cache(ours.cfg, -(-(args.prompt_tokens + args.new_tokens) // BLOCK_SIZE), BLOCK_SIZE,
                                   dtype, "cpu")
            time_neoxserve(ours, kv, prompt.tolist(), 4)  # warm up both
            time_transformers(hf, prompt[None], 4)
            rates = decode_rates({"transformers": lambda n: time_transformers(hf, prompt[None], n),
                                  "neoxserve": lambda n: time_neoxserve(ours, kv, prompt.tolist(), n)},
                                 args.new_tokens, args.repeats)
            ref, got = rates["transformers"], rates["neoxserve"]
            per_token = weight_bytes_per_token(ours)
            rows.append((dtype_name, ref, got, per_token, got * per_token))
            batched.append((dtype_name, batched_rate(ours, dtype, args.batch, args.prompt_tokens)))
            del ours, kv

    print(f"threads {torch.get_num_threads()}, nproc {os.cpu_count()}, copy bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"(read + write), read bandwidth {read / 1e9:.1f} GB/s, prompt {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, "
          f"median of {args.repeats}; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| dtype | transformers tok/s | neoxserve tok/s | ratio | weights read / token | bandwidth used | "
          "% of copy bandwidth |")
    print("|---|---|---|---|---|---|---|")
    for name, ref, got, per_token, used in rows:
        print(f"| {name} | {ref:.1f} | {got:.1f} | {got / ref:.2f}x | {per_token / 2**20:.0f} MiB | "
              f"{used / 1e9:.1f} GB/s | {100 * used / bandwidth:.0f}% |")
    print("\nfloat32, one model's worth of layer linears (12 layers), nn.Linear vs neoxserve's split Linear:\n")
    print("| rows | nn.Linear ms | split Linear ms |\n|---|---|---|")
    with torch.inference_mode():
        for rows, plain_ms, split_ms in layout_rows():
            print(f"| {rows} | {plain_ms:.1f} | {split_ms:.1f} |")
    print(f"\nneoxserve, {args.batch} sequences decoding together ({args.prompt_tokens} tokens of context each):\n")
    print("| dtype | aggregate tok/s |\n|---|---|")
    for name, rate in batched:
        print(f"| {name} | {rate:.1f} |")


if __name__ == "__main__":
    main()

