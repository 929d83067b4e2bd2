"""What a request asks of the sampler. Plain data: it crosses the process boundary as is.

The field defaults are the service's defaults for a request that gives no value (and a service that publishes
none): the tuned StableLM-Alpha models' published sampling. See docs/sampling.md.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7          # > 0
    top_k: int = 0                    # 0 = off
    top_p: float = 0.9                # [0, 1]; 1 = off, 0 keeps only the most likely token (the API maps it to greedy)
    penalty_score: float = 1.0        # > 0, 1 = off; transformers' RepetitionPenaltyLogitsProcessor, prompt + output
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()        # generation ends before the first of these strings; never emitted
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None           # same seed => same tokens, whatever else runs in the batch or preemption
    greedy: bool = False              # argmax, regardless of temperature / top_k / top_p

    def __post_init__(self) -> None:
        # What the sampler can compute. The ranges a client or a service may ask for (temperature <= 1, penalty in
        # [1, 2], top_k >= 1 when given) are the API's, in platform/records.py SAMPLING_RULES.
        if not self.temperature > 0.0 and not self.greedy:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        if not self.penalty_score > 0.0:
            raise ValueError(f"penalty_score must be > 0, got {self.penalty_score}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
