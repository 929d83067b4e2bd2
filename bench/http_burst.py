"""Requests that arrive at once over HTTP, streamed: neoxserve's Qianfan completions route and llama-server's
/completion, each started as a child process on 127.0.0.1 and stopped at the end.

Per request: TTFT (send to the first frame that carries a token), tokens generated (counted from the frames the
server sends, not assumed), and the time of the last frame. Every loop is bounded in count and time.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import httpx

READY_TIMEOUT_S = 600          # a 3B model loads in minutes, not more
REQUEST_TIMEOUT_S = 1800


@dataclass
class StreamResult:
    tokens: int          # generated tokens the server reported
    prompt_tokens: int   # prompt tokens the server reported
    ttft: float          # seconds from sending to the first frame with a token
    latency: float       # seconds from sending to the last frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server child process: output to `log`, ready when `ready_path` answers 200, stopped by SIGTERM (then
    SIGKILL after 30 s)."""

    def __init__(self, argv: list[str], port: int, ready_path: str, log: Path, env: dict[str, str] | None = None):
        self.argv, self.port, self.ready_path, self.log, self.env = argv, port, ready_path, log, env
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "w")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(self.env or {})})
        out.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode} before it was ready; "
                                   f"see {self.log}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + self.ready_path, timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"{self.argv[0]} was not ready after {READY_TIMEOUT_S} s; see {self.log}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


async def _stream(client: httpx.AsyncClient, url: str, body: dict,
                  frame_tokens: Callable[[dict, int], tuple[int, int]], start_gate: asyncio.Event) -> StreamResult:
    """POST `body`, read `data: {json}` frames; frame_tokens(frame, tokens so far) -> (tokens generated so far,
    prompt tokens), as the server reports them."""
    await start_gate.wait()
    start = time.perf_counter()
    first = last = None
    tokens = prompt_tokens = 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                # blank lines end events; ":" lines are SSE comments (llama-server's keep-alive while it waits)
                if line.strip() and not line.startswith(":"):
                    raise RuntimeError(f"{url}: unexpected line {line[:300]!r}")
                continue
            frame = json.loads(line[6:])
            if "error_code" in frame or "error" in frame:
                raise RuntimeError(f"{url}: error frame {frame}")
            total, prompt_tokens = frame_tokens(frame, tokens)
            if total > tokens:
                now = time.perf_counter()
                first = first or now
                last = now
                tokens = total
    if first is None:
        raise RuntimeError(f"{url}: the stream carried no token")
    return StreamResult(tokens, prompt_tokens, first - start, last - start)


async def _burst(url: str, bodies: list[dict], frame_tokens) -> tuple[list[StreamResult], float]:
    """Send every body at the same moment, one connection each; (results in order, wall seconds)."""
    limits = httpx.Limits(max_connections=len(bodies) + 1, max_keepalive_connections=len(bodies) + 1)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(_stream(client, url, b, frame_tokens, gate)) for b in bodies]
        await asyncio.sleep(0.1)     # every task is waiting at the gate
        start = time.perf_counter()
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), REQUEST_TIMEOUT_S)
        return list(results), time.perf_counter() - start


def burst(url: str, bodies: list[dict], frame_tokens) -> tuple[list[StreamResult], float]:
    return asyncio.run(_burst(url, bodies, frame_tokens))


# ---- neoxserve -----------------------------------------------------------------------------------------------

def neoxserve_server(model_dir: Path, data_dir: Path, port: int, dtype: str, quantization: str,
                     group_size: int | None, threads: int, log: Path) -> Server:
    argv = [sys.executable, "-m", "neoxserve.cli", "serve", "--model", str(model_dir), "--dtype", dtype,
            "--port", str(port), "--data-dir", str(data_dir), "--api-name", "bench"]
    if quantization != "none":
        argv += ["--quantization", quantization]
    if quantization == "int4" and group_size:
        argv += ["--quantization-group-size", str(group_size)]
    # One token per stream frame, as llama-server sends them, so that the first frame is the first token.
    env = {"NEOXSERVE_TORCH_THREADS": str(threads), "NEOXSERVE_STREAM_CHUNK_TOKENS": "1"}
    return Server(argv, port, "/ready", log, env)


def neoxserve_keys(log: Path) -> tuple[str, str]:
    """The API Key and Secret Key `serve` prints once on a fresh data directory."""
    text = log.read_text()
    api = re.search(r"API Key:\s+(\S+)", text)
    secret = re.search(r"Secret Key:\s+(\S+)", text)
    if not (api and secret):
        raise RuntimeError(f"no keys in {log} (was the data directory fresh?)")
    return api.group(1), secret.group(1)


def neoxserve_url(server: Server) -> str:
    api_key, secret_key = neoxserve_keys(server.log)
    answer = httpx.post(f"{server.base}/oauth/2.0/token", params={
        "grant_type": "client_credentials", "client_id": api_key, "client_secret": secret_key}, timeout=30).json()
    return f"{server.base}/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/bench?access_token={answer['access_token']}"


def neoxserve_body(text: str, new_tokens: int) -> dict:
    return {"prompt": text, "stream": True, "top_p": 0, "max_output_tokens": new_tokens}   # top_p 0 = greedy


def neoxserve_frame_tokens(frame: dict, so_far: int) -> tuple[int, int]:
    usage = frame["usage"]            # completion_tokens: this chunk's tokens
    return so_far + usage["completion_tokens"], usage["prompt_tokens"]


# ---- llama-server --------------------------------------------------------------------------------------------

def llama_server(binary: Path, gguf: Path, port: int, slots: int, context_per_slot: int, threads: int,
                 log: Path) -> Server:
    argv = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
            "-tb", str(threads), "-np", str(slots), "-c", str(slots * context_per_slot), "--no-webui"]
    return Server(argv, port, "/health", log)


def llama_body(ids: list[int], new_tokens: int) -> dict:
    return {"prompt": ids, "n_predict": new_tokens, "ignore_eos": True, "stream": True, "temperature": 0,
            "top_k": 1, "cache_prompt": False}


def llama_frame_tokens(frame: dict, so_far: int) -> tuple[int, int]:
    return frame["tokens_predicted"], frame["tokens_evaluated"]     # both cumulative
