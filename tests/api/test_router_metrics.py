"""The gauges inference routers read, under vLLM's names (docs/api.md, "Metrics"): the same values as neoxserve's
own engine gauges in the same scrape, and they move with load on the live server."""
from __future__ import annotations

import re
import threading
import time

import httpx

from neoxserve.api.metrics import Metrics

LONG = {"prompt": "Beijing", "max_output_tokens": 256, "seed": 1, "stream": True}
STREAMS = 4


def scrape(base_url: str) -> dict[str, float]:
    """name -> value of every unlabelled neoxserve_engine_ gauge and every vllm: gauge (model_name label dropped)."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^((?:neoxserve_engine_|vllm:)\w+)(?:\{model_name="[^"]*"\})? (\S+)$', text, re.M)}


def agree(values: dict[str, float]) -> None:
    assert values["vllm:num_requests_running"] == values["neoxserve_engine_running"]
    assert values["vllm:num_requests_waiting"] == values["neoxserve_engine_waiting"]
    used, total = values["neoxserve_engine_kv_blocks_used"], values["neoxserve_engine_kv_blocks_total"]
    assert values["vllm:kv_cache_usage_perc"] == values["vllm:gpu_cache_usage_perc"] == used / total


def test_router_gauges_from_one_snapshot_with_the_model_name():
    metrics = Metrics(lambda: {"running": 3, "waiting": 2, "kv_blocks_used": 5, "kv_blocks_total": 20, "up": 1},
                      "demo")
    text = metrics.render().decode()
    assert 'vllm:num_requests_running{model_name="demo"} 3.0' in text
    assert 'vllm:num_requests_waiting{model_name="demo"} 2.0' in text
    assert 'vllm:kv_cache_usage_perc{model_name="demo"} 0.25' in text
    assert "# TYPE vllm:kv_cache_usage_perc gauge" in text
    # an engine with no KV pool reported (down) reads 0, never a division by zero
    idle = Metrics(lambda: {"running": 0, "waiting": 0, "kv_blocks_used": 0, "kv_blocks_total": 0}, "demo")
    assert 'vllm:kv_cache_usage_perc{model_name="demo"} 0.0' in idle.render().decode()


def test_engine_gauges_and_counters_typed_by_what_they_count():
    # kv_blocks_total ends in _total but is a size (a gauge); restarts does not but counts (a counter)
    metrics = Metrics(lambda: {"running": 1, "kv_blocks_used": 5, "kv_blocks_total": 20, "restarts": 2,
                               "preemptions_total": 7}, "demo")
    text = metrics.render().decode()
    assert "# TYPE neoxserve_engine_kv_blocks_total gauge" in text
    assert "\nneoxserve_engine_kv_blocks_total 20.0\n" in text
    assert "# TYPE neoxserve_engine_kv_blocks_used gauge" in text
    assert "# TYPE neoxserve_engine_restarts_total counter" in text
    assert "# TYPE neoxserve_engine_preemptions_total counter" in text


def test_router_gauges_move_with_load(server):
    token = server.token()
    idle = scrape(server.base_url)
    agree(idle)
    assert idle["vllm:num_requests_running"] == 0 and idle["vllm:kv_cache_usage_perc"] == 0
    stop = threading.Event()
    frames = [0] * STREAMS

    def one(i: int) -> None:
        with httpx.stream("POST", server.completions_url(), params={"access_token": token}, json=LONG,
                          timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    frames[i] += 1
                if stop.is_set():
                    return          # leaving early aborts the request in the engine

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(STREAMS)]
    for t in threads:
        t.start()
    try:
        busy = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            values = scrape(server.base_url)
            agree(values)
            if values["vllm:num_requests_running"] >= 1 and values["vllm:kv_cache_usage_perc"] > 0:
                busy = values
                break
            time.sleep(0.1)
        assert busy is not None, f"the router gauges never showed the {STREAMS} streams: {frames}"
        assert busy["vllm:num_requests_running"] + busy["vllm:num_requests_waiting"] <= STREAMS
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    deadline = time.monotonic() + 30
    while (after := scrape(server.base_url))["vllm:num_requests_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    agree(after)
    assert after["vllm:num_requests_running"] == after["vllm:num_requests_waiting"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0
