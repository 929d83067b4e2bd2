"""The local cluster under load: nginx in front of 1, 2 and 3 replicas on this machine, and nginx's own overhead.

For each replica count N a fresh local cluster (`neoxserve cluster`, docs/cluster.md: Redis, N replicas of the demo
model, nginx) is started with max(1, cores // N) torch threads per replica. At each concurrency C (16 and 64 by
default) C clients stream back to back (closed loop, a new request as soon as one ends) through nginx until
--rounds * C requests have finished; reported: aggregate output tokens/s (tokens the server reported over the wall
time), TTFT p50/p90 (send to the first frame carrying a token; one token per frame), requests per second.

Then, on the one-replica cluster, nginx's overhead: the same load (C clients, same request count and shape, fresh
prompts each leg) sent alternately through nginx and straight to the replica it fronts, --overhead-pairs times, in
one run, so the machine's state drifts equally over both; the overhead is the median of the paired ratios.

Requests are the Qianfan v1 streamed completions route, a prompt of about --input-len tokens (distinct per request,
the prefix cache does not help) and --output-len new tokens (sampled with a per-request seed; a request that ends
early at end-of-text counts the tokens it had). HTTP streams come from bench/http_burst.py. Every loop is bounded.

    flock /work/.bench.lock .venv/bin/python bench/bench_cluster.py            # 1, 2, 3 replicas; 16, 64 streams
    .venv/bin/python bench/bench_cluster.py --replicas 1 --concurrency 16 --rounds 1 --overhead-pairs 1
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import percentile
from http_burst import REQUEST_TIMEOUT_S, StreamResult, _stream, neoxserve_frame_tokens

from neoxserve.commands.cluster import LocalCluster

COMPLETIONS = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo"
WORDS = ("river", "mountain", "city", "garden", "window", "letter", "summer", "market", "bridge", "lantern",
         "harbor", "forest", "engine", "silver", "morning", "station", "paper", "orange", "castle", "winter")


def bodies(n: int, input_len: int, output_len: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    # about four tokens per word and space with the demo model's tokenizer (the rows report prompt_tokens)
    return [{"prompt": " ".join(rng.choice(WORDS) for _ in range(max(1, input_len // 4))), "stream": True,
             "max_output_tokens": output_len, "seed": rng.randrange(1 << 30)} for _ in range(n)]


async def closed_loop(url: str, requests: list[dict], concurrency: int) -> tuple[list[StreamResult], float]:
    """`concurrency` clients, each sending its next request when the previous one ends; (results, wall seconds)."""
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    queue = list(reversed(requests))
    results: list[StreamResult] = []
    gate = asyncio.Event()
    gate.set()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        async def worker() -> None:
            while queue:
                results.append(await _stream(client, url, queue.pop(), neoxserve_frame_tokens, gate))

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), REQUEST_TIMEOUT_S)
        return results, time.perf_counter() - start


def measure(url: str, requests: list[dict], concurrency: int) -> dict:
    results, wall = asyncio.run(closed_loop(url, requests, concurrency))
    ttft = [r.ttft for r in results]
    tokens = sum(r.tokens for r in results)
    return {"requests": len(results), "wall_s": round(wall, 2), "out_tok_per_s": round(tokens / wall, 1),
            "req_per_s": round(len(results) / wall, 2), "ttft_p50_ms": round(1000 * percentile(ttft, 50), 1),
            "ttft_p90_ms": round(1000 * percentile(ttft, 90), 1),
            "tokens_per_request": round(tokens / len(results), 1),
            "prompt_tokens": round(statistics.mean(r.prompt_tokens for r in results), 1),
            "load1": round(os.getloadavg()[0], 2)}


def access_url(cluster: LocalCluster, base: str) -> str:
    banner = cluster.first_start_banner()
    api_key = re.search(r"API Key:\s+(\S+)", banner)
    secret_key = re.search(r"Secret Key:\s+(\S+)", banner)
    if not (api_key and secret_key):
        raise RuntimeError(f"no keys in the first replica's banner:\n{banner}")
    token = httpx.get(cluster.url + "/oauth/2.0/token", timeout=30, params={
        "grant_type": "client_credentials", "client_id": api_key.group(1),
        "client_secret": secret_key.group(1)}).json()["access_token"]
    return f"{base}{COMPLETIONS}?access_token={token}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=6, help="requests per measurement = rounds * concurrency")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--overhead-concurrency", type=int, default=16)
    parser.add_argument("--overhead-pairs", type=int, default=4, help="nginx / direct pairs on one replica")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="write every row here as well")
    args = parser.parse_args()
    os.environ["NEOXSERVE_STREAM_CHUNK_TOKENS"] = "1"   # the replicas inherit it: the first frame is the first token
    rows: list[dict] = []
    seed = 0

    def row(**fields: object) -> None:
        rows.append(fields)
        print(json.dumps(fields), flush=True)

    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()}", flush=True)
    for n in args.replicas:
        threads = max(1, args.cores // n)
        with tempfile.TemporaryDirectory(prefix=f"bench-cluster-{n}-") as tmp:
            cluster = LocalCluster.start(Path(tmp), replicas=n, torch_threads=threads)
            try:
                via_nginx = access_url(cluster, cluster.url)
                measure(via_nginx, bodies(2 * n, args.input_len, args.output_len, seed := seed + 1), 2 * n)  # warm
                for c in args.concurrency:
                    result = measure(via_nginx, bodies(args.rounds * c, args.input_len, args.output_len,
                                                       seed := seed + 1), c)
                    row(what="nginx", replicas=n, threads=threads, concurrency=c, **result)
                if n == 1 and args.overhead_pairs:
                    direct = access_url(cluster, cluster.replica_url(0))
                    c = args.overhead_concurrency
                    for pair in range(args.overhead_pairs):
                        # requests of the same shape but not the same prompts (the prefix cache would favour the
                        # second leg); which leg goes first alternates
                        order = [("nginx", via_nginx), ("direct", direct)]
                        for what, url in (order if pair % 2 == 0 else order[::-1]):
                            requests = bodies(args.rounds * c, args.input_len, args.output_len, seed := seed + 1)
                            row(what=f"overhead-{what}", pair=pair, replicas=1, threads=threads, concurrency=c,
                                **measure(url, requests, c))
            finally:
                cluster.stop()
    pairs = {}
    for r in rows:
        if str(r["what"]).startswith("overhead-"):
            pairs.setdefault(r["pair"], {})[str(r["what"]).removeprefix("overhead-")] = r
    if pairs:
        ttft = [p["nginx"]["ttft_p50_ms"] / p["direct"]["ttft_p50_ms"] - 1 for p in pairs.values()]
        tput = [1 - p["nginx"]["out_tok_per_s"] / p["direct"]["out_tok_per_s"] for p in pairs.values()]
        row(what="overhead", pairs=len(pairs), ttft_p50_overhead_pct=round(100 * statistics.median(ttft), 1),
            throughput_loss_pct=round(100 * statistics.median(tput), 1),
            per_pair_ttft_pct=[round(100 * x, 1) for x in ttft], per_pair_tput_pct=[round(100 * x, 1) for x in tput])
    print(f"# end {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
