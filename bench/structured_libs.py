"""xgrammar against llguidance on the GPT-NeoX tokenizer: import time, grammar compile time (a JSON schema, the
built-in "any JSON" grammar) and per-token mask time along a valid answer, with the model's padded vocabulary.

    python bench/structured_libs.py [--tokenizer /work/shared/assets/gpt-neox-20b-tokenizer.json] [--vocab 50432]

Each library runs in its own subprocess so that its import cost is measured from a clean interpreter (xgrammar
imports torch and transformers; llguidance imports neither). Needs both installed (neither is required by the
other's path; docs/engine.md says which the engine uses and why).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 4},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string",
                    "pattern": "^[0-9]{5}$"}}, "required": ["city", "zip"]},
    },
    "required": ["name", "age", "tags", "address"],
    "additionalProperties": False,
}
ANSWER = '{"name": "Ada Lovelace", "age": 36, "tags": ["a", "c"], "address": {"city": "London", "zip": "12345"}}'
REPEATS = 5


def _time(fn, repeats=REPEATS):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run_llguidance(tokenizer_path: str, vocab: int) -> dict:
    t = time.perf_counter()
    import llguidance
    import numpy as np
    import_s = time.perf_counter() - t
    assert "torch" not in sys.modules
    t = time.perf_counter()
    tok = llguidance.LLTokenizer(tokenizer_path, n_vocab=vocab)
    tokenizer_s = time.perf_counter() - t
    schema_grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA))
    any_json = llguidance.LLMatcher.grammar_from_json_schema('{"type": "object"}')
    schema_s, _ = _time(lambda: llguidance.LLMatcher(tok, schema_grammar))
    json_s, _ = _time(lambda: llguidance.LLMatcher(tok, any_json))
    ids = tok.tokenize_str(ANSWER)
    mask = np.zeros((1, (vocab + 31) // 32), dtype=np.int32)

    def walk():
        m = llguidance.LLMatcher(tok, schema_grammar)
        per = []
        for i in ids:
            t0 = time.perf_counter()
            m.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
            per.append(time.perf_counter() - t0)
            assert (mask[0, i // 32] >> (i % 32)) & 1, "the valid answer's token is masked out"
            assert m.consume_token(i), m.get_error()
        assert m.is_accepting()
        return per
    walk()   # warm
    per = [x for _ in range(REPEATS) for x in walk()]
    return {"lib": "llguidance " + llguidance.__version__, "import_s": import_s, "tokenizer_s": tokenizer_s,
            "schema_compile_s": schema_s, "json_compile_s": json_s, "tokens": len(ids),
            "mask_median_us": statistics.median(per) * 1e6, "mask_p99_us": sorted(per)[int(len(per) * .99)] * 1e6,
            "mask_max_us": max(per) * 1e6}


def run_xgrammar(tokenizer_path: str, vocab: int) -> dict:
    t = time.perf_counter()
    import torch
    import xgrammar as xgr
    from transformers import PreTrainedTokenizerFast
    import_s = time.perf_counter() - t
    from importlib.metadata import version
    t = time.perf_counter()
    hf = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
    info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)
    tokenizer_s = time.perf_counter() - t
    schema_s, compiled = _time(lambda: compiler.compile_json_schema(json.dumps(SCHEMA)))
    json_s, _ = _time(lambda: compiler.compile_builtin_json_grammar())
    ids = hf.encode(ANSWER)
    mask = xgr.allocate_token_bitmask(1, vocab)

    def walk():
        m = xgr.GrammarMatcher(compiled)
        per = []
        for i in ids:
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(mask)
            per.append(time.perf_counter() - t0)
            assert (int(mask[0, i // 32]) >> (i % 32)) & 1, "the valid answer's token is masked out"
            assert m.accept_token(i)
        return per
    walk()
    per = [x for _ in range(REPEATS) for x in walk()]
    del torch
    return {"lib": "xgrammar " + version("xgrammar"), "import_s": import_s, "tokenizer_s": tokenizer_s,
            "schema_compile_s": schema_s, "json_compile_s": json_s, "tokens": len(ids),
            "mask_median_us": statistics.median(per) * 1e6, "mask_p99_us": sorted(per)[int(len(per) * .99)] * 1e6,
            "mask_max_us": max(per) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="/work/shared/assets/gpt-neox-20b-tokenizer.json")
    ap.add_argument("--vocab", type=int, default=50432)
    ap.add_argument("--one", choices=["llguidance", "xgrammar"])
    a = ap.parse_args()
    if a.one:
        fn = run_llguidance if a.one == "llguidance" else run_xgrammar
        print(json.dumps(fn(a.tokenizer, a.vocab)))
        return
    print(f"load before: {os.getloadavg()}")
    for lib in ("llguidance", "xgrammar"):
        out = subprocess.run([sys.executable, __file__, "--one", lib, "--tokenizer", a.tokenizer,
                              "--vocab", str(a.vocab)], capture_output=True, text=True)
        if out.returncode:
            print(f"{lib}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['lib']:18} import {r['import_s']:.2f} s, tokenizer {r['tokenizer_s']:.2f} s, "
              f"schema compile {r['schema_compile_s'] * 1e3:.1f} ms, any-JSON compile {r['json_compile_s'] * 1e3:.1f}"
              f" ms, mask per token over {r['tokens']} tokens: median {r['mask_median_us']:.0f} us, p99 "
              f"{r['mask_p99_us']:.0f} us, max {r['mask_max_us']:.0f} us")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
