"""Start and drive a live `neoxserve serve` subprocess for the API tests."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PYTHON = sys.executable
COMPLETIONS = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/"
CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
STARTUP_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    return [PYTHON, "-m", "neoxserve.cli", "serve"]


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int
    data_dir: Path
    api_name: str = "demo"
    keys: dict[str, str] = field(default_factory=dict)
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def completions_url(self, api_name: str | None = None) -> str:
        return self.base_url + COMPLETIONS + (api_name or self.api_name)

    def chat_url(self, api_name: str | None = None) -> str:
        return self.base_url + CHAT + (api_name or self.api_name)

    def token(self, api_key: str | None = None, secret_key: str | None = None) -> str:
        r = httpx.get(self.base_url + "/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": api_key or self.keys["api_key"],
            "client_secret": secret_key or self.keys["secret_key"]})
        return r.json()["access_token"]

    def platform(self, **overrides):
        """The same store the server uses, opened from the test process (SQLite allows both)."""
        from neoxserve.config import Settings
        from neoxserve.platform import Platform

        return Platform.open(Settings(data_dir=self.data_dir, **overrides))

    def engine_stats(self) -> dict[str, float]:
        """The engine gauges from /metrics (name without the neoxserve_engine_ prefix -> value)."""
        text = httpx.get(self.base_url + "/metrics").text
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^neoxserve_engine_(\w+) ([0-9.e+-]+)$", text, re.M)}

    def engine_pid(self) -> int | None:
        """The engine process (the spawned child; the other child is multiprocessing's resource tracker)."""
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if b"spawn_main" in cmdline:
                    return int(pid)
        return None

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(self.stderr_lines[-n:])

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _drain(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


KEY_LINES = {"API Key:": "api_key", "Secret Key:": "secret_key", "IAM Access Key:": "access_key",
             "IAM Secret Key:": "secret_access_key", "Admin key:": "admin_key"}


# The API tests rely on the random-weight model's properties (its small vocabulary and fast steps, streams that run
# their full length for a seed), published under the name they call: "demo". --model / --api-name override both.
RANDOM_MODEL_ENV = {"NEOXSERVE_MODEL": "demo-random", "NEOXSERVE_API_NAME": "demo"}


def start_server(data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> LiveServer:
    port = free_port()
    full_env = {**os.environ, **RANDOM_MODEL_ENV, "NEOXSERVE_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1",
                **(env or {})}
    process = subprocess.Popen([*serve_command(), "--data-dir", str(data_dir), "--port", str(port), *(args or [])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    live = LiveServer(process, port, data_dir)
    for stream, lines in ((process.stdout, live.stdout_lines), (process.stderr, live.stderr_lines)):
        threading.Thread(target=_drain, args=(stream, lines), daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}:\n{live.stderr_tail()}")
        try:
            if httpx.get(live.base_url + "/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        live.stop()
        raise RuntimeError(f"serve not ready after {STARTUP_TIMEOUT}s:\n{live.stderr_tail()}")
    deadline = time.monotonic() + 5
    while len(live.keys) < len(KEY_LINES) and time.monotonic() < deadline:
        time.sleep(0.05)
        for line in live.stdout_lines:
            for label, key in KEY_LINES.items():
                if line.strip().startswith(label):
                    live.keys[key] = line.split(":", 1)[1].strip()
    return live
