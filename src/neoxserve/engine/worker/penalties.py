"""The penalties on tokens a sequence already holds, batched: Qianfan's `penalty_score` (transformers'
RepetitionPenaltyLogitsProcessor, over prompt + output) and OpenAI's presence and frequency penalties (over the
output only):

    logit[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty,   c[j] = times j was generated

Repetition first, then frequency and presence, as vLLM orders them. What a sequence holds is kept in a
TokenHistory per sequence, brought up to date with the tokens added since the last step, so a step costs one
[rows, vocab] stack instead of a rebuild from every row's full token list.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from neoxserve.engine.sampling_params import SamplingParams


def needs_history(params: SamplingParams) -> bool:
    return params.penalty_score != 1.0 or params.output_penalties


class TokenHistory:
    """Which of the first `vocab` token ids a sequence holds (`seen`, prompt + output; for the repetition
    penalty) and how often it generated each (`counts`, output only; for presence and frequency). Only what the
    sequence's parameters need is kept."""

    __slots__ = ("vocab", "seen", "counts", "num_tokens")

    def __init__(self, vocab: int, params: SamplingParams) -> None:
        self.vocab = vocab
        self.seen = torch.zeros(vocab, dtype=torch.bool) if params.penalty_score != 1.0 else None
        self.counts = torch.zeros(vocab, dtype=torch.float32) if params.output_penalties else None
        self.num_tokens = 0        # how many of the sequence's tokens are counted

    def update(self, token_ids: Sequence[int], num_generated: int) -> None:
        """Count the tokens added since the last update; the last `num_generated` of `token_ids` are output."""
        start, end = self.num_tokens, len(token_ids)
        if start >= end:
            return
        ids = torch.tensor(token_ids[start:end], dtype=torch.long)
        valid = (ids >= 0) & (ids < self.vocab)      # ids past the logits (padded embedding rows) have no logit
        if self.seen is not None:
            self.seen[ids[valid]] = True
        if self.counts is not None:
            first_output = max(end - num_generated, start)
            out = ids[first_output - start:]
            out = out[valid[first_output - start:]]
            self.counts.index_add_(0, out, torch.ones(len(out), dtype=self.counts.dtype))
        self.num_tokens = end


def apply_penalties(logits: torch.Tensor, params: Sequence[SamplingParams],
                    histories: Sequence[TokenHistory | None]) -> torch.Tensor:
    """Penalize each row of `logits` [S, V] by its parameters and history (None for rows without penalties).
    Returns a new tensor unless no row is penalized."""
    repeat = [i for i, p in enumerate(params) if p.penalty_score != 1.0]
    output = [i for i, p in enumerate(params) if p.output_penalties]
    if not repeat and not output:
        return logits
    logits = logits.clone()
    if repeat:
        seen = torch.stack([_part(histories[i], "seen") for i in repeat])
        penalty = torch.tensor([params[i].penalty_score for i in repeat], dtype=logits.dtype).unsqueeze(1)
        rows = logits[repeat]
        penalized = torch.where(rows < 0, rows * penalty, rows / penalty)
        logits[repeat] = torch.where(seen, penalized, rows)
    if output:
        counts = torch.stack([_part(histories[i], "counts") for i in output])
        frequency = torch.tensor([params[i].frequency_penalty for i in output], dtype=logits.dtype).unsqueeze(1)
        presence = torch.tensor([params[i].presence_penalty for i in output], dtype=logits.dtype).unsqueeze(1)
        # two roundings, in this order, exactly as the formula reads (no fused multiply-add)
        rows = logits[output] - counts * frequency
        logits[output] = rows - (counts > 0).to(logits.dtype) * presence
    return logits


def _part(history: TokenHistory | None, name: str) -> torch.Tensor:
    part = getattr(history, name, None)
    if part is None:   # a bug in the caller, never a client's doing
        raise RuntimeError(f"a penalized row has no TokenHistory.{name}")
    return part
