"""Serving benchmark, in the style of vLLM's benchmark_serving: N concurrent clients through AsyncEngineClient.

Each client sends its next request as soon as the previous one finishes (closed loop). Prompts are a fixed number
of random token ids (distinct per request, so the prefix cache does not help), outputs a fixed length per request
drawn from [--output-min, --output-max] (ignore_eos, greedy). Reported per concurrency level: request throughput,
output tokens/s, TTFT, TPOT and inter-token latency (p50 / p99). Then, in the same run, transformers' `generate`
serves the same requests one after another (the baseline).

The model is Pythia-160M-shaped (hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 50432) with random
weights, written with transformers' save_pretrained to a temp dir (plus the demo model's tokenizer.json).

    .venv/bin/python bench/bench_serving.py                       # 1, 4, 16 clients + baseline
    .venv/bin/python bench/bench_serving.py --concurrency 16 --baseline-requests 4
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PYTHIA_160M = dict(vocab_size=50432, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=2048,
                   use_parallel_residual=True, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)


@dataclass
class RequestResult:
    output_tokens: int
    ttft: float                       # seconds from submit to first token
    latency: float                    # seconds from submit to last token
    itls: list[float] = field(default_factory=list)   # gaps between successive tokens

    @property
    def tpot(self) -> float | None:
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


def write_model(path: Path) -> Path:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from neoxserve.model.demo import build_tokenizer

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M)).eval()
    model.save_pretrained(path)
    (path / "tokenizer.json").write_text(build_tokenizer().to_str(), encoding="utf-8")
    return path


def make_requests(n: int, input_len: int, out_min: int, out_max: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(100, PYTHIA_160M["vocab_size"]) for _ in range(input_len)], rng.randint(out_min, out_max))
            for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarize(name: str, results: list[RequestResult], wall: float) -> dict:
    tokens = sum(r.output_tokens for r in results)
    ttft = [r.ttft for r in results]
    tpot = [t for r in results if (t := r.tpot) is not None]
    itl = [x for r in results for x in r.itls]
    return {
        "name": name, "load": os.getloadavg()[0], "requests": len(results), "wall_s": wall, "req_per_s": len(results) / wall,
        "out_tok_per_s": tokens / wall,
        "ttft_p50_ms": 1000 * percentile(ttft, 50), "ttft_p99_ms": 1000 * percentile(ttft, 99),
        "tpot_p50_ms": 1000 * percentile(tpot, 50), "tpot_p99_ms": 1000 * percentile(tpot, 99),
        "itl_p50_ms": 1000 * percentile(itl, 50), "itl_p99_ms": 1000 * percentile(itl, 99),
    }


async def run_engine_level(client, requests: list[tuple[list[int], int]], concurrency: int,
                           tag: str) -> tuple[list[RequestResult], float]:
    from neoxserve.engine.sampling_params import SamplingParams

    todo = list(enumerate(requests))
    results: list[RequestResult] = []

    async def one(i: int, prompt: list[int], out_len: int) -> RequestResult:
        params = SamplingParams(greedy=True, max_new_tokens=out_len, ignore_eos=True)
        start = time.perf_counter()
        times: list[float] = []
        n = 0
        async for delta in client.generate(f"{tag}-{i}", prompt, params):
            now = time.perf_counter()
            for _ in delta.token_ids:
                times.append(now)
            n = delta.completion_tokens
        assert n == out_len, (n, out_len)
        return RequestResult(n, times[0] - start, times[-1] - start, [b - a for a, b in zip(times, times[1:])])

    async def worker() -> None:
        while todo:
            i, (prompt, out_len) = todo.pop(0)
            results.append(await one(i, prompt, out_len))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def run_baseline(model_dir: Path, requests: list[tuple[list[int], int]], threads: int, dtype: str
                 ) -> tuple[list[RequestResult], float]:
    import torch
    from transformers import GPTNeoXForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    model = GPTNeoXForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.calls = 0

        def put(self, value) -> None:
            self.calls += 1
            if self.calls > 1:                 # the first call carries the prompt
                self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    with torch.inference_mode():             # warm-up
        model.generate(torch.tensor([requests[0][0][:16]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    results = []
    wall_start = time.perf_counter()
    for prompt, out_len in requests:
        clock = Clock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=out_len, min_new_tokens=out_len,
                                 do_sample=False, pad_token_id=0, streamer=clock)
        n = out.shape[1] - len(prompt)
        assert n == out_len == len(clock.times), (n, out_len, len(clock.times))
        t = clock.times
        results.append(RequestResult(n, t[0] - start, t[-1] - start, [b - a for a, b in zip(t, t[1:])]))
    return results, time.perf_counter() - wall_start


def table(rows: list[dict]) -> str:
    cols = [("name", "setup", "{}"), ("requests", "requests", "{}"), ("req_per_s", "req/s", "{:.3f}"),
            ("out_tok_per_s", "output tok/s", "{:.1f}"), ("ttft_p50_ms", "TTFT p50 ms", "{:.0f}"),
            ("ttft_p99_ms", "TTFT p99 ms", "{:.0f}"), ("tpot_p50_ms", "TPOT p50 ms", "{:.1f}"),
            ("tpot_p99_ms", "TPOT p99 ms", "{:.1f}"), ("itl_p50_ms", "ITL p50 ms", "{:.1f}"),
            ("itl_p99_ms", "ITL p99 ms", "{:.1f}"), ("load", "load avg after", "{:.2f}")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |")
    return "\n".join(lines)


async def bench_engine(args, model_dir: Path) -> list[dict]:
    from neoxserve.commands.engine_config import engine_config
    from neoxserve.config import Settings
    from neoxserve.engine.client import AsyncEngineClient

    settings = Settings(model=str(model_dir), torch_threads=args.threads, dtype=args.dtype, kv_cache_memory_mb=args.kv_cache_memory_mb,
                        max_num_seqs=max(args.concurrency), max_num_batched_tokens=args.max_num_batched_tokens,
                        data_dir=Path(tempfile.gettempdir()) / "neoxserve-bench-data")
    client = await AsyncEngineClient.start(engine_config(settings))
    rows = []
    try:
        await run_engine_level(client, make_requests(2, 16, 4, 4, seed=99), 2, "warmup")
        for c in args.concurrency:
            n = args.num_prompts or min(64, max(8, 4 * c))
            requests = make_requests(n, args.input_len, args.output_min, args.output_max, args.seed)
            results, wall = await run_engine_level(client, requests, c, f"c{c}")
            row = summarize(f"neoxserve, {c} client{'s' if c > 1 else ''}", results, wall)
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    finally:
        await client.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--num-prompts", type=int, default=0,
                        help="requests per concurrency level; 0 = 4 x concurrency, within [8, 64]")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-min", type=int, default=64)
    parser.add_argument("--output-max", type=int, default=128)
    parser.add_argument("--baseline-requests", type=int, default=16,
                        help="how many of the same requests transformers generate serves one after another")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, engine and baseline alike")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and activations, engine and baseline alike (float32 = the service's auto on CPU)")
    parser.add_argument("--kv-cache-memory-mb", type=int, default=512)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, help="reuse a model directory instead of writing a new one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pythia160m-") as tmp:
        model_dir = args.model_dir or write_model(Path(tmp))
        print(f"model: {model_dir} (Pythia-160M shape, random weights); {args.dtype}; torch threads {args.threads}",
              flush=True)
        print(table([]), flush=True)
        rows = asyncio.run(bench_engine(args, model_dir))
        if args.baseline_requests:
            requests = make_requests(args.baseline_requests, args.input_len, args.output_min, args.output_max, args.seed)
            results, wall = run_baseline(model_dir, requests, args.threads, args.dtype)
            row = summarize("transformers generate, one after another", results, wall)
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    base = rows[-1]["out_tok_per_s"] if args.baseline_requests else None
    if base:
        for row in rows[:-1]:
            print(f"{row['name']}: {row['out_tok_per_s'] / base:.2f}x the baseline's output tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
