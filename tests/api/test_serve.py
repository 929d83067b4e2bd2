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
        assert "random noise" in out
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
