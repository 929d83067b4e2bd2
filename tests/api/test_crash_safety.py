"""The store survives a crash (docs/operations.md, "Crash safety"): SIGKILL of the server, and separately of its
engine process, during 64 running streams. Live `neoxserve serve` on the demo model and its real SQLite file.

What must hold: the file passes `PRAGMA integrity_check`; every call that finished before the kill is in usage
with its tokens; quotas count every admitted call once and nothing twice (a call cut off by the kill of the whole
server was admitted, so it counts against the quota, and never settled, so usage has nothing of it); the server
starts again on the same file and serves.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from neoxserve.platform.store import DB_FILE

from live import LiveServer, start_server

STREAMS = 64
FINISHED_FIRST = 6


def _finish_some(live: LiveServer, token: str) -> int:
    """FINISHED_FIRST whole answers; their completion tokens in all."""
    tokens = 0
    for _ in range(FINISHED_FIRST):
        body = httpx.post(live.completions_url() + f"?access_token={token}",
                          json={"prompt": "Introduce the city Beijing", "max_output_tokens": 8}, timeout=60).json()
        assert "result" in body, body
        tokens += body["usage"]["completion_tokens"]
    return tokens


def _start_streams(live: LiveServer, token: str) -> tuple[list[threading.Thread], list[int], list[str]]:
    """STREAMS long streams in threads; `frames[i]` counts the lines stream i received, `endings[i]` how it ended:
    "end" (is_end), "error" (an error line: after output, or as the whole answer), "closed" or "cut"."""
    frames = [0] * STREAMS
    endings = [""] * STREAMS

    def one(i: int) -> None:
        try:
            with httpx.stream("POST", live.completions_url() + f"?access_token={token}",
                              json={"prompt": f"Story number {i}:", "stream": True, "max_output_tokens": 256},
                              timeout=httpx.Timeout(60, connect=10)) as r:
                for line in r.iter_lines():
                    if line:
                        frames[i] += 1
                        if '"error_code"' in line:
                            endings[i] = "error"
                            return
                        if '"is_end":true' in line:
                            endings[i] = "end"
                            return
            endings[i] = "closed"
        except httpx.HTTPError:
            endings[i] = "cut"

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(STREAMS)]
    for t in threads:
        t.start()
    return threads, frames, endings


def _wait_running(live: LiveServer, frames: list[int], at_least: int = 16, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for f in frames if f) < at_least:
        assert time.monotonic() < deadline, f"streams did not start: {frames}\n{live.stderr_tail()}"
        time.sleep(0.05)


def _integrity(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _usage(live: LiveServer) -> tuple[int, int, int, int, int]:
    """(calls, succeeded, failed, completion tokens, quota total) of the default app."""
    with live.platform() as p:
        rows = p.usage(app="default")
        total = p.counters("default").total_count
    return (sum(r.calls for r in rows), sum(r.succeeded for r in rows), sum(r.failed for r in rows),
            sum(r.completion_tokens for r in rows), total)


def _under_load(live: LiveServer):
    """A few whole answers, then STREAMS streams, 16 of them running: (token, the answers' completion tokens,
    the stream threads, their frame counts, their endings, the engine's pid)."""
    token = live.token()
    done_tokens = _finish_some(live, token)
    threads, frames, endings = _start_streams(live, token)
    _wait_running(live, frames)
    return token, done_tokens, threads, frames, endings, live.engine_pid()


def test_sigkill_of_the_server_during_64_streams(tmp_path):
    live = start_server(tmp_path)
    try:
        token, done_tokens, threads, _, endings, engine = _under_load(live)
        live.process.send_signal(signal.SIGKILL)
        live.process.wait(10)
        for t in threads:
            t.join(30)
        assert "" not in endings and endings.count("end") < STREAMS     # every stream ended; the kill cut some
        # the engine process notices its parent is gone and exits
        deadline = time.monotonic() + 15
        while engine is not None and Path(f"/proc/{engine}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine is None or not Path(f"/proc/{engine}").exists() or \
            "zombie" in Path(f"/proc/{engine}/status").read_text()
    finally:
        live.stop()
    assert _integrity(tmp_path) == "ok"
    calls, succeeded, failed, tokens, total = _usage(live)
    finished_streams = endings.count("end")
    # the answers finished before the kill, and any stream that ended whole, are in usage; nothing else is
    assert succeeded >= FINISHED_FIRST and tokens >= done_tokens
    assert succeeded <= FINISHED_FIRST + finished_streams and failed == 0
    assert calls == succeeded
    # every admitted call counted once: the finished answers and at most every stream
    assert FINISHED_FIRST + finished_streams <= total <= FINISHED_FIRST + STREAMS

    again = start_server(tmp_path)
    again.keys = live.keys          # printed at the first start only
    try:
        token = again.token()
        body = httpx.post(again.completions_url() + f"?access_token={token}",
                          json={"prompt": "hi", "max_output_tokens": 4}, timeout=60).json()
        assert "result" in body, body
        after = _usage(again)
        assert (after[0], after[1], after[4]) == (calls + 1, succeeded + 1, total + 1)
    finally:
        assert again.stop() == 0
    assert _integrity(tmp_path) == "ok"


def test_sigkill_of_the_engine_during_64_streams(tmp_path):
    live = start_server(tmp_path)
    try:
        token, done_tokens, threads, frames, endings, engine = _under_load(live)
        assert engine is not None
        os.kill(engine, signal.SIGKILL)
        for t in threads:
            t.join(60)
        # the streams cut by the engine's death end with the v1 error line (or, not started, are that line)
        assert endings.count("error") + endings.count("end") == STREAMS, endings
        # the streams whose output reached the client
        served = sum(1 for e, f in zip(endings, frames, strict=True) if e == "end" or f > 1)
        deadline = time.monotonic() + 60
        while httpx.get(live.base_url + "/ready").status_code != 200:
            assert time.monotonic() < deadline, live.stderr_tail()
            time.sleep(0.2)
        # every call is settled exactly once: the finished answers, then each stream as succeeded or failed
        deadline = time.monotonic() + 10
        while _usage(live)[0] < FINISHED_FIRST + STREAMS and time.monotonic() < deadline:
            time.sleep(0.1)
        calls, succeeded, failed, tokens, total = _usage(live)
        assert calls == FINISHED_FIRST + STREAMS
        assert (succeeded, failed) == (FINISHED_FIRST + endings.count("end"), endings.count("error"))
        # a call that failed before any output gave its quota back; the others count once
        assert total == FINISHED_FIRST + served
        assert tokens >= done_tokens
        body = httpx.post(live.completions_url() + f"?access_token={token}",
                          json={"prompt": "hi", "max_output_tokens": 4}, timeout=60).json()
        assert "result" in body, body
    finally:
        assert live.stop() == 0
    assert _integrity(tmp_path) == "ok"
