"""n-gram speculative decoding: decode tokens/s with speculation off and on, 1 and 16 streams.

    .venv/bin/python bench/bench_speculative.py [--model demo|demo-random|pythia-160m] [--new-tokens 96] [--k 4]

--model: the trained demo model (default: real text, so its greedy continuations repeat as a language model's do),
the random-weight demo model, or a random GPT-NeoX of a real shape (bench/random_neox.py: pythia-160m, whose decode
step reads 300 MB of float32 weights, where verifying several tokens in one step pays most). Engine in-process
(LLMEngine.step loop, no HTTP), float32:
(a) repeating: greedy continuation of a prompt that holds the passage the model will loop through (the prompt is
    a passage plus the model's own first 64 greedy tokens after it, so the continuation repeats what it saw);
(b) not repeating: seeded sampling (temperature 1, top-p 0.95) after a prompt of distinct tokens.
Tokens/s = generated tokens / wall time after every stream's first token (prefill excluded). Each run prints the
acceptance rate (accepted / proposed draft tokens) and the draft tokens per verification.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_neox import write_model

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.worker.core import LLMEngine
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.model.demo import write_demo_model, write_trained_demo_model
from neoxserve.model.loader import load_model


def run(loaded, method: str, k: int, prompts: list[list[int]], params: list[SamplingParams]) -> dict:
    cfg = replace(engine_config(Settings(kv_cache_memory_mb=256)), speculative_method=method,
                  num_speculative_tokens=k)
    engine = LLMEngine(loaded, cfg)
    for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
        engine.add_request(f"r{i}", p, sp)
    started: set[str] = set()
    t0 = None
    tokens = 0
    while engine.has_unfinished():
        for d in engine.step():
            if d.request_id in started:
                tokens += len(d.token_ids)
            elif d.token_ids:
                started.add(d.request_id)
        if t0 is None and len(started) == len(prompts):
            t0 = time.perf_counter()
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    s = engine.stats()
    proposed, accepted, steps = (s["spec_proposed_tokens_total"], s["spec_accepted_tokens_total"],
                                 s["spec_verify_steps_total"])
    return {"tps": tokens / elapsed if elapsed else 0.0, "acc": accepted / proposed if proposed else 0.0,
            "per_step": proposed / steps if steps else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--model", default="demo", help="demo, demo-random or a bench/random_neox.py shape")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    if args.model == "demo":
        write_trained_demo_model(d)
    elif args.model == "demo-random":
        write_demo_model(d)
    else:
        d = write_model(Path(tempfile.gettempdir()) / f"neoxserve-bench-{args.model}", args.model)
    loaded = load_model(d, dtype="float32")
    print(f"model: {args.model}")
    vocab = loaded.config.vocab_size
    greedy = SamplingParams(greedy=True, max_new_tokens=args.new_tokens, ignore_eos=True)
    rows = []
    for streams in (1, 16):
        base = [[(7 * j + 13 * s) % 50 + 100 for j in range(20)] * 2 for s in range(streams)]
        # the model's own first 64 greedy tokens after each passage become part of the prompt
        warm = LLMEngine(loaded, replace(engine_config(Settings(kv_cache_memory_mb=256))))
        for s, p in enumerate(base):
            warm.add_request(f"w{s}", p, replace(greedy, max_new_tokens=64))
        seen: dict[str, list[int]] = {}
        while warm.has_unfinished():
            for dl in warm.step():
                seen.setdefault(dl.request_id, []).extend(dl.token_ids)
        repeating = [p + seen[f"w{s}"] for s, p in enumerate(base)]
        distinct = [[(101 * j + 7 * s) % (vocab - 10) + 5 for j in range(40)] for s in range(streams)]
        sampled = [SamplingParams(seed=s, temperature=1.0, top_p=0.95, max_new_tokens=args.new_tokens,
                                  ignore_eos=True) for s in range(streams)]
        for name, prompts, params in (("(a) repeating", repeating, [greedy] * streams),
                                      ("(b) not repeating", distinct, sampled)):
            off = run(loaded, "none", args.k, prompts, params)
            on = run(loaded, "ngram", args.k, prompts, params)
            rows.append((name, streams, off["tps"], on["tps"], on["tps"] / off["tps"], on["acc"], on["per_step"]))
    print(f"| workload | streams | off tok/s | ngram K={args.k} tok/s | on/off | acceptance | drafts/verification |")
    print("|---|---|---|---|---|---|---|")
    for name, streams, a, b, r, acc, per in rows:
        print(f"| {name} | {streams} | {a:.1f} | {b:.1f} | {r:.2f}x | {acc:.0%} | {per:.2f} |")


if __name__ == "__main__":
    main()
