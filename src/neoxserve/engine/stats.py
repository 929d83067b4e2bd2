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
    spec_proposed_tokens_total          counter: draft tokens verified (speculative decoding,
                                        engine/worker/speculative.py)
    spec_accepted_tokens_total          counter: of those, accepted (acceptance rate = accepted / proposed)
    spec_verify_steps_total             counter: sequence-steps that verified a draft (proposed / this = draft
                                        tokens per verification)
    requests_finished_total             counters by reason: {"stop": n, "length": n, "abort": n, "error": n}
    queue_time_seconds                  histogram: arrival -> first scheduled
    time_to_first_token_seconds         histogram: arrival -> first generated token
    time_per_output_token_seconds       histogram: per finished request with >= 2 tokens,
                                        (last token time - first token time) / (tokens - 1)

The supervisor (engine/supervisor.py) adds two keys (SupervisedStats) and carries the counters and histograms of
engine processes that died over to the next one (`carry_over`), so they never go back:

    up                                  gauge: 1 while the engine serves requests, 0 while it is down
    restarts                            counter: engine processes started after a death (failed loads included)

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
    spec_proposed_tokens_total: int
    spec_accepted_tokens_total: int
    spec_verify_steps_total: int
    requests_finished_total: dict[str, int]
    queue_time_seconds: HistogramSnapshot
    time_to_first_token_seconds: HistogramSnapshot
    time_per_output_token_seconds: HistogramSnapshot


class SupervisedStats(StatsSnapshot):
    up: int
    restarts: int


# numbers that are counters though their key does not end in _total (the name is fixed by its readers: the
# console reads stats()["restarts"]); api/metrics.py exports them as counters
COUNTERS = frozenset({"restarts"})
# and the one gauge whose key ends in _total (blocks in all, not a count of events)
GAUGES = frozenset({"kv_blocks_total"})


def _hit_rate(hits: int, queries: int) -> float:
    return hits / queries if queries else 0.0


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
        self.spec_proposed_tokens_total = 0
        self.spec_accepted_tokens_total = 0
        self.spec_verify_steps_total = 0

    def snapshot(self, *, running: int, waiting: int, kv_blocks_used: int, kv_blocks_total: int,
                 prefix_queries: int, prefix_hits: int, preemptions: int) -> StatsSnapshot:
        return {
            "running": running,
            "waiting": waiting,
            "kv_blocks_used": kv_blocks_used,
            "kv_blocks_total": kv_blocks_total,
            "prefix_cache_hit_rate": _hit_rate(prefix_hits, prefix_queries),
            "prefix_cache_queries_total": prefix_queries,
            "prefix_cache_hits_total": prefix_hits,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "preemptions_total": preemptions,
            "spec_proposed_tokens_total": self.spec_proposed_tokens_total,
            "spec_accepted_tokens_total": self.spec_accepted_tokens_total,
            "spec_verify_steps_total": self.spec_verify_steps_total,
            "requests_finished_total": dict(self.finished),
            "queue_time_seconds": self.queue_time.snapshot(),
            "time_to_first_token_seconds": self.ttft.snapshot(),
            "time_per_output_token_seconds": self.tpot.snapshot(),
        }


def idle_snapshot() -> StatsSnapshot:
    """What an engine holding nothing and having done nothing reports: every gauge, counter and histogram zero."""
    return EngineStats().snapshot(running=0, waiting=0, kv_blocks_used=0, kv_blocks_total=0, prefix_queries=0,
                                  prefix_hits=0, preemptions=0)


def _add(a: HistogramSnapshot, b: HistogramSnapshot) -> HistogramSnapshot:
    buckets = [(le, n + m) for (le, n), (_, m) in zip(a["buckets"], b["buckets"], strict=True)]
    return {"buckets": buckets, "sum": a["sum"] + b["sum"], "count": a["count"] + b["count"]}


def carry_over(ended: StatsSnapshot, current: StatsSnapshot) -> StatsSnapshot:
    """`current`'s gauges, with the counters and histograms of `ended` (what engine processes that died had
    counted) added to its own."""
    queries = ended["prefix_cache_queries_total"] + current["prefix_cache_queries_total"]
    hits = ended["prefix_cache_hits_total"] + current["prefix_cache_hits_total"]
    finished = ended["requests_finished_total"]
    return {
        "running": current["running"],
        "waiting": current["waiting"],
        "kv_blocks_used": current["kv_blocks_used"],
        "kv_blocks_total": current["kv_blocks_total"],
        "prefix_cache_hit_rate": _hit_rate(hits, queries),
        "prefix_cache_queries_total": queries,
        "prefix_cache_hits_total": hits,
        "prompt_tokens_total": ended["prompt_tokens_total"] + current["prompt_tokens_total"],
        "generation_tokens_total": ended["generation_tokens_total"] + current["generation_tokens_total"],
        "preemptions_total": ended["preemptions_total"] + current["preemptions_total"],
        "spec_proposed_tokens_total": ended["spec_proposed_tokens_total"] + current["spec_proposed_tokens_total"],
        "spec_accepted_tokens_total": ended["spec_accepted_tokens_total"] + current["spec_accepted_tokens_total"],
        "spec_verify_steps_total": ended["spec_verify_steps_total"] + current["spec_verify_steps_total"],
        "requests_finished_total": {reason: finished.get(reason, 0) + n
                                    for reason, n in current["requests_finished_total"].items()},
        "queue_time_seconds": _add(ended["queue_time_seconds"], current["queue_time_seconds"]),
        "time_to_first_token_seconds": _add(ended["time_to_first_token_seconds"],
                                            current["time_to_first_token_seconds"]),
        "time_per_output_token_seconds": _add(ended["time_per_output_token_seconds"],
                                              current["time_per_output_token_seconds"]),
    }
