"""/health latency while a large prompt is being processed, against /health latency on the same idle server.

Starts `neoxserve serve` on a one-layer random model that uses the real GPT-NeoX-20B tokenizer (its character
bound lets a prompt of millions of characters through to the tokenizer), then, in one run:

1. idle: one client polls /health for --idle-seconds;
2. loaded: the same client polls /health while --requests large prompts (--prompt-chars CJK characters each, sent
   one after another) are processed; every one of them is refused as too long, after being tokenized.

Reports p50 / p99 / max of /health in both phases and how long each large prompt took; with --baseline-src, the
same again against a server running another tree's code (PYTHONPATH=<tree>/src), in the same run.

    flock /work/.bench.lock .venv/bin/python bench/health_latency.py --baseline-src /work/main/src
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from soak import OwnServer

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO.parent / "shared" / "assets" / "gpt-neox-20b-tokenizer.json"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def poll(url: str, stop: threading.Event, out: list[float], interval: float) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get(url + "/health").raise_for_status()
            out.append(time.perf_counter() - started)
            time.sleep(interval)


def row(name: str, latencies: list[float]) -> str:
    ms = [1000 * x for x in latencies]
    return (f"| {name} | {len(ms)} | {percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} | {max(ms):.1f} |")


def measure(args: argparse.Namespace, model: Path, src: str | None) -> tuple[dict[str, list[float]], list[float]]:
    server = OwnServer(str(model), torch_threads=1, src=src)
    try:
        token = httpx.get(server.url + "/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": server.keys[0],
            "client_secret": server.keys[1]}).json()["access_token"]
        prompt = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(args.prompt_chars))
        phases: dict[str, list[float]] = {"idle": [], "loaded": []}
        took = []
        for phase in ("idle", "loaded"):
            stop = threading.Event()
            poller = threading.Thread(target=poll, args=(server.url, stop, phases[phase], args.interval))
            poller.start()
            try:
                if phase == "idle":
                    time.sleep(args.idle_seconds)
                    continue
                for _ in range(args.requests):
                    started = time.perf_counter()
                    body = httpx.post(server.url + "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/soak",
                                      params={"access_token": token}, json={"prompt": prompt}, timeout=600).json()
                    took.append(time.perf_counter() - started)
                    assert body.get("error_code") == 336003, body
            finally:
                stop.set()
                poller.join()
    finally:
        server.stop()
    return phases, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-chars", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.01, help="pause between /health requests")
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    parser.add_argument("--baseline-src", help="also measure a server running this tree's code (its src/)")
    args = parser.parse_args()

    from tiny_model import write_tiny_model

    trees = [("this tree", None)] + ([("baseline " + args.baseline_src, args.baseline_src)] if args.baseline_src
                                     else [])
    print(f"large prompt: {args.prompt_chars} CJK characters "
          f"({3 * args.prompt_chars / 2**20 + 0.0:.1f} MiB of UTF-8), {args.requests} after another")
    print("| code | /health | requests | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="health-latency-model-") as tmp:
        model = write_tiny_model(tmp, args.tokenizer)
        for name, src in trees:
            phases, took = measure(args, model, src)
            print(f"| {name} | " + row("idle server", phases["idle"])[2:])
            print(f"| {name} | " + row("while large prompts are processed", phases["loaded"])[2:])
            print(f"({name}: each large prompt took " + ", ".join(f"{t:.2f}" for t in took) + " s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
