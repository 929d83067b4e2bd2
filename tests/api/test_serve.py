"""`neoxserve serve` itself: the first-start banner, a quiet second start, clean shutdown on SIGINT / SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from live import start_server


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(p) for p in text)
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of an exited child counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def _all_gone(pids: list[int], timeout: float = 5.0) -> bool:
    """The engine process exits before serve does; multiprocessing's resource tracker follows a moment later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_first_start_banner_then_quiet_restart_and_clean_shutdown(tmp_path):
    live = start_server(tmp_path)
    try:
        out = "\n".join(live.stdout_lines)
        keys = live.keys
        assert set(keys) == {"api_key", "secret_key", "access_key", "secret_access_key", "admin_key"}
        assert f"Web console: http://127.0.0.1:{live.port}/console" in out and keys["admin_key"].startswith("nxa-")
        with live.platform() as p:
            assert p.admin.login(keys["admin_key"], "127.0.0.1").token
        token_curl = (f"curl 'http://127.0.0.1:{live.port}/oauth/2.0/token?grant_type=client_credentials"
                      f"&client_id={keys['api_key']}&client_secret={keys['secret_key']}'")
        assert token_curl in out
        assert (f"curl -XPOST 'http://127.0.0.1:{live.port}/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo"
                f"?access_token=ACCESS_TOKEN' -d '{{\"prompt\":\"Introduce the city Beijing\"}}'") in out
        assert "random noise" in out   # live.py pins the random-weight model
        # the printed curl pair works as printed
        token = subprocess.run(token_curl.replace("curl ", "curl -s ", 1), shell=True, capture_output=True,
                               text=True).stdout
        assert "access_token" in token
        engines = _children(live.process.pid)
        assert engines, "no engine process"
    finally:
        code = live.stop()
    assert code == 0, live.stderr_tail()
    assert _all_gone(engines)

    again = start_server(tmp_path)
    try:
        assert again.keys == {} and not any("Secret Key" in line or "Admin key" in line
                                            for line in again.stdout_lines)
        assert httpx.get(again.base_url + "/oauth/2.0/token", params={
            "grant_type": "client_credentials", "client_id": keys["api_key"],
            "client_secret": keys["secret_key"]}).status_code == 200
        engines = _children(again.process.pid)
        again.process.send_signal(signal.SIGINT)
        assert again.process.wait(30) == 0, again.stderr_tail()
    finally:
        again.stop()
    assert _all_gone(engines)


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_the_http_process_never_loads_torch(server):
    assert not _maps_torch(server.process.pid)
    # the check can see torch: the engine process (a child) has it loaded
    assert any(_maps_torch(pid) for pid in _children(server.process.pid))


def test_sigterm_lets_streams_in_flight_finish(tmp_path):
    """SIGTERM stops accepting connections, but streams already running are answered to their last frame before
    the engine stops; then serve exits 0."""
    import json
    import threading

    live = start_server(tmp_path, env={"NEOXSERVE_DEFAULT_MAX_OUTPUT_TOKENS": "1000"})
    try:
        token = live.token()
        results: list[list[dict]] = [[] for _ in range(4)]

        def stream(out: list[dict]) -> None:
            with httpx.stream("POST", live.completions_url(), params={"access_token": token}, timeout=120,
                              json={"prompt": "Tell me a story", "max_output_tokens": 1000, "stream": True,
                                    "seed": 1}) as r:
                for line in r.iter_lines():
                    if line:
                        out.append(json.loads(line.removeprefix("data: ")))

        threads = [threading.Thread(target=stream, args=(out,), daemon=True) for out in results]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not all(results) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(results), "not every stream started"
        engines = _children(live.process.pid)
        live.process.send_signal(signal.SIGTERM)
        assert not all(frames[-1]["is_end"] for frames in results), "the streams ended before the signal"
        for t in threads:
            t.join(120)
        code = live.process.wait(60)
    finally:
        live.stop()
    assert code == 0, live.stderr_tail()
    for frames in results:
        assert "error_code" not in frames[-1] and frames[-1]["is_end"] is True, frames[-1]
        assert frames[-1]["usage"]["completion_tokens"] > 0
    assert _all_gone(engines)
