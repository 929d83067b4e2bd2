"""Decode tokens/s with and without a JSON schema, at 1 and 16 streams, in the engine itself (no HTTP).

    python bench/bench_structured.py [--shape pythia-160m] [--new-tokens 64] [--repeats 3]

A random GPT-NeoX (bench/random_neox.py: the real GPT-NeoX-20B tokenizer, 50k ids, so the masks have their real
width) serves `streams` requests at once, each `new_tokens` long, unconstrained and then under a JSON schema that
cannot end within that many tokens (an array of at least 100 objects), so both runs generate the same number of
tokens. Runs alternate (free, constrained, free, ...) and the median of `repeats` is kept. A small model makes the
step short, so the mask's share of it is larger than with a 3B or 7B model: the ratio here is the worst case.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_neox import write_model

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.worker.core import LLMEngine
from neoxserve.engine.grammar import GrammarCompiler, GrammarSpec, load_tokenizer
from neoxserve.engine.sampling_params import SamplingParams

ITEM = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                         "score": {"type": "integer"}, "tag": {"enum": ["x", "y", "z"]}},
        "required": ["name", "score", "tag"], "additionalProperties": False}
SCHEMA = {"type": "array", "items": ITEM, "minItems": 100}


def run(engine: LLMEngine, streams: int, new_tokens: int, grammar: str | None, tag: str) -> tuple[float, int]:
    """Tokens per second over the decode steps (the first token of each request, the prefill, is left out)."""
    for i in range(streams):
        prompt = [(7 * i + j) % 50000 + 1 for j in range(16)]
        engine.add_request(f"{tag}-{i}", prompt, SamplingParams(max_new_tokens=new_tokens, seed=i, grammar=grammar,
                                                                 ignore_eos=grammar is None))
    tokens, start = 0, None
    while engine.has_unfinished():
        deltas = engine.step()
        if start is None and deltas:
            start = time.perf_counter()       # after the prefill step
            continue
        tokens += sum(len(d.token_ids) for d in deltas)
    assert start is not None
    return tokens / (time.perf_counter() - start), tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="pythia-160m")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--streams", default="1,16")
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "neoxserve-bench-pythia-160m")
    a = ap.parse_args()
    model_dir = write_model(a.model_dir, a.shape)
    engine = LLMEngine.from_config(engine_config(Settings(model=str(model_dir), kv_cache_memory_mb=512,
                                                          dtype="float32")))
    grammar = GrammarCompiler(load_tokenizer(model_dir)).compile(GrammarSpec("json_schema", json.dumps(SCHEMA)))
    print(f"load before: {os.getloadavg()}")
    for streams in map(int, a.streams.split(",")):
        rates: dict[str, list[float]] = {"free": [], "schema": []}
        run(engine, streams, 8, grammar, "warm")
        for r in range(a.repeats):
            for kind in ("free", "schema"):
                rate, tokens = run(engine, streams, a.new_tokens, grammar if kind == "schema" else None,
                                   f"{kind}{r}")
                assert tokens == streams * (a.new_tokens - 1), (kind, tokens)
                rates[kind].append(rate)
        free, schema = statistics.median(rates["free"]), statistics.median(rates["schema"])
        print(f"{streams:2d} streams: unconstrained {free:7.1f} tok/s, JSON schema {schema:7.1f} tok/s, "
              f"ratio {schema / free:.3f} ({1 - schema / free:+.1%} slower); runs {rates}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
