"""What the engine sends back for a request: a stream of deltas. Plain data, picklable."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "abort", "error"]


class Failure(enum.Enum):
    """Why a request finished with finish_reason "error" (the client raises the matching exception)."""

    QUEUE_TIMEOUT = "queue_timeout"   # waited past queue_timeout_seconds before it started: QueueTimeout
    STEP_FAILED = "step_failed"       # the step running it raised (e.g. out of memory): EngineInternalError


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
