"""Per-token log-probabilities with the most likely alternatives, from the model's raw logits.

The distribution is the log-softmax of the logits as the model computes them (float32, over the tokenizer's ids:
the padded embedding rows the engine never samples are left out), before penalties, temperature, top-k and
top-p: what vLLM returns by default, and what a reference run of the model gives. Only rows that ask for them
are computed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from neoxserve.engine.outputs import TokenLogprob

PROMPT_ROWS_PER_SLICE = 64   # prompt logprobs: logits of this many positions at a time ([64, 50k] fp32 = 13 MB)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """float32 CPU log-probabilities [R, V]; non-finite logits count as -inf (as the sampler treats them), and a
    row with nothing finite is -inf everywhere."""
    logits = logits.to("cpu", torch.float32)
    logits = logits.masked_fill(~torch.isfinite(logits), float("-inf"))
    out = logits.log_softmax(dim=-1)
    return out.masked_fill_(out.isnan(), float("-inf"))


def token_logprobs(logits: torch.Tensor, token_ids: Sequence[int], ks: Sequence[int]) -> list[TokenLogprob]:
    """Row i: the logprob of `token_ids[i]` and the `ks[i]` most likely tokens of `logits[i]`."""
    lp = log_softmax(logits)
    chosen = lp.gather(1, torch.tensor(token_ids, dtype=torch.long).unsqueeze(1)).squeeze(1).tolist()
    return [TokenLogprob(t, c, _top(row, k)) for row, t, c, k in zip(lp, token_ids, chosen, ks, strict=True)]


def _top(row: torch.Tensor, k: int) -> tuple[tuple[int, float], ...]:
    """The k largest entries, largest first; equal values in token id order, so the answer depends on the row
    alone (topk's order among ties depends on k and on the kernel)."""
    if k == 0:
        return ()
    kth = row.topk(k).values[-1]
    above = torch.nonzero(row > kth).flatten()
    tied = torch.nonzero(row == kth).flatten()[:k - len(above)]
    ids = torch.cat([above, tied]).sort().values
    values, order = row[ids].sort(descending=True, stable=True)
    return tuple(zip(ids[order].tolist(), values.tolist(), strict=True))


def prompt_logprobs(compute_logits: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
                    next_ids: Sequence[int], k: int, vocab: int) -> list[TokenLogprob]:
    """Logprobs of `next_ids[i]` given the position whose hidden state is `hidden[i]`: the logits of a few dozen
    positions at a time, so a long prompt never holds [prompt, vocab] floats at once."""
    out: list[TokenLogprob] = []
    for start in range(0, len(next_ids), PROMPT_ROWS_PER_SLICE):
        end = start + PROMPT_ROWS_PER_SLICE
        logits = compute_logits(hidden[start:end])[:, :vocab]
        out += token_logprobs(logits, next_ids[start:end], [k] * len(next_ids[start:end]))
    return out
