"""Soak test: N concurrent streaming clients for M minutes against a live server, checking every frame.

Each client loops: a streamed completion (`stream: true`, a prompt drawn from a small set with a random suffix,
`max_output_tokens` drawn from [--output-min, --output-max]), read to the end. It counts:

- completed requests (a stream that ends with `is_end: true`, every frame well formed);
- errors by code: a business error (`error_code`, before the first frame or as the bare JSON line after frames),
  an HTTP status other than 200 (`http_<status>`), or a transport failure (the exception's name);
- malformed frames: anything in a stream body that is not exactly `data: <compact JSON object>` and a blank line
  with the documented fields, a constant id, `sentence_id` counting from 0, `is_end` on the last frame only and
  `total_tokens` = prompt + completion tokens so far.

RSS of the HTTP process and of the engine process (its child) is read from /proc before the load, after the
warm-up (--warmup-seconds of load: the "start" figure the drift is measured from), at the middle and at the end of
the run. Afterwards, with no client left, KV blocks in use come from /metrics (`neoxserve_engine_kv_blocks_used`,
polled for up to 10 s until nothing is running). The script ends with PASS or FAIL against: zero errors, zero
malformed frames, RSS drift under --max-drift-pct for both processes, KV blocks back to 0.

By default it starts its own server (`neoxserve serve`, the demo model unless --model, a temporary data dir, a
free port on 127.0.0.1); --url with --api-key/--secret-key uses a running one (its RSS needs --pid, the serve
process).

    .venv/bin/python bench/soak.py --streams 64 --minutes 30
    flock /work/.bench.lock .venv/bin/python bench/soak.py --streams 16 --minutes 2
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

PROMPTS = ["Introduce the city Beijing", "Write a short story about a robot", "介绍一下北京的历史",
           "Explain how a language model works", "List ten fruits and their colours", "今天天气怎么样？"]
FRAME_KEYS = ["id", "object", "created", "sentence_id", "is_end", "result", "is_safe", "usage"]
COMPLETIONS = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/"


@dataclass
class Tally:
    completed: int = 0
    disconnected: int = 0
    frames: int = 0
    completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)   # by reason
    malformed_examples: list[str] = field(default_factory=list)

    def bad_frame(self, reason: str, example: str) -> None:
        self.malformed[reason] += 1
        if len(self.malformed_examples) < 5:
            self.malformed_examples.append(f"{reason}: {example[:200]!r}")


def check_stream(body: bytes, tally: Tally) -> None:
    """Count one stream's frames into `tally`: completed, an error by code, or malformed frames."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        tally.bad_frame("not UTF-8", repr(body[:200]))
        return
    frames, _, tail = text.rpartition("\n\n")
    if tail:   # a bare JSON error line after the frames
        try:
            tally.errors[str(json.loads(tail)["error_code"])] += 1
        except (ValueError, KeyError, TypeError):
            tally.bad_frame("trailing text is not an error line", tail)
    if not frames:
        if not tail:
            tally.bad_frame("empty stream", text)
        return
    ids, last = set(), None
    for i, frame in enumerate(frames.split("\n\n")):
        tally.frames += 1
        if not frame.startswith("data: {") or "\n" in frame:
            tally.bad_frame("not `data: {...}`", frame)
            continue
        payload = frame[len("data: "):]
        try:
            chunk = json.loads(payload)
        except ValueError:
            tally.bad_frame("not JSON", payload)
            continue
        if payload != json.dumps(chunk, ensure_ascii=False, separators=(",", ":")):
            tally.bad_frame("not compact JSON", payload)
        if list(chunk) != FRAME_KEYS:
            tally.bad_frame("fields", payload)
            continue
        usage = chunk["usage"]
        ids.add(chunk["id"])
        if chunk["sentence_id"] != i:
            tally.bad_frame("sentence_id out of sequence", payload)
        if last is not None and last["is_end"]:
            tally.bad_frame("frame after is_end", payload)
        done = (last["usage"]["total_tokens"] if last else usage["prompt_tokens"]) + usage["completion_tokens"]
        if usage["total_tokens"] != done:
            tally.bad_frame("total_tokens is not cumulative", payload)
        tally.completion_tokens += usage["completion_tokens"]
        last = chunk
    if len(ids) > 1:
        tally.bad_frame("id changes within a stream", str(sorted(ids)))
    if not tail and last is not None:
        if last["is_end"]:
            tally.completed += 1
        else:
            tally.bad_frame("stream ended without is_end", frames[-200:])


async def client_loop(client: httpx.AsyncClient, url: str, token: str, deadline: float, rng: random.Random,
                      args: argparse.Namespace, tally: Tally) -> None:
    while time.monotonic() < deadline:
        body = {"prompt": f"{rng.choice(PROMPTS)} #{rng.randrange(10**6)}", "stream": True,
                "max_output_tokens": rng.randint(args.output_min, args.output_max)}
        disconnect = rng.random() < args.disconnect_fraction
        try:
            async with client.stream("POST", url, params={"access_token": token}, json=body) as r:
                if r.status_code != 200:
                    tally.errors[f"http_{r.status_code}"] += 1
                    await r.aread()
                    continue
                if r.headers.get("content-type", "").startswith("application/json"):
                    data = await r.aread()
                    try:
                        tally.errors[str(json.loads(data)["error_code"])] += 1
                    except (ValueError, KeyError, TypeError):
                        tally.bad_frame("non-stream answer without error_code", data.decode("utf-8", "replace"))
                    continue
                if disconnect:
                    async for _ in r.aiter_raw():
                        break   # leave after the first bytes: the server must abort the generation
                    tally.disconnected += 1
                    continue
                check_stream(await r.aread(), tally)
        except httpx.HTTPError as e:
            tally.errors[type(e).__name__] += 1


# ---- processes ----------------------------------------------------------------------------------------------

def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def engine_pid(server_pid: int | None) -> int | None:
    """The engine process: the serve process's child started by multiprocessing's spawn_main."""
    if server_pid is None:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server_pid and b"spawn_main" in cmdline:
            return int(entry)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer:
    """`neoxserve serve` on a temporary data dir; its first-start banner gives the app's keys."""

    def __init__(self, model: str | None, torch_threads: int, src: str | None = None) -> None:
        self.data_dir = tempfile.TemporaryDirectory(prefix="neoxserve-soak-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "neoxserve.cli", "serve", "--data-dir", self.data_dir.name,
               "--port", str(self.port), "--api-name", "soak"]
        if model:
            cmd += ["--model", model]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if src:   # another tree's code (a baseline), e.g. a git worktree's src/
            env["PYTHONPATH"] = src
        if torch_threads:
            env["NEOXSERVE_TORCH_THREADS"] = str(torch_threads)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=lambda s=stream, ls=lines: ls.extend(line.rstrip("\n") for line in s),
                             daemon=True).start()
        self.keys = self._wait_ready()

    def _wait_ready(self, timeout: float = 300.0) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("serve exited:\n" + "\n".join(self.stderr[-30:]))
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"serve not ready after {timeout} s")
        keys = {}
        for _ in range(50):
            for line in self.stdout:
                match = re.match(r"\s*(API Key|Secret Key):\s*(\S+)", line)
                if match:
                    keys[match.group(1)] = match.group(2)
            if len(keys) == 2:
                return keys["API Key"], keys["Secret Key"]
            time.sleep(0.1)
        raise RuntimeError("no keys in the serve banner")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.data_dir.cleanup()
        return code


def engine_gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^neoxserve_engine_(\w+) ([0-9.e+-]+)$", text, re.M)}


# ---- the run ------------------------------------------------------------------------------------------------

async def soak(args: argparse.Namespace, url: str, api_name: str, token: str, pids: dict[str, int | None]
               ) -> tuple[Tally, dict[str, dict[str, float | None]], float]:
    tally = Tally()
    rss: dict[str, dict[str, float | None]] = {name: {"before": rss_mib(pid)} for name, pid in pids.items()}
    duration = args.minutes * 60
    start = time.monotonic()
    deadline = start + duration
    warmup = min(args.warmup_seconds, duration / 4)
    limits = httpx.Limits(max_connections=args.streams, max_keepalive_connections=args.streams)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout), limits=limits) as client:
        workers = [asyncio.create_task(client_loop(client, url + COMPLETIONS + api_name, token, deadline,
                                                   random.Random(args.seed + i), args, tally))
                   for i in range(args.streams)]

        async def sample(label: str, at: float) -> None:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            for name, pid in pids.items():
                rss[name][label] = rss_mib(pid)
            print(f"[{time.monotonic() - start:7.1f} s] {label}: completed {tally.completed}, errors "
                  f"{sum(tally.errors.values())}, malformed {sum(tally.malformed.values())}, RSS MiB "
                  + ", ".join(f"{n} {rss[n][label]:.1f}" if rss[n][label] else f"{n} ?" for n in pids),
                  flush=True)

        marks = [("start", warmup), ("middle", duration / 2), ("end", duration - 1.0)]
        if args.sample_every:   # a time series besides the three marks, to tell growth from levelling off
            marks += [(f"t{int(at)}", at) for at in range(int(args.sample_every), int(duration - 1),
                                                          int(args.sample_every))]
        samplers = [asyncio.create_task(sample(label, at)) for label, at in marks]
        await asyncio.gather(*samplers)
        await asyncio.gather(*workers)
    return tally, rss, time.monotonic() - start


def kv_after(url: str) -> dict[str, float]:
    deadline = time.monotonic() + 10
    gauges = engine_gauges(url)
    while time.monotonic() < deadline and (gauges.get("running", 0) or gauges.get("kv_blocks_used", 0)):
        time.sleep(0.1)
        gauges = engine_gauges(url)
    return gauges


def report(args: argparse.Namespace, tally: Tally, rss: dict, wall: float, gauges: dict[str, float]) -> bool:
    print(f"\nsoak: {args.streams} streams for {args.minutes} min ({wall:.0f} s), output tokens "
          f"[{args.output_min}, {args.output_max}], load average {os.getloadavg()[0]:.2f} at the end")
    print(f"completed requests: {tally.completed} ({tally.completed / wall:.2f}/s), frames {tally.frames}, "
          f"completion tokens {tally.completion_tokens} ({tally.completion_tokens / wall:.1f}/s), "
          f"client disconnects {tally.disconnected}")
    print(f"errors by code: {dict(tally.errors) or 'none'}")
    print(f"malformed frames: {dict(tally.malformed) or 'none'}")
    for example in tally.malformed_examples:
        print(f"  {example}")
    print("| process | RSS before load MiB | start MiB | middle MiB | end MiB | drift start->end |")
    print("|---|---|---|---|---|---|")
    ok = True
    for name, samples in rss.items():
        start, end = samples.get("start"), samples.get("end")
        drift = None if not start or not end else 100 * (end - start) / start
        cells = [f"{samples.get(k):.1f}" if samples.get(k) else "?" for k in ("before", "start", "middle", "end")]
        print(f"| {name} | " + " | ".join(cells) + f" | {'?' if drift is None else f'{drift:+.1f}%'} |")
        ok &= drift is not None and drift < args.max_drift_pct
    kv = gauges.get("kv_blocks_used")
    print(f"KV blocks in use afterwards: {kv if kv is None else int(kv)} of {int(gauges.get('kv_blocks_total', 0))}"
          f" (running {int(gauges.get('running', 0))}, waiting {int(gauges.get('waiting', 0))})")
    ok &= not tally.errors and not tally.malformed and tally.completed > 0 and kv == 0
    print("PASS" if ok else "FAIL", f"(zero errors, zero malformed frames, RSS drift < {args.max_drift_pct}%, "
                                    "KV blocks back to 0)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=64, help="concurrent streaming clients")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--output-min", type=int, default=16)
    parser.add_argument("--output-max", type=int, default=128)
    parser.add_argument("--disconnect-fraction", type=float, default=0.0,
                        help="share of requests the client leaves after the first bytes (counted apart)")
    parser.add_argument("--warmup-seconds", type=float, default=60.0,
                        help="load before the 'start' RSS sample (at most a quarter of the run)")
    parser.add_argument("--max-drift-pct", type=float, default=5.0)
    parser.add_argument("--sample-every", type=float, default=0.0,
                        help="also print the RSS every this many seconds (0: only at start, middle and end)")
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="model directory for the server this script starts (default: demo)")
    parser.add_argument("--torch-threads", type=int, default=0, help="for the server this script starts; 0 = all")
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--api-name", default="soak", help="with --url: the service to call")
    parser.add_argument("--api-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--pid", type=int, help="with --url: the serve process, for RSS")
    args = parser.parse_args()

    own = None
    if args.url:
        if not (args.api_key and args.secret_key):
            parser.error("--url needs --api-key and --secret-key")
        url, api_name, (api_key, secret_key), server_pid = args.url.rstrip("/"), args.api_name, (
            args.api_key, args.secret_key), args.pid
    else:
        own = OwnServer(args.model, args.torch_threads)
        url, api_name, (api_key, secret_key), server_pid = own.url, "soak", own.keys, own.process.pid
    try:
        token = httpx.get(url + "/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": api_key, "client_secret": secret_key}).json()[
            "access_token"]
        pids = {"http": server_pid, "engine": engine_pid(server_pid)}
        print(f"server {url} (pids: http {pids['http']}, engine {pids['engine']}); {args.streams} streams for "
              f"{args.minutes} min; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
        tally, rss, wall = asyncio.run(soak(args, url, api_name, token, pids))
        ok = report(args, tally, rss, wall, kv_after(url))
    finally:
        if own is not None:
            code = own.stop()
            print(f"server stopped with exit code {code}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
