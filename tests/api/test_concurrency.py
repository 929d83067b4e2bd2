"""Quotas under concurrency, stream/non-stream equivalence in Chinese, and client disconnects, on the live server."""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import time

import httpx

from neoxserve.platform import Limits

from live import start_server

CJK = re.compile(r"[\u4e00-\u9fff]")
# With this seed the demo model does not emit end-of-text early: the request runs its full 256 tokens unless aborted.
LONG = {"prompt": "Beijing", "max_output_tokens": 256, "seed": 1}


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _finished(server, reason: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    m = re.search(rf'^neoxserve_engine_requests_finished_total\{{reason="{reason}"\}} ([0-9.]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_qps_5_with_50_simultaneous_requests(server):
    keys = server.platform().create_app(f"qps5-{secrets.token_hex(3)}", services=[server.api_name],
                                        limits=Limits(qps=5))
    token = server.token(keys.api_key, keys.secret_key)

    async def main():
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            # open the connections first so that the 50 requests arrive together
            await asyncio.gather(*(client.get(server.base_url + "/health") for _ in range(50)))
            while time.time() % 1 > 0.3:      # start early in a second: all 50 fall in the same one
                await asyncio.sleep(0.02)
            started = time.time()
            responses = await asyncio.gather(*(client.post(server.completions_url(),
                                                           params={"access_token": token},
                                                           json={"prompt": "hi", "max_output_tokens": 1})
                                               for _ in range(50)))
            return responses, int(time.time()) - int(started) + 1

    responses, seconds = asyncio.run(main())
    bodies = [r.json() for r in responses]
    passed = [b for b in bodies if "result" in b]
    refused = [b for b in bodies if b.get("error_code") == 18]
    codes = [b.get("error_code") for b in bodies]
    assert len(passed) + len(refused) == 50, codes
    # Every admission falls in one of the wall-clock seconds the burst spanned (1 on an idle machine: exactly 5
    # pass; a loaded machine can spread the 50 over more seconds, each of which admits at most 5).
    assert 5 <= len(passed) <= 5 * seconds, (seconds, codes)
    if seconds == 1:
        assert len(passed) == 5, codes
    assert all(b["error_msg"] == "Open api qps request limit reached" for b in refused)
    assert responses[0].headers.get("x-ratelimit-limit-requests") in (None, "300")
    assert {r.headers.get("x-ratelimit-limit-requests") for r in responses if "result" in r.json()} == {"300"}


def _burst(server, token: str, body: dict, n: int = 50) -> list[httpx.Response]:
    async def main():
        limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            await asyncio.gather(*(client.get(server.base_url + "/health") for _ in range(n)))
            return await asyncio.gather(*(client.post(server.completions_url(), params={"access_token": token},
                                                      json=body) for _ in range(n)))

    if time.time() % 60 > 40:      # the whole burst inside one RPM/TPM minute
        time.sleep(61 - time.time() % 60)
    return asyncio.run(main())


def test_rpm_7_with_50_simultaneous_requests(server):
    keys = server.platform().create_app(f"rpm7-{secrets.token_hex(3)}", services=[server.api_name],
                                        limits=Limits(rpm=7))
    responses = _burst(server, server.token(keys.api_key, keys.secret_key), {"prompt": "hi", "max_output_tokens": 1})
    codes = sorted(r.json().get("error_code", 0) for r in responses)
    assert codes == [0] * 7 + [336501] * 43
    assert all(r.json()["error_msg"] == "Rate limit reached for RPM" for r in responses if "error_code" in r.json())


def test_tpm_with_50_simultaneous_requests(server):
    """Each request reserves its prompt + 4 output tokens and uses exactly that (this prompt and seed never stop
    early): a TPM of 10 reservations admits exactly 10 of 50."""
    body = {**LONG, "max_output_tokens": 4}
    probe = httpx.post(server.completions_url(), params={"access_token": server.token()}, json=body,
                       timeout=60).json()   # another app: the tested app's minute starts empty
    assert probe["usage"]["completion_tokens"] == 4
    per_request = probe["usage"]["total_tokens"]
    keys = server.platform().create_app(f"tpm-{secrets.token_hex(3)}", services=[server.api_name],
                                        limits=Limits(tpm=10 * per_request))
    responses = _burst(server, server.token(keys.api_key, keys.secret_key), body)
    codes = sorted(r.json().get("error_code", 0) for r in responses)
    assert codes == [0] * 10 + [336502] * 40
    assert {r.headers["x-ratelimit-limit-tokens"] for r in responses} == {str(10 * per_request)}


def test_chinese_stream_concatenates_to_the_non_stream_result(server):
    token = server.token()
    body = {"prompt": "北京是中国的首都，有着三千多年的历史。", "max_output_tokens": 60}
    for seed in range(20):     # a seed whose (random) output contains Chinese text
        full = httpx.post(server.completions_url(), params={"access_token": token}, timeout=60,
                          json={**body, "seed": seed}).json()
        if len(CJK.findall(full["result"])) >= 3:
            break
    assert CJK.search(full["result"]), "no seed produced Chinese text"
    r = httpx.post(server.completions_url(), params={"access_token": token}, timeout=60,
                   json={**body, "seed": seed, "stream": True})
    chunks = [json.loads(f[len("data: "):]) for f in r.text.split("\n\n") if f]
    assert len(chunks) >= 2
    assert "".join(c["result"] for c in chunks) == full["result"]
    assert sum(c["usage"]["completion_tokens"] for c in chunks) == full["usage"]["completion_tokens"]
    for c in chunks[:-1]:     # each chunk but the last closed at a sentence end or at the token limit
        text = c["result"].rstrip(" \t")
        assert c["usage"]["completion_tokens"] == 16 or (text and text[-1] in ".!?。！？\n"), c


def _fresh_app(server) -> tuple[str, str]:
    keys = server.platform().create_app(f"gone-{secrets.token_hex(3)}", services=[server.api_name])
    return keys.name, server.token(keys.api_key, keys.secret_key)


def _usage_when_recorded(server, app: str):
    """The app's one usage row, once the server has recorded the call (it does so as the request ends)."""
    with server.platform() as platform:
        assert _wait_for(lambda: bool(platform.usage(app=app)))
        [row] = platform.usage(app=app)
        return row, platform.counters(app)


def test_stream_disconnect_aborts_the_generation(server):
    app, token = _fresh_app(server)
    aborted = _finished(server, "abort")
    with httpx.Client(timeout=60) as client, client.stream(
            "POST", server.completions_url(), params={"access_token": token}, json={**LONG, "stream": True}) as r:
        lines = r.iter_lines()   # kept: dropping the iterator would close the connection
        first = next(lines)
        assert first.startswith("data: ")
        sent = json.loads(first[len("data: "):])["usage"]
        assert _wait_for(lambda: server.engine_stats()["running"] == 1, 3)   # stats lag by up to 0.25 s
    # leaving the block closed the connection mid-stream
    assert _wait_for(lambda: server.engine_stats()["running"] == 0)
    assert _wait_for(lambda: server.engine_stats()["kv_blocks_used"] == 0)
    assert _wait_for(lambda: _finished(server, "abort") == aborted + 1)
    # the client left: a failed call that used its quota, with the tokens sent to it (at least the first chunk)
    row, counters = _usage_when_recorded(server, app)
    assert (row.calls, row.failed, row.prompt_tokens, counters.total_count) == (1, 1, sent["prompt_tokens"], 1)
    assert sent["completion_tokens"] <= row.completion_tokens < 256


def test_non_stream_disconnect_aborts_the_generation(server):
    app, token = _fresh_app(server)
    aborted = _finished(server, "abort")

    async def main():
        async with httpx.AsyncClient(timeout=60) as client:
            task = asyncio.create_task(client.post(server.completions_url(), params={"access_token": token},
                                                   json=LONG))
            assert await asyncio.to_thread(_wait_for, lambda: server.engine_stats()["running"] == 1, 10)
            task.cancel()

    asyncio.run(main())
    assert _wait_for(lambda: server.engine_stats()["running"] == 0)
    assert _wait_for(lambda: _finished(server, "abort") == aborted + 1)
    row, counters = _usage_when_recorded(server, app)
    assert (row.calls, row.failed, row.completion_tokens, counters.total_count) == (1, 1, 0, 1)


def test_total_of_10_after_overload_on_a_tiny_queue(tmp_path):
    """A live server whose engine runs one request and queues one: a burst gets 336100 refusals, which use up
    none of the app's total of 10, so exactly 10 completions are served in the end."""
    live = start_server(tmp_path / "data", env={"NEOXSERVE_MAX_NUM_SEQS": "1", "NEOXSERVE_MAX_WAITING_REQUESTS": "1"})
    try:
        with live.platform() as platform:
            keys = platform.create_app("tiny", services=[live.api_name], limits=Limits(total=10))
        token = live.token(keys.api_key, keys.secret_key)

        async def burst():
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(client.post(live.completions_url(), params={"access_token": token},
                                                          json={**LONG, "max_output_tokens": 64})
                                              for _ in range(8)))

        codes: list[int] = []
        for _ in range(3):   # 8 at once against 1 running + 1 waiting: normally 6 refusals in the first burst
            codes += [r.json().get("error_code", 0) for r in asyncio.run(burst())]
            if 336100 in codes:
                break
        assert 336100 in codes and set(codes) <= {0, 336100}, codes
        with httpx.Client(timeout=120) as client:
            for _ in range(20):
                body = client.post(live.completions_url(), params={"access_token": token},
                                   json={"prompt": "hi", "max_output_tokens": 2}).json()
                if body.get("error_code") == 19:
                    break
                codes.append(body.get("error_code", 0))
        assert codes.count(0) == 10
        with live.platform() as platform:
            [row] = platform.usage(app="tiny")
            assert (row.succeeded, row.failed, platform.counters("tiny").total_count) == (10, codes.count(336100) + 1,
                                                                                           10)
    finally:
        assert live.stop() == 0
