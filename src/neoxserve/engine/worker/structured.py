"""Structured outputs in the engine: one llguidance matcher per constrained sequence, its token mask applied to
that sequence's logits row in the batched step, the matcher advanced with each token the sequence takes.

A request's grammar arrives as llguidance grammar text (validated by the HTTP process, engine/grammar.py). The
first sequence with a given text builds a matcher (the lexer over the vocabulary: about a millisecond for a
JSON schema); it is kept, by that text, as a prototype that later sequences copy (n > 1, the same schema again).
This happens when the request is added, between steps, never inside one.

In the step (engine/worker/runner.py) the masks of all constrained rows are computed together, in llguidance's own
threads, into one bitmask, and the forbidden logits of those rows set to -inf before anything else reads them:
the penalties, the sampler, and the logprobs (so logprobs are those of the masked distribution, as vLLM's).
Unconstrained rows are not touched. A sequence keeps its matcher through preemption: recompute rebuilds the K/V
of tokens it already took, and the matcher has consumed exactly those.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq
from pathlib import Path

import llguidance
import torch

from neoxserve.engine.errors import RequestRejected
from neoxserve.engine.grammar import load_tokenizer
from neoxserve.engine.worker.sequence import Sequence

MAX_PROTOTYPES = 64
_BITS = torch.arange(32, dtype=torch.int32)


class StructuredOutputs:
    def __init__(self, model_dir: str | Path, num_token_ids: int, eos_tokens: tuple[int, ...],
                 threads: int | None = None) -> None:
        """num_token_ids: the width of the logits the sampler sees (the tokenizer's ids; the padded embedding
        rows past them are never sampled). eos_tokens: the tokens that end a sequence, allowed once its grammar
        may end."""
        self.num_token_ids = num_token_ids
        self.tokenizer = load_tokenizer(model_dir, num_token_ids, eos_tokens)
        self.executor = llguidance.LLExecutor(threads)
        self._prototypes: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()

    def matcher(self, grammar: str) -> llguidance.LLMatcher:
        """A fresh matcher for `grammar`; RequestRejected if llguidance refuses it (the HTTP process checks
        grammars first, so this is for callers that do not)."""
        proto = self._prototypes.get(grammar)
        if proto is None:
            proto = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
            if proto.is_error():
                raise RequestRejected(f"the grammar is invalid: {proto.get_error()}")
            self._prototypes[grammar] = proto
            while len(self._prototypes) > MAX_PROTOTYPES:
                self._prototypes.popitem(last=False)
        else:
            self._prototypes.move_to_end(grammar)
        return proto.deep_copy()

    def apply_masks(self, logits: torch.Tensor, seqs: Seq[Sequence]) -> None:
        """Set to -inf, in place, the logits (row i for seqs[i]) each constrained sequence's grammar forbids."""
        rows = [i for i, s in enumerate(seqs) if s.grammar is not None]
        if not rows:
            return
        matchers = [(m, k) for k, i in enumerate(rows) if (m := seqs[i].grammar) is not None]
        bitmask = torch.empty((len(rows), (self.num_token_ids + 31) // 32), dtype=torch.int32)
        # (llguidance.torch wraps this call too, but importing it starts torch.compile's machinery)
        self.executor.unsafe_compute_mask_ptr(matchers, bitmask.data_ptr(), bitmask.shape[1] * 4, len(rows))
        allowed = ((bitmask.unsqueeze(-1) >> _BITS) & 1).view(len(rows), -1)[:, :logits.shape[1]].bool()
        allowed = allowed.to(logits.device)
        if len(rows) == len(seqs):
            logits.masked_fill_(~allowed, float("-inf"))
        else:
            index = torch.tensor(rows, device=logits.device)
            logits[index] = logits[index].masked_fill(~allowed, float("-inf"))

    @staticmethod
    def advance(seq: Sequence, token: int) -> bool:
        """Feed the sequence's new token to its matcher. True when the grammar is complete and allows nothing
        more (the sequence ends: finish_reason stop). RuntimeError if the grammar refuses the token, which the
        mask rules out (a bug)."""
        matcher = seq.grammar
        assert matcher is not None
        if not matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {matcher.get_error()}")
        return matcher.is_stopped()
