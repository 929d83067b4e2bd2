"""N-gram (prompt lookup) speculative decoding: proposals from the sequence's own tokens, and their verification.

Proposal: the longest suffix of prompt + output (`ngram_max` tokens down to `ngram_min`) that occurred earlier
in the sequence; the up to K tokens that followed its latest earlier occurrence are the draft. No second model.

Verification (runner.py): the draft d_1..d_k goes through the model in the same step as the sequence's last
token, as k + 1 query tokens over its paged KV (causal, like a chunk of prefill), so row j's logits are the
model's distribution for the token after d_1..d_j. Row j is then sampled exactly as the token at that position
would be without speculation: penalties counted over the tokens up to it, temperature, top-k/top-p, and the
noise of the same (seed, token index) generator. d_{j+1} is accepted when it is the token sampled at row j; the
first row whose sample differs gives its sample instead (the correction), and when all k are accepted row k
gives one more (the bonus). So a step emits 1..k+1 tokens.

That is the speculative-sampling rule (Leviathan et al. 2023, Chen et al. 2023) for a deterministic draft: with
q one-hot at d, "accept with min(1, p(d)/q(d))" is "accept with p(d)", and the residual norm(max(0, p - q)) is p
with d removed and renormalised. Drawing the token from p with the exponential race (sampler.py) and accepting
when it equals d does both at once: P(accept) = p(d), and given a rejection the race's winner is distributed as
the residual. The output is therefore the same, token for token, as without speculation for greedy requests and
for seeded ones (given the same logits), and has the same distribution for unseeded ones.
"""
from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from neoxserve.engine.worker.sequence import Sequence

METHODS = ("none", "ngram")
# A sequence whose whole draft was rejected skips proposing for 1, 2, 4, ... up to this many steps; an accepted
# draft token resets it. Verifying costs a step more rows (and on CPU, wider products), so text that does not
# repeat itself soon stops paying for drafts that fail, while text that does keeps its drafts.
MAX_DRAFT_BACKOFF = 16


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str = "none"
    num_tokens: int = 4       # K: the most draft tokens verified per sequence and step
    ngram_min: int = 2
    ngram_max: int = 4

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"speculative_method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.num_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {self.num_tokens}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min} and {self.ngram_max}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"


def propose_ngram(token_ids: Seq[int], ngram_min: int, ngram_max: int, k: int) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the longest suffix of `token_ids` of
    ngram_max..ngram_min tokens; [] if none occurred. An occurrence with k tokens after it is preferred to a
    later one with fewer (a loop shorter than k)."""
    n = len(token_ids)
    if k < 1 or n < ngram_min + 1:
        return []
    arr = np.asarray(token_ids, dtype=np.int64)
    # ends: positions e < n - 1 where a match of the suffix of length `length` ends (arr[e - m] == arr[n-1-m])
    ends = np.flatnonzero(arr[:-1] == arr[-1])
    length = 1
    while length < ngram_max and len(ends):
        ok = ends[ends >= length]
        ok = ok[arr[ok - length] == arr[n - 1 - length]]
        if not len(ok):
            break
        ends, length = ok, length + 1
    if length < ngram_min or not len(ends):
        return []
    full = ends[ends + k < n]
    start = int(full[-1] if len(full) else ends[-1]) + 1
    return arr[start:start + k].tolist()


def draft_room(seq: Sequence, k: int, max_context: int) -> int:
    """How many draft tokens `seq` may verify this step: the accepted ones and the bonus token must fit in its
    max_new_tokens and in the model's context."""
    left = seq.params.max_new_tokens - seq.num_output_tokens - 1
    return max(0, min(k, left, max_context - seq.num_tokens - 1))


def wants_draft(seq: Sequence) -> bool:
    """Whether `seq` proposes this step (False while it backs off after rejected drafts); counts the wait down."""
    if seq.draft_wait > 0:
        seq.draft_wait -= 1
        return False
    return True


def after_verification(seq: Sequence, accepted: int) -> None:
    """Back off after a draft with no token accepted (doubling, at most MAX_DRAFT_BACKOFF steps); reset on one
    accepted. Only speed depends on it: which tokens are drafted never changes which tokens are emitted."""
    if accepted:
        seq.draft_backoff = seq.draft_wait = 0
    else:
        seq.draft_backoff = min(MAX_DRAFT_BACKOFF, max(1, 2 * seq.draft_backoff))
        seq.draft_wait = seq.draft_backoff


def allowed_draft(seq: Sequence, draft: list[int]) -> list[int]:
    """The part of a draft that may be verified. A sequence under a grammar (structured outputs) gets none: its
    verify rows would each need the mask of the grammar's state after the draft tokens before them, which the
    step does not compute; it decodes one token a step, masked like any other constrained row."""
    return [] if seq.grammar is not None else draft


def accepted_prefix(draft: Seq[int], sampled: Seq[int]) -> int:
    """How many draft tokens are accepted: the length of the longest prefix where draft[j] == sampled[j]
    (sampled[j] is the token drawn at row j, which comes after draft[:j])."""
    a = 0
    for d, s in zip(draft, sampled, strict=False):
        if d != s:
            break
        a += 1
    return a
