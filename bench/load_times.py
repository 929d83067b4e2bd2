"""How long a model takes to load, quantize and answer its first request, by format: the figures docs/quantization.md
and docs/benchmarks.md quote.

    .venv/bin/python bench/load_times.py [--shape pythia-160m|stablelm-3b] [--threads 2]

On bench/random_neox.py's random directory of the shape (bf16 safetensors, the real tokenizer), each in a fresh
process (`neoxserve` as a user runs it; the files are in the page cache after the first read, as on a server
that restarts):
- load: `load_model` of the float checkpoint as float32, as bfloat16 (bf16 linears on CPUs without bf16 units),
  quantized while loading to int8 and int4, and of the directories `neoxserve quantize` wrote (loaded as stored);
- quantize: `neoxserve quantize` to int8 and int4 (reading the float checkpoint, writing the directory);
- engine start: LLMEngine.from_config (load + KV cache + warm-up, what `serve` does before /ready) and then the
  time of the first and of the second request (32-token prompt, 16 greedy tokens): warm-up makes them equal.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import random_neox

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[4]))
from neoxserve.model.loader import load_model
from neoxserve.model.quant_format import QuantConfig
what, path, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if what == "load":
    t = time.perf_counter()
    quant = QuantConfig(spec["quantization"], 128) if spec["quantization"] != "none" else None
    load_model(path, "cpu", spec["dtype"], quant)
    print(json.dumps({"seconds": time.perf_counter() - t}))
elif what == "quantize":
    from neoxserve.model.quantize_dir import write_quantized
    t = time.perf_counter()
    write_quantized(path, spec["out"], QuantConfig(spec["quantization"], 128))
    print(json.dumps({"seconds": time.perf_counter() - t}))
else:
    from neoxserve.commands.engine_config import engine_config
    from neoxserve.config import Settings
    from neoxserve.engine.worker.core import LLMEngine
    from neoxserve.engine.sampling_params import SamplingParams
    t = time.perf_counter()
    fields = dict(model=path, device="cpu", dtype=spec["dtype"], torch_threads=int(sys.argv[4]))
    if spec["quantization"] != "none":
        fields["quantization"] = spec["quantization"]
    engine = LLMEngine.from_config(engine_config(Settings(**fields)))
    start = time.perf_counter() - t
    requests = []
    for i in range(2):
        t = time.perf_counter()
        engine.add_request(f"r{i}", list(range(1000 + i, 1032 + i)),
                           SamplingParams(greedy=True, max_new_tokens=16, ignore_eos=True))
        first = None
        while engine.has_unfinished():
            if engine.step() and first is None:
                first = time.perf_counter() - t
        requests.append({"first_token": first, "total": time.perf_counter() - t})
    print(json.dumps({"seconds": start, "requests": requests}))
"""


def child(what: str, path: Path, spec: dict, threads: int) -> dict:
    env_src = str(ROOT / "src")
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(path), json.dumps(spec), str(threads)],
                         capture_output=True, text=True, env={"PYTHONPATH": env_src, "PATH": "/usr/bin:/bin"},
                         check=False)
    if out.returncode:
        raise SystemExit(f"{what} {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(random_neox.SHAPES), default="pythia-160m")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cpu = machine.cpu_info()
    print(f"date {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; neoxserve commit {machine.git_commit()}; "
          f"load average {machine.loadavg()}; {cpu['nproc']} x {cpu['cpu']} ({cpu['flags']}); torch {cpu['torch']}; "
          f"threads {args.threads}")
    model = random_neox.write_model(ROOT / "build" / "bench-llamacpp" / args.shape / "hf", args.shape)
    child("load", model, {"dtype": "float32", "quantization": "none"}, args.threads)     # page cache warm
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        quantized = {}
        for q in ("int8", "int4"):
            quantized[q] = Path(tmp) / q
            r = child("quantize", model, {"quantization": q, "out": str(quantized[q])}, args.threads)
            rows.append((f"`neoxserve quantize --quantization {q}`", r["seconds"], ""))
        for label, path, spec in (
                ("float32", model, {"dtype": "float32", "quantization": "none"}),
                ("bfloat16", model, {"dtype": "bfloat16", "quantization": "none"}),
                ("int8, quantized while loading", model, {"dtype": "auto", "quantization": "int8"}),
                ("int4, quantized while loading", model, {"dtype": "auto", "quantization": "int4"}),
                ("int8, from the quantized directory", quantized["int8"], {"dtype": "auto", "quantization": "none"}),
                ("int4, from the quantized directory", quantized["int4"], {"dtype": "auto", "quantization": "none"})):
            r = child("load", path, spec, args.threads)
            rows.append((f"load {label}", r["seconds"], ""))
        for label, path, spec in (("float32", model, {"dtype": "float32", "quantization": "none"}),
                                  ("bfloat16", model, {"dtype": "bfloat16", "quantization": "none"}),
                                  ("int8 (directory)", quantized["int8"], {"dtype": "auto", "quantization": "none"}),
                                  ("int4 (directory)", quantized["int4"], {"dtype": "auto", "quantization": "none"})):
            r = child("engine", path, spec, args.threads)
            first, second = r["requests"]
            rows.append((f"engine start {label} (load + KV cache + warm-up)", r["seconds"],
                         f"first request {first['total'] * 1e3:.0f} ms (first token {first['first_token'] * 1e3:.0f} "
                         f"ms), second {second['total'] * 1e3:.0f} ms ({second['first_token'] * 1e3:.0f} ms)"))
    print(f"\n| {args.shape} | seconds | |\n|---|---|---|")
    for label, seconds, note in rows:
        print(f"| {label} | {seconds:.2f} | {note} |")


if __name__ == "__main__":
    main()
