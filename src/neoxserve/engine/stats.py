"""Engine statistics: gauges, counters and latency histograms, as one plain dict the client can read.

The snapshot dict (StatsSnapshot: what `AsyncEngineClient.stats()` returns; all plain, picklable types):

    running, waiting                    gauges: sequences running / waiting (incl. preempted ones)
    kv_blocks_used, kv_blocks_total     gauges: paged KV cache blocks (used = held by a sequence)
    prefix_cache_hit_rate               gauge: prefix_cache_hits_total / prefix_cache_queries_total (0 if none)
    prefix_cache_queries_total          counter: prompt tokens looked up in the prefix cache (first admissions)
    prefix_cache_hits_total             counter: of those, tokens found cached (not computed again)
    prompt_tokens_total                 counter: prompt tokens of accepted requests
    generation_tokens_total             counter: tokens generated
    preemptions_total                   counter: sequences preempted (recomputed later)
    requests_finished_total             counters by reason: {"stop": n, "length": n, "abort": n, "error": n}
    queue_time_seconds                  histogram: arrival -> first scheduled
    time_to_first_token_seconds         histogram: arrival -> first generated token
    time_per_output_token_seconds       histogram: per finished request with >= 2 tokens,
                                        (last token time - first token time) / (tokens - 1)

Each histogram is `{"buckets": [(upper_bound, cumulative_count), ..., (inf, count)], "sum": float,
"count": int}` -- the Prometheus histogram layout, so exporting is direct, e.g. with prometheus_client:

    HistogramMetricFamily(name, doc,
        buckets=[("+Inf" if le == float("inf") else str(le), n) for le, n in h["buckets"]],
        sum_value=h["sum"])
"""
from __future__ import annotations

from bisect import bisect_left
from typing import TypedDict

QUEUE_TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)

FINISH_REASONS = ("stop", "length", "abort", "error")


class HistogramSnapshot(TypedDict):
    buckets: list[tuple[float, int]]   # (upper bound, cumulative count), the last bound inf
    sum: float
    count: int


class StatsSnapshot(TypedDict):
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    prefix_cache_hit_rate: float
    prefix_cache_queries_total: int
    prefix_cache_hits_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    preemptions_total: int
    requests_finished_total: dict[str, int]
    queue_time_seconds: HistogramSnapshot
    time_to_first_token_seconds: HistogramSnapshot
    time_per_output_token_seconds: HistogramSnapshot


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        buckets, total = [], 0
        for le, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            buckets.append((le, total))
        return {"buckets": buckets, "sum": self.sum, "count": self.count}


class EngineStats:
    def __init__(self) -> None:
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.finished = dict.fromkeys(FINISH_REASONS, 0)
        self.queue_time = Histogram(QUEUE_TIME_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)

    def snapshot(self, *, running: int, waiting: int, kv_blocks_used: int, kv_blocks_total: int,
                 prefix_queries: int, prefix_hits: int, preemptions: int) -> StatsSnapshot:
        return {
            "running": running,
            "waiting": waiting,
            "kv_blocks_used": kv_blocks_used,
            "kv_blocks_total": kv_blocks_total,
            "prefix_cache_hit_rate": prefix_hits / prefix_queries if prefix_queries else 0.0,
            "prefix_cache_queries_total": prefix_queries,
            "prefix_cache_hits_total": prefix_hits,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "preemptions_total": preemptions,
            "requests_finished_total": dict(self.finished),
            "queue_time_seconds": self.queue_time.snapshot(),
            "time_to_first_token_seconds": self.ttft.snapshot(),
            "time_per_output_token_seconds": self.tpot.snapshot(),
        }
