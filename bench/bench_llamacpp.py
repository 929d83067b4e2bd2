"""neoxserve against llama.cpp, side by side in one run: same random weights, shapes, threads and token counts.

    .venv/bin/pip install -e '.[bench]'      # llama-cpp-python (compiles llama.cpp, ~8 min) and gguf
    bash bench/build_llama_server.sh         # llama-server from the same llama.cpp sources (~10 min)
    .venv/bin/python bench/bench_llamacpp.py                        # Pythia-160M shape
    .venv/bin/python bench/bench_llamacpp.py --shape stablelm-3b    # StableLM-3B shape (about 25 GB of files)

The model is bench/random_neox.py's random GPT-NeoX directory (the real GPT-NeoX-20B tokenizer); the GGUF files
are bench/neox_gguf.py's conversion of exactly those weights to f16, then llama.cpp's own Q8_0 / Q4_0. Files
are kept under build/bench-llamacpp/ and reused while the weights they come from are the same.

1. Agreement: both programs greedy-decode the same prompts from the same weights; the unquantized pair must give
   the same next-token logits (cosine >= 0.99), or the comparison stops (a layout error, not a speed question).
2. Single stream, in-process (llama-cpp-python vs neoxserve's LLMEngine): decode tok/s (32-token prompt, 128
   greedy tokens, (n - 1) / (last token - first token)) and prefill tok/s (prompt length / time to the first
   token) for prompts of 128 to 2048 tokens; each tool's default batch sizes. Pairs: neoxserve float32 and
   bfloat16 vs llama.cpp F16, int8 vs Q8_0, int4 vs Q4_0; the two programs alternate within each repeat.
3. Requests arriving at once over HTTP: `neoxserve serve` (Qianfan completions route, streamed) and llama-server
   (/completion, streamed, one slot per request), each given the same prompts (128 tokens: llama-server the token
   ids, neoxserve a text that its tokenizer turns into exactly those ids), greedy, 128 new tokens each; both
   servers must report exactly that many tokens for every request. Aggregate tok/s = all generated tokens / time
   from sending to the last token; TTFT = sending to the first frame carrying a token.
Both use 2 threads (`--threads`). neoxserve's int8 / int4 rows run when its settings have `quantization`.
`--kernels auto,avx2` runs the single-stream rows once per native kernels variant of neoxserve (model/kernels;
the variants alternate with llama.cpp within each repeat, each engine selecting its own before it runs); the
variant of every row is printed.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import http_burst
import machine
import neox_gguf
import random_neox
from bench_serving import percentile

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench-llamacpp"
LLAMA_SERVER = ROOT / "build" / "llama.cpp" / "cmake" / "bin" / "llama-server"
# neoxserve configuration -> (dtype, quantization, llama.cpp counterpart)
NEOX = {"float32": ("float32", "none", "F16"), "bfloat16": ("bfloat16", "none", "F16"),
        "int8": ("auto", "int8", "Q8_0"), "int4": ("auto", "int4", "Q4_0")}
DEFAULT_CONFIGS = {"pythia-160m": "float32,bfloat16,int8,int4", "stablelm-3b": "bfloat16,int8,int4"}
DECODE_PROMPT = 32


# ---- the two programs, in-process ----------------------------------------------------------------------------

def has_quantization() -> bool:
    from dataclasses import fields

    from neoxserve.engine.config import EngineConfig
    return "quantization" in {f.name for f in fields(EngineConfig)}


def neox_engine(model_dir: Path, config: str, threads: int, group_size: int | None, kernels: str = "auto"):
    from neoxserve.commands.engine_config import engine_config
    from neoxserve.config import Settings
    from neoxserve.engine.worker.core import LLMEngine

    dtype, quant, _ = NEOX[config]
    fields = dict(model=str(model_dir), device="cpu", dtype=dtype, torch_threads=threads, max_num_seqs=1,
                  enable_prefix_caching=False)
    if quant != "none":
        fields["quantization"] = quant
    if quant == "int4" and group_size:
        fields["quantization_group_size"] = group_size
    if kernels != "auto":
        fields["kernels"] = kernels
    return LLMEngine.from_config(engine_config(Settings(**fields)))   # sets torch's threads


class NeoxRunner:
    """Greedy generation through neoxserve's engine, timing each token as the engine hands it out."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.n = 0
        self.logits: list[torch.Tensor] | None = None
        self.kernels = getattr(engine.model_info, "kernels", "")   # the variant it loaded with

    def generate(self, ids: list[int], new_tokens: int) -> tuple[list[int], list[float]]:
        from neoxserve.engine.sampling_params import SamplingParams

        if self.kernels not in ("", "none"):   # the variant is per process: another runner may have switched it
            from neoxserve.model import kernels
            kernels.select(self.kernels)
        self.n += 1
        tokens, times = [], []
        self.engine.add_request(f"b{self.n}", ids, SamplingParams(greedy=True, max_new_tokens=new_tokens,
                                                                  ignore_eos=True))
        while self.engine.has_unfinished():
            for delta in self.engine.step():
                now = time.perf_counter()
                tokens += delta.token_ids
                times += [now] * len(delta.token_ids)
        return tokens, times

    def record_logits(self, on: bool) -> None:
        """Keep the logits the engine samples from (for the agreement check), or stop keeping them."""
        runner = self.engine.runner
        if not on:
            runner.sampler, self.logits = self._sampler, None
            return
        self._sampler = runner.sampler
        self.logits = []
        runner.sampler = _RecordingSampler(self._sampler, self.logits)

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token: everything the model holds but the input embedding."""
        model = self.engine.runner.model
        named = list(model.named_parameters()) + list(model.named_buffers())
        return sum(t.numel() * t.element_size() for name, t in named if "embed_in" not in name)


class _RecordingSampler:
    """The engine's sampler, keeping a float32 copy of every logits tensor it samples from."""

    def __init__(self, sampler, kept: list[torch.Tensor]) -> None:
        self.sampler, self.kept = sampler, kept

    def sample(self, logits: torch.Tensor, requests) -> list[int]:
        self.kept.append(logits.float().clone())
        return self.sampler.sample(logits, requests)


class LlamaRunner:
    """Greedy generation through llama-cpp-python (argmax over the tokenizer's ids, as neoxserve samples).
    Flash attention on, as llama-server's default (`-fa auto`) resolves on a CPU; batch sizes the bindings'."""

    def __init__(self, gguf: Path, threads: int, vocab: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                         flash_attn=True, verbose=False)
        self.vocab = vocab
        self.gguf = gguf

    def last_logits(self) -> np.ndarray:
        """The logits of the last token evaluated (the bindings keep none themselves unless logits_all)."""
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.vocab,))

    def generate(self, ids: list[int], new_tokens: int, keep_logits: bool = False
                 ) -> tuple[list[int], list[float], list[np.ndarray]]:
        self.llm.reset()
        tokens, times, logits = [], [], []
        self.llm.eval(ids)
        for i in range(new_tokens):
            row = self.last_logits()
            tokens.append(int(np.argmax(row)))
            times.append(time.perf_counter())
            if keep_logits:
                logits.append(row.copy())
            if i + 1 < new_tokens:
                self.llm.eval([tokens[-1]])
        return tokens, times, logits

    def weight_bytes(self) -> int:
        import gguf
        return sum(int(t.n_bytes) for t in gguf.GGUFReader(str(self.gguf)).tensors if t.name != "token_embd.weight")


def timed(runner, ids: list[int], new_tokens: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    tokens, times = runner.generate(ids, new_tokens)[:2]
    if len(tokens) != new_tokens:
        raise RuntimeError(f"{type(runner).__name__} generated {len(tokens)} tokens, asked for {new_tokens}")
    return start, times


def decode_rate(runner, ids: list[int], new_tokens: int) -> float:
    _, times = timed(runner, ids, new_tokens)
    return (new_tokens - 1) / (times[-1] - times[0])


def prefill_rate(runner, ids: list[int]) -> float:
    start, times = timed(runner, ids, 1)
    return len(ids) / (times[0] - start)


# ---- 1. agreement --------------------------------------------------------------------------------------------

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def agreement(neox: NeoxRunner, llama: LlamaRunner, prompts: list[list[int]], steps: int) -> dict:
    """Greedy tokens of both from the same prompts: how many leading tokens agree, and the cosine of the first
    next-token logits."""
    prefix, cosines = [], []
    neox.record_logits(True)
    for ids in prompts:
        neox.logits.clear()
        ours = neox.generate(ids, steps)[0]
        theirs, _, their_logits = llama.generate(ids, steps, keep_logits=True)
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), steps)
        prefix.append(same)
        cosines.append(cosine(neox.logits[0][0, :llama.vocab].numpy(), their_logits[0]))
    neox.record_logits(False)
    return {"prefix": prefix, "min_cosine": min(cosines), "steps": steps}


# ---- 2. single stream ----------------------------------------------------------------------------------------

@dataclass
class SingleStream:
    decode: list[float]
    prefill: dict[int, list[float]]
    weight_bytes: int

    def median_decode(self) -> float:
        return statistics.median(self.decode)

    def median_prefill(self, n: int) -> float:
        return statistics.median(self.prefill[n])


def single_stream(runners: dict, prompt_lengths: list[int], new_tokens: int, repeats: int, seed: int
                  ) -> dict[str, SingleStream]:
    rng = random.Random(seed)
    out = {name: SingleStream([], {n: [] for n in prompt_lengths}, r.weight_bytes()) for name, r in runners.items()}
    for r in runners.values():   # warm-up: first calls allocate, page weights in, pick kernels
        r.generate([rng.randrange(2, 50000) for _ in range(prompt_lengths[0])], 4)
    for _ in range(repeats):
        decode_ids = [rng.randrange(2, 50000) for _ in range(DECODE_PROMPT)]
        prompts = {n: [rng.randrange(2, 50000) for _ in range(n)] for n in prompt_lengths}
        for name, r in runners.items():
            out[name].decode.append(decode_rate(r, decode_ids, new_tokens))
            for n, ids in prompts.items():
                out[name].prefill[n].append(prefill_rate(r, ids))
            # each measurement as it is made, so that a run cut short (a time limit) still leaves figures
            print(f"  repeat {len(out[name].decode)}, {name}: decode {out[name].decode[-1]:.1f} tok/s, prefill "
                  + ", ".join(f"{n}: {out[name].prefill[n][-1]:.0f}" for n in prompts)
                  + f" tok/s; load {machine.loadavg()}", flush=True)
    return out


# ---- 3. HTTP burst -------------------------------------------------------------------------------------------

def burst_prompts(tokenizer, count: int, length: int, seed: int) -> list[tuple[list[int], str]]:
    """`count` distinct (ids, text) pairs where the tokenizer turns text into exactly ids, len(ids) == length."""
    rng = random.Random(seed)
    out = []
    for _ in range(100 * count):
        if len(out) == count:
            return out
        ids = tokenizer.encode(tokenizer.decode([rng.randrange(2, 50254) for _ in range(length + 64)]))[:length]
        text = tokenizer.decode(ids, skip_special_tokens=False)
        if len(ids) == length and tokenizer.encode(text) == ids and all(ids != o[0] for o in out):
            out.append((ids, text))
    raise RuntimeError(f"could not make {count} prompts of {length} tokens that round-trip through the tokenizer")


def summarize(results: list[http_burst.StreamResult], wall: float, new_tokens: int, prompt_len: int) -> dict:
    bad = [(r.tokens, r.prompt_tokens) for r in results if r.tokens != new_tokens or r.prompt_tokens != prompt_len]
    if bad:
        raise RuntimeError(f"(generated, prompt) tokens {bad}, expected ({new_tokens}, {prompt_len}) each")
    ttft = [r.ttft for r in results]
    return {"tok_s": sum(r.tokens for r in results) / wall, "ttft_p50": percentile(ttft, 50),
            "ttft_p90": percentile(ttft, 90), "wall": wall, "load": machine.loadavg()}


def http_llama(gguf: Path, prompts, args, log_dir: Path) -> dict:
    port = http_burst.free_port()
    per_slot = args.http_prompt + args.http_new_tokens + 64
    with http_burst.llama_server(LLAMA_SERVER, gguf, port, args.http_requests, per_slot, args.threads,
                                 log_dir / f"llama-server-{gguf.stem}.log") as server:
        url = server.base + "/completion"
        http_burst.burst(url, [http_burst.llama_body(prompts[0][0][:16], 4)] * 2, http_burst.llama_frame_tokens)
        results, wall = http_burst.burst(url, [http_burst.llama_body(ids, args.http_new_tokens)
                                               for ids, _ in prompts], http_burst.llama_frame_tokens)
    return summarize(results, wall, args.http_new_tokens, args.http_prompt)


def http_neox(model_dir: Path, config: str, prompts, args, log_dir: Path) -> dict:
    dtype, quant, _ = NEOX[config]
    port = http_burst.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-data-") as data_dir, \
            http_burst.neoxserve_server(model_dir, Path(data_dir), port, dtype, quant, args.group_size,
                                        args.threads, log_dir / f"neoxserve-{config}.log") as server:
        url = http_burst.neoxserve_url(server)
        http_burst.burst(url, [http_burst.neoxserve_body(prompts[0][1][:40], 4)] * 2,
                         http_burst.neoxserve_frame_tokens)
        results, wall = http_burst.burst(url, [http_burst.neoxserve_body(text, args.http_new_tokens)
                                               for _, text in prompts], http_burst.neoxserve_frame_tokens)
    return summarize(results, wall, args.http_new_tokens, args.http_prompt)


# ---- the run -------------------------------------------------------------------------------------------------

def prepare_files(shape: str, threads: int) -> tuple[Path, dict[str, Path]]:
    import llama_cpp  # noqa: F401  (fail before writing gigabytes if the bench extra is missing)

    base = WORK / shape
    model_dir = random_neox.write_model(base / "hf", shape)
    stamp = (model_dir / "stamp").read_text()
    ggufs = {"F16": base / "f16.gguf", "Q8_0": base / "q8_0.gguf", "Q4_0": base / "q4_0.gguf"}
    if not (base / "gguf.stamp").is_file() or (base / "gguf.stamp").read_text() != stamp:
        for path in ggufs.values():
            path.unlink(missing_ok=True)
        t = time.perf_counter()
        neox_gguf.write_f16(model_dir, ggufs["F16"])
        print(f"wrote {ggufs['F16']} in {time.perf_counter() - t:.0f} s", flush=True)
        for kind in ("Q8_0", "Q4_0"):
            t = time.perf_counter()
            neox_gguf.quantize(ggufs["F16"], ggufs[kind], kind, threads)
            print(f"quantized {ggufs[kind]} in {time.perf_counter() - t:.0f} s", flush=True)
        (base / "gguf.stamp").write_text(stamp)
    return model_dir, ggufs


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(random_neox.SHAPES), default="pythia-160m")
    parser.add_argument("--configs", help="neoxserve configurations, from float32,bfloat16,int8,int4 "
                        "(default: all for pythia-160m, no float32 for stablelm-3b)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--group-size", type=int, help="neoxserve int4 group size (default: the engine's)")
    parser.add_argument("--repeats", type=int, default=3, help="single-stream repeats (median)")
    parser.add_argument("--new-tokens", type=int, default=128, help="decode: greedy tokens after a 32-token prompt")
    parser.add_argument("--prompt-lengths", default="128,512,2048", help="prefill: prompt lengths")
    parser.add_argument("--check-prompts", type=int, default=4)
    parser.add_argument("--check-steps", type=int, default=8)
    parser.add_argument("--http-requests", type=int, default=16)
    parser.add_argument("--http-prompt", type=int, default=128)
    parser.add_argument("--http-new-tokens", type=int, default=128)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernels", default="auto",
                        help="neoxserve's native kernels variants for the single-stream rows, comma-separated "
                             "(auto, avx2, avx512, avx512_vnni, avx512_bf16); each gets its own rows")
    args = parser.parse_args()

    configs = (args.configs or DEFAULT_CONFIGS[args.shape]).split(",")
    unknown = [c for c in configs if c not in NEOX]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from {', '.join(NEOX)}")
    if has_quantization():
        from neoxserve.config import Settings
        default = Settings.model_fields["quantization_group_size"].default
        print(f"neoxserve int4 group size {args.group_size or default} (llama.cpp's Q4_0 and Q8_0 blocks: 32 "
              "weights)", flush=True)
    else:
        missing = [c for c in configs if NEOX[c][1] != "none"]
        configs = [c for c in configs if NEOX[c][1] == "none"]
        if missing:
            print(f"neoxserve has no `quantization` setting yet: {', '.join(missing)} rows not measured", flush=True)
    if not args.skip_http and not LLAMA_SERVER.is_file():
        parser.error(f"{LLAMA_SERVER} is missing: run `bash bench/build_llama_server.sh` (or pass --skip-http)")
    lengths = [int(n) for n in args.prompt_lengths.split(",")]

    import llama_cpp
    info = machine.cpu_info()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    header = [f"date {started}; neoxserve commit {machine.git_commit()}; load average {machine.loadavg()}",
              f"machine: nproc {info['nproc']}, CPU {info['cpu']!r}, flags: {info['flags']}; RAM {info['ram']}",
              f"torch {info['torch']}; llama-cpp-python {llama_cpp.__version__}; threads {args.threads} each",
              f"llama.cpp system info: {llama_cpp.llama_print_system_info().decode().strip()}"]
    variants = args.kernels.split(",")
    try:
        from neoxserve.model import kernels as native_kernels
        header.append(f"neoxserve kernels: auto picks {native_kernels.auto_variant()} here (this CPU can run "
                      f"{', '.join(native_kernels.runnable())}); measured: {', '.join(variants)}")
    except ImportError:
        variants = ["auto"]
    print("\n".join(header), flush=True)

    model_dir, ggufs = prepare_files(args.shape, args.threads)
    vocab = random_neox.TOKENIZER_SIZE
    bandwidth = [machine.copy_bandwidth()]
    print(f"copy bandwidth {bandwidth[0] / 1e9:.1f} GB/s; Q4_0 file holds {neox_gguf.tensor_types(ggufs['Q4_0'])}; "
          f"Q8_0 file holds {neox_gguf.tensor_types(ggufs['Q8_0'])}", flush=True)

    rng = random.Random(args.seed)
    check_prompts = [[rng.randrange(2, 50000) for _ in range(16)] for _ in range(args.check_prompts)]
    checks, single = {}, {}
    if not args.skip_single:
        for config in configs:
            kind = NEOX[config][2]
            neoxes = {}
            for variant in variants:
                runner = NeoxRunner(neox_engine(model_dir, config, args.threads, args.group_size, variant))
                neoxes[f"neoxserve {variant} ({runner.kernels})" if variant == "auto" else
                       f"neoxserve {variant}"] = runner
            neox = next(iter(neoxes.values()))
            llama = LlamaRunner(ggufs[kind], args.threads, vocab)
            checks[config] = agreement(neox, llama, check_prompts, args.check_steps)
            print(f"agreement {config} vs {kind}: {checks[config]}", flush=True)
            if NEOX[config][1] == "none" and checks[config]["min_cosine"] < 0.99:
                raise SystemExit(f"neoxserve {config} and llama.cpp {kind} disagree on the same weights "
                                 f"(logits cosine {checks[config]['min_cosine']:.4f}): a conversion error")
            single[config] = single_stream({**neoxes, "llama.cpp": llama}, lengths, args.new_tokens,
                                           args.repeats, args.seed + 1)
            for name in neoxes:
                print(f"{config} vs {kind}: {name} decode {single[config][name].median_decode():.1f} vs "
                      f"{single[config]['llama.cpp'].median_decode():.1f} tok/s; load {machine.loadavg()}",
                      flush=True)
            del neox, neoxes, llama
            gc.collect()

    http = {}
    if not args.skip_http:
        from neoxserve.model.tokenizer import Tokenizer
        prompts = burst_prompts(Tokenizer.from_dir(model_dir), args.http_requests, args.http_prompt, args.seed + 2)
        log_dir = WORK / args.shape / "logs"
        for kind in dict.fromkeys(NEOX[c][2] for c in configs):
            http[kind] = http_llama(ggufs[kind], prompts, args, log_dir)
            print(f"llama-server {kind}: {http[kind]}", flush=True)
            for config in (c for c in configs if NEOX[c][2] == kind):
                http[config] = http_neox(model_dir, config, prompts, args, log_dir)
                print(f"neoxserve {config}: {http[config]}", flush=True)
    bandwidth.append(machine.copy_bandwidth())

    print(f"\n{args.shape} shape; copy bandwidth {bandwidth[0] / 1e9:.1f} GB/s before, {bandwidth[1] / 1e9:.1f} "
          f"after; load average at the end {machine.loadavg()}\n")
    bw = statistics.mean(bandwidth)
    if single:
        print(f"Single stream, decode tok/s ({DECODE_PROMPT}-token prompt, {args.new_tokens} new tokens, median of "
              f"{args.repeats}); weights read per token and the share of the copy bandwidth that makes:\n")
        print("| neoxserve | kernels | tok/s | weights/token | % copy bw | llama.cpp | tok/s | weights/token | "
              "% copy bw | ratio |\n|---|---|---|---|---|---|---|---|---|---|")
        rows = [(config, pair, name) for config, pair in single.items() for name in pair if name != "llama.cpp"]
        for config, pair, name in rows:
            ours, theirs = pair[name], pair["llama.cpp"]
            a, b = ours.median_decode(), theirs.median_decode()
            print(f"| {config} | {name.removeprefix('neoxserve ')} | {a:.1f} | {ours.weight_bytes / 2**20:.0f} MiB | "
                  f"{100 * a * ours.weight_bytes / bw:.0f}% | {NEOX[config][2]} | {b:.1f} | "
                  f"{theirs.weight_bytes / 2**20:.0f} MiB | {100 * b * theirs.weight_bytes / bw:.0f}% | "
                  f"{fmt_ratio(a, b)} |")
        print(f"\nPrefill tok/s (prompt / time to first token, median of {args.repeats}), neoxserve vs llama.cpp:\n")
        print("| neoxserve vs llama.cpp | " + " | ".join(f"{n} tokens" for n in lengths) + " |\n|---|"
              + "---|" * len(lengths))
        for config, pair, name in rows:
            cells = [f"{pair[name].median_prefill(n):.0f} vs {pair['llama.cpp'].median_prefill(n):.0f} "
                     f"({fmt_ratio(pair[name].median_prefill(n), pair['llama.cpp'].median_prefill(n))})"
                     for n in lengths]
            print(f"| {config} [{name.removeprefix('neoxserve ')}] vs {NEOX[config][2]} | " + " | ".join(cells)
                  + " |")
        print(f"\nAgreement ({args.check_prompts} prompts of 16 tokens, {args.check_steps} greedy steps): leading "
              "tokens equal per prompt, smallest cosine of the first next-token logits:\n")
        print("| pair | equal leading tokens | logits cosine |\n|---|---|---|")
        for config, c in checks.items():
            print(f"| {config} vs {NEOX[config][2]} | {c['prefix']} of {c['steps']} | {c['min_cosine']:.4f} |")
    if http:
        print(f"\n{args.http_requests} requests at once over HTTP ({args.http_prompt}-token prompts, "
              f"{args.http_new_tokens} new tokens each, streamed):\n")
        print("| server | aggregate tok/s | TTFT p50 s | TTFT p90 s | wall s | load after |\n|---|---|---|---|---|---|")
        for name, r in http.items():
            label = f"llama-server {name}, {args.http_requests} slots" if name in ggufs else f"neoxserve {name}"
            print(f"| {label} | {r['tok_s']:.1f} | {r['ttft_p50']:.2f} | {r['ttft_p90']:.2f} | {r['wall']:.1f} | "
                  f"{r['load']} |")
        for config in (c for c in configs if c in http):
            kind = NEOX[config][2]
            tput = fmt_ratio(http[config]["tok_s"], http[kind]["tok_s"])
            ttft = fmt_ratio(http[config]["ttft_p50"], http[kind]["ttft_p50"])
            print(f"neoxserve {config} / llama-server {kind}: throughput {tput}, TTFT p50 {ttft}")

    results = WORK / args.shape / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results.write_text(json.dumps({"header": header, "args": vars(args), "bandwidth": bandwidth, "checks": checks,
                                   "single": {c: {k: vars(v) for k, v in p.items()} for c, p in single.items()},
                                   "http": http}, indent=1, default=str))
    print(f"\nraw figures: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
