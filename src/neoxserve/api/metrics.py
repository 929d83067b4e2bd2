"""Prometheus metrics: HTTP requests by route and error code, the engine's own stats, and the loaded model
(`neoxserve_model_info`, an info gauge of value 1 labelled name, device, dtype and the native kernels' variant).

Each app gets its own registry, so several apps (tests) can live in one process.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..engine.stats import COUNTERS, GAUGES

PREFIX = "neoxserve_"
# The gauges inference routers read, under vLLM's names (the Gateway API Inference Extension's "model server
# protocol", also read by llm-d, the SGLang router and vLLM's production stack): same values as the
# neoxserve_engine_ gauges of the same scrape. kv_cache_usage_perc is a fraction (0..1, as vLLM's);
# gpu_cache_usage_perc is its older name, still the default of some endpoint-picker releases.
ROUTER_GAUGES = (
    ("vllm:num_requests_running", "running", "sequences running in the engine (neoxserve_engine_running)"),
    ("vllm:num_requests_waiting", "waiting", "sequences waiting to run (neoxserve_engine_waiting)"),
)
ROUTER_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class EngineStatsCollector:
    """Turns `engine_client.stats()` (layout in engine/stats.py) into metrics at scrape time.

    Numbers are gauges, or counters when the key ends in `_total` (except engine.stats.GAUGES:
    `kv_blocks_total`) or is one of engine.stats.COUNTERS (`restarts`: exported as
    `neoxserve_engine_restarts_total`); a dict with `buckets` is a histogram; a dict of
    numbers under a `_total` key is a counter labelled by `reason`.
    """

    def __init__(self, stats: Callable[[], Mapping[str, object]], model_name: str = "") -> None:
        self._stats = stats
        self._model_name = model_name

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()   # one snapshot for both name families, so they agree within a scrape
        metrics = self._own(stats)
        metrics.extend(router_metrics(stats, self._model_name))
        return metrics

    def _own(self, stats: Mapping[str, object]) -> list[Metric]:
        metrics: list[Metric] = []
        for key, value in stats.items():
            name = PREFIX + "engine_" + _NAME_SAFE.sub("_", str(key))
            doc = f"engine {key}"
            if isinstance(value, dict) and "buckets" in value:
                buckets = [("+Inf" if le == float("inf") else repr(float(le)), n) for le, n in value["buckets"]]
                metrics.append(HistogramMetricFamily(name, doc, buckets=buckets, sum_value=value.get("sum", 0.0)))
            elif isinstance(value, dict) and name.endswith("_total"):
                family = CounterMetricFamily(name[: -len("_total")], doc, labels=["reason"])
                for sub, v in value.items():
                    if (n := _number(v)) is not None:
                        family.add_metric([str(sub)], n)
                metrics.append(family)
            elif (n := _number(value)) is not None:
                if (name.endswith("_total") and key not in GAUGES) or key in COUNTERS:
                    metrics.append(CounterMetricFamily(name.removesuffix("_total"), doc, value=n))
                else:
                    metrics.append(GaugeMetricFamily(name, doc, value=n))
        return metrics


def router_metrics(stats: Mapping[str, object], model_name: str) -> list[Metric]:
    """The model-server-protocol gauges (ROUTER_GAUGES, ROUTER_KV_USAGE) from one engine stats snapshot, labelled
    `model_name` like vLLM's; none of a stats dict without the engine's gauges."""
    numbers = {key: _number(stats.get(key)) for key in ("running", "waiting", "kv_blocks_used", "kv_blocks_total")}
    metrics: list[Metric] = []
    for name, key, doc in ROUTER_GAUGES:
        if (value := numbers[key]) is not None:
            family = GaugeMetricFamily(name, doc, labels=["model_name"])
            family.add_metric([model_name], value)
            metrics.append(family)
    used, total = numbers["kv_blocks_used"], numbers["kv_blocks_total"]
    if used is not None and total is not None:
        for name in ROUTER_KV_USAGE:
            family = GaugeMetricFamily(name, "fraction of the paged KV cache's blocks in use (1 = full): "
                                       "neoxserve_engine_kv_blocks_used / neoxserve_engine_kv_blocks_total",
                                       labels=["model_name"])
            family.add_metric([model_name], used / total if total else 0.0)
            metrics.append(family)
    return metrics


MODEL_INFO_LABELS = ("name", "device", "dtype", "kernels")


class ModelInfoCollector:
    """`model_info()` (engine/protocol.py: ModelInfo, or None before a model is loaded) as one info gauge."""

    def __init__(self, model_info: Callable[[], object]) -> None:
        self.model_info = model_info

    def collect(self) -> Iterable[Metric]:
        info = self.model_info()
        if info is None:
            return []
        gauge = GaugeMetricFamily(PREFIX + "model_info", "the loaded model: name, device, dtype and native kernels",
                                  labels=MODEL_INFO_LABELS)
        gauge.add_metric([str(getattr(info, label, "")) for label in MODEL_INFO_LABELS], 1.0)
        return [gauge]


class Metrics:
    def __init__(self, engine_stats: Callable[[], Mapping[str, object]], model_name: str = "",
                 model_info: Callable[[], object] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(PREFIX + "http_requests", "HTTP requests by route and Qianfan error code (0 = ok)",
                                ["route", "error_code"], registry=self.registry)
        self.latency = Histogram(PREFIX + "http_request_duration_seconds", "time to the end of the response",
                                 ["route"], registry=self.registry)
        self.tokens = Counter(PREFIX + "completion_tokens", "completion tokens sent to clients",
                              registry=self.registry)
        self.registry.register(EngineStatsCollector(engine_stats, model_name))
        if model_info is not None:
            self.registry.register(ModelInfoCollector(model_info))

    def observe(self, route: str, error_code: int | str, seconds: float, completion_tokens: int = 0) -> None:
        self.requests.labels(route, str(error_code)).inc()
        self.latency.labels(route).observe(seconds)
        if completion_tokens:
            self.tokens.inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
