"""Prometheus metrics: HTTP requests by route and error code, the engine's own stats, and the loaded model
(`neoxserve_model_info`, an info gauge of value 1 labelled name, device, dtype and the native kernels' variant).

Each app gets its own registry, so several apps (tests) can live in one process.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..engine.stats import COUNTERS

PREFIX = "neoxserve_"
_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class EngineStatsCollector:
    """Turns `engine_client.stats()` (layout in engine/stats.py) into metrics at scrape time.

    Numbers are gauges, or counters when the key ends in `_total` or is one of engine.stats.COUNTERS
    (`restarts`: exported as `neoxserve_engine_restarts_total`); a dict with `buckets` is a histogram; a dict of
    numbers under a `_total` key is a counter labelled by `reason`.
    """

    def __init__(self, stats: Callable[[], Mapping[str, object]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        metrics: list[Metric] = []
        for key, value in self._stats().items():
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
                if name.endswith("_total") or key in COUNTERS:
                    metrics.append(CounterMetricFamily(name.removesuffix("_total"), doc, value=n))
                else:
                    metrics.append(GaugeMetricFamily(name, doc, value=n))
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
    def __init__(self, engine_stats: Callable[[], Mapping[str, object]],
                 model_info: Callable[[], object] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(PREFIX + "http_requests", "HTTP requests by route and Qianfan error code (0 = ok)",
                                ["route", "error_code"], registry=self.registry)
        self.latency = Histogram(PREFIX + "http_request_duration_seconds", "time to the end of the response",
                                 ["route"], registry=self.registry)
        self.tokens = Counter(PREFIX + "completion_tokens", "completion tokens sent to clients",
                              registry=self.registry)
        self.registry.register(EngineStatsCollector(engine_stats))
        if model_info is not None:
            self.registry.register(ModelInfoCollector(model_info))

    def observe(self, route: str, error_code: int | str, seconds: float, completion_tokens: int = 0) -> None:
        self.requests.labels(route, str(error_code)).inc()
        self.latency.labels(route).observe(seconds)
        if completion_tokens:
            self.tokens.inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
