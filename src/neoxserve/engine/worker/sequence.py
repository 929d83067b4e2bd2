"""One request inside the engine: its tokens, how many of them are in the KV cache, and its blocks."""
from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from neoxserve.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from llguidance import LLMatcher

    from neoxserve.engine.worker.detokenizer import IncrementalDetokenizer
    from neoxserve.engine.outputs import TokenLogprob
    from neoxserve.engine.worker.penalties import TokenHistory


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """`token_ids` is prompt + output so far. `num_computed_tokens` of them have K/V in the cache; the scheduler
    lets it catch up with `num_tokens` a chunk at a time (a whole decode step is a chunk of one)."""

    __slots__ = (
        "request_id", "params", "token_ids", "num_prompt_tokens", "num_computed_tokens", "block_table",
        "num_hashed_blocks", "block_hashes", "status", "arrival_time", "deadline", "first_scheduled_time",
        "first_token_time", "last_token_time", "num_cached_prompt_tokens", "detokenizer",
        "stop_token_ids", "index", "token_history", "prompt_logprobs", "draft_token_ids", "draft_backoff",
        "draft_wait", "grammar",
    )

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 stop_token_ids: frozenset[int] = frozenset(), deadline: float | None = None,
                 index: int = 0) -> None:
        self.request_id = request_id
        self.index = index                    # which of the request's samples (SamplingParams.n) this is
        self.params = params
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        # prefix-cache hashes of this sequence's full blocks, in order (a chain: each covers its parent)
        self.block_hashes: list[int] = []
        self.num_hashed_blocks = 0
        self.status = SequenceStatus.WAITING
        self.arrival_time = time.monotonic()
        self.deadline = deadline
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        self.num_cached_prompt_tokens = 0     # prompt tokens found in the prefix cache (first admission)
        self.detokenizer: IncrementalDetokenizer | None = None   # set by the engine core (LLMEngine.add_request)
        self.stop_token_ids = stop_token_ids
        self.token_history: TokenHistory | None = None   # for the penalties, kept by the runner
        self.prompt_logprobs: list[TokenLogprob] = []    # of prompt tokens 1.. so far (params.prompt_logprobs)
        # speculative decoding: tokens proposed to follow token_ids, verified in the next step
        # (engine/worker/speculative.py)
        self.draft_token_ids: list[int] = []
        self.draft_backoff = 0     # steps to skip after the next fully rejected draft (speculative.after_verification)
        self.draft_wait = 0        # steps left before this sequence proposes again
        # structured outputs: the grammar's state after the output so far (engine/worker/structured.py); None = free
        self.grammar: LLMatcher | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def scores_prompt(self) -> bool:
        """It still owes prompt logprobs: every prompt position's logits must be computed, none taken from the
        prefix cache (they come with the first output token)."""
        return self.params.prompt_logprobs is not None and self.num_output_tokens == 0

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, {self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")
