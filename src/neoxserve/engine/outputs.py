"""What the engine sends back for a request: a stream of deltas. Plain data, picklable."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, NamedTuple

FinishReason = Literal["stop", "length", "abort", "error"]


class Failure(enum.Enum):
    """Why a request finished with finish_reason "error" (the client raises the matching exception)."""

    QUEUE_TIMEOUT = "queue_timeout"   # waited past queue_timeout_seconds before it started: QueueTimeout
    STEP_FAILED = "step_failed"       # the step running it raised (e.g. out of memory): EngineInternalError


class TokenLogprob(NamedTuple):
    """One token's log-probability and the most likely alternatives at its position, all from the log-softmax of
    the model's raw logits (before penalties, temperature, top-k and top-p; docs/sampling.md)."""

    token_id: int
    logprob: float                         # may be -inf (a token the model gives no probability)
    top: tuple[tuple[int, float], ...]     # the k most likely (token_id, logprob), most likely first


@dataclass
class Delta:
    request_id: str
    text: str                     # new text since the previous delta (complete UTF-8, stop strings held back)
    token_ids: list[int]          # new token ids since the previous delta
    prompt_tokens: int
    completion_tokens: int        # cumulative
    finished: bool = False
    finish_reason: FinishReason | None = None
    failure: Failure | None = None   # set exactly with finish_reason "error"
    error: str | None = None         # with a failure: what went wrong, for logs (not for clients)
    index: int = 0                   # which of the request's `n` samples this delta belongs to
    logprobs: list[TokenLogprob] | None = None    # when asked (params.logprobs): one per entry of token_ids
    # when asked (params.prompt_logprobs): on sample 0's first delta, one per prompt token; the first is None
    prompt_logprobs: list[TokenLogprob | None] | None = None
