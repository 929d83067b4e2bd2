"""The engine's seams to the sampler (engine/sampler.py) and the detokenizer (engine/detokenizer.py): they take
plain token lists and parameters, the engine hands them Sequences."""
from __future__ import annotations

from typing import Any

import torch

from neoxserve.engine.detokenizer import IncrementalDetokenizer
from neoxserve.engine.sampler import Sampler, SampleRequest
from neoxserve.engine.sequence import Sequence


class TokenSampler:
    """`sampler(logits [N, V], seqs) -> N token ids`, row i for seqs[i]."""

    def __init__(self, seed: int | None = None) -> None:
        self._sampler = Sampler(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        return self._sampler.sample(
            logits, [SampleRequest(s.params, s.token_ids, len(s.token_ids) - s.num_prompt_tokens) for s in seqs])


def new_detokenizer(tokenizer: Any, seq: Sequence) -> Any:
    """An incremental detokenizer for the sequence: `push(token) -> text`, `.stopped`, `flush() -> text`."""
    return IncrementalDetokenizer(tokenizer, seq.params.stop)
