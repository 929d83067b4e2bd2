"""What the engine sends back for a request: a stream of deltas. Plain data, picklable."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass
class Delta:
    request_id: str
    text: str                     # new text since the previous delta (complete UTF-8, stop strings held back)
    token_ids: list[int]          # new token ids since the previous delta
    prompt_tokens: int
    completion_tokens: int        # cumulative
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None      # set with finish_reason "error": what went wrong, for logs (not for clients)
