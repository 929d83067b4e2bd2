"""What a request asks of the sampler. Plain data: it crosses the process boundary as is.

The field defaults are the service's defaults for a request that gives no value (and a service that publishes
none): the tuned StableLM-Alpha models' published sampling. See docs/sampling.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

MAX_LOGPROBS = 20   # the most alternatives per token the engine returns (OpenAI's top_logprobs maximum)


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
    n: int = 1                        # samples of the prompt; sample i is seeded with seed + i (sample_params)
    presence_penalty: float = 0.0     # OpenAI's, on output tokens: logit -= presence if the token was generated
    frequency_penalty: float = 0.0    # OpenAI's, on output tokens: logit -= frequency * times it was generated
    logprobs: int | None = None       # the chosen token's raw logprob + this many most likely alternatives
    prompt_logprobs: int | None = None   # every prompt token's raw logprob + this many alternatives (first: None)
    # structured outputs: llguidance grammar text the output must match (engine/grammar.py); None = unconstrained
    grammar: str | None = None

    def __post_init__(self) -> None:
        # What the sampler can compute. The ranges a client or a service may ask for (temperature <= 1, penalty in
        # [1, 2], top_k >= 1 when given, presence and frequency in [-2, 2]) are the API's, in
        # platform/records.py SAMPLING_RULES.
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
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and not 0 <= k <= MAX_LOGPROBS:
                raise ValueError(f"{name} must be in [0, {MAX_LOGPROBS}] (alternatives per token), got {k}")

    @property
    def output_penalties(self) -> bool:
        """Whether the presence or frequency penalty is on (they need the counts of generated tokens)."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def sample_params(params: SamplingParams, index: int) -> SamplingParams:
    """The parameters of sample `index` of a request with `params.n` samples: one sample, seeded with seed + index
    (so n=1 with seed s is sample 0 of any n with seed s), prompt logprobs on sample 0 only (the prompt is the
    same for all)."""
    if params.n == 1:
        return params
    return replace(params, n=1, seed=None if params.seed is None else params.seed + index,
                   prompt_logprobs=params.prompt_logprobs if index == 0 else None)
