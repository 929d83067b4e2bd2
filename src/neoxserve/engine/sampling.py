"""The engine's seams to the sampler (engine/sampler.py) and the detokenizer (engine/detokenizer.py).

Both are written by other people; this module adapts their interfaces to what core/runner need, so that a change
there touches one place here.
"""
from __future__ import annotations

from typing import Any

import torch

from neoxserve.engine.sequence import Sequence


class TokenSampler:
    """`sampler(logits [N, V], seqs) -> N token ids`, row i for seqs[i]."""

    def __init__(self, seed: int | None = None) -> None:
        from neoxserve.engine.sampler import Sampler
        self._sampler = Sampler(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        from neoxserve.engine.sampler import SampleRequest
        return self._sampler.sample(
            logits, [SampleRequest(s.params, s.token_ids, len(s.token_ids) - s.num_prompt_tokens) for s in seqs])


def new_detokenizer(tokenizer: Any, seq: Sequence) -> Any:
    """An incremental detokenizer for the sequence: `push(token) -> text`, `.stopped`, `flush() -> text`."""
    from neoxserve.engine.detokenizer import IncrementalDetokenizer
    return IncrementalDetokenizer(tokenizer, seq.params.stop)
