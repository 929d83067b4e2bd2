"""Batched sampling of the next token for many sequences, each with its own parameters.

Order per row (docs/sampling.md): penalties (engine/worker/penalties.py), then argmax if greedy, else temperature,
top-k, top-p (all as transformers' logits processors define them; a row whose temperature is too small for float32
takes the argmax), then an exponential race: `argmax(probs / q)` with `q ~ Exp(1)` picks token i with probability
probs[i]. A seeded request draws its `q` from a generator seeded with a hash of (seed, index of the token), so its
token depends only on that and its own logits: not on what else is in the batch, nor on whether it was preempted
and recomputed.
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neoxserve.engine.worker.penalties import TokenHistory, apply_penalties, needs_history
from neoxserve.engine.sampling_params import SamplingParams

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class SampleRequest:
    params: SamplingParams
    token_ids: Sequence[int]     # prompt + generated so far (what the penalties look at)
    num_generated: int           # index of the token being sampled among the generated ones (0 = first)
    # the sequence's counts of its tokens, kept across steps (engine/worker/penalties.py); None: counted afresh
    history: TokenHistory | None = None


def row_seed(seed: int, n: int) -> int:
    """The 64-bit generator seed for token `n` of a request seeded with `seed`."""
    digest = hashlib.blake2b(f"{seed}/{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _histories(requests: Sequence[SampleRequest], vocab: int) -> list[TokenHistory | None]:
    """Each penalized row's history brought up to date (a fresh one for a request that brings none)."""
    out: list[TokenHistory | None] = []
    for r in requests:
        history = None
        if needs_history(r.params):
            history = r.history if r.history is not None else TokenHistory(vocab, r.params)
            history.update(r.token_ids, r.num_generated)
        out.append(history)
    return out


def apply_temperature(logits: torch.Tensor, temperatures: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits / temperature per row (transformers' TemperatureLogitsWarper), and which rows are too cold for
    float32: a row where some finite logit divided by its temperature is not finite (the temperature is 0 in
    float32, below 2^-149, or small enough that the quotient overflows). Such a row would softmax to NaN; the
    sampler takes its argmax instead (docs/sampling.md)."""
    temperature = torch.tensor(temperatures, dtype=logits.dtype).unsqueeze(1)
    scaled = logits / temperature
    finite = torch.isfinite(logits)
    too_cold = (finite & ~torch.isfinite(scaled)).any(dim=-1)
    return scaled, too_cold


def apply_top_k_top_p(logits: torch.Tensor, top_k: Sequence[int], top_p: Sequence[float],
                      candidates: int = 256) -> torch.Tensor:
    """transformers' TopKLogitsWarper then TopPLogitsWarper (min_tokens_to_keep=1) per row; top_k 0 and top_p 1
    are off. Removed entries become -inf; returns a new tensor.

    A full sort of the vocabulary costs ~3 ms a row, so both are looked for among the `candidates` largest logits
    first (top_k beyond that widens them); rows whose nucleus is wider fall back to a full sort."""
    vocab = logits.shape[1]
    k = torch.tensor([min(kk, vocab) if kk > 0 else 0 for kk in top_k], dtype=torch.long)
    p = torch.tensor(top_p, dtype=logits.dtype)
    width = min(vocab, max(candidates, int(k.max())))
    values, idx = torch.topk(logits, width, dim=-1) if width < vocab else torch.sort(logits, dim=-1, descending=True)
    # ties with the k-th largest are kept, as in TopKLogitsWarper
    kth = values.gather(1, (k - 1).clamp_min(0).unsqueeze(1)).masked_fill((k == 0).unsqueeze(1), _NEG_INF)
    logits = logits.masked_fill(logits < kth, _NEG_INF)

    nucleus_rows = p < 1.0
    if not bool(nucleus_rows.any()):
        return logits
    probs = logits.softmax(dim=-1)
    # the top-k mask only touched the smallest logits, so idx still lists the largest probabilities in order
    keep, fits = _nucleus(probs, probs.gather(1, idx), idx, p)
    wide = torch.nonzero(nucleus_rows & ~fits).flatten()
    if len(wide):
        top, full_idx = torch.sort(probs[wide], dim=-1, descending=True)
        keep[wide], _ = _nucleus(probs[wide], top, full_idx, p[wide])
    keep |= ~nucleus_rows.unsqueeze(1)
    return logits.masked_fill(~keep, _NEG_INF)


def _nucleus(probs: torch.Tensor, top: torch.Tensor, idx: torch.Tensor,
             top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TopPLogitsWarper's kept set, from the largest probabilities `top` (descending, at `idx`) of each row: a
    token is removed when the mass of it and of everything smaller is <= 1 - top_p; the largest is always kept.
    Returns (keep mask over the vocabulary, whether every removed token could be decided from `top`)."""
    outside = (probs.sum(dim=-1, keepdim=True) - top.sum(dim=-1, keepdim=True)).clamp_min(0.0)
    mass_at_and_below = top.flip(-1).cumsum(dim=-1).flip(-1) + outside
    remove = mass_at_and_below <= (1.0 - top_p).unsqueeze(1)
    remove[:, 0] = False
    fits = remove[:, -1] | (top.shape[1] == probs.shape[1])
    keep = torch.zeros(probs.shape, dtype=torch.bool).scatter(1, idx, ~remove)
    return keep, fits


class Sampler:
    """Holds the process-wide generator that requests without a seed draw from."""

    def __init__(self, seed: int | None = None) -> None:
        self.generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
        self._row_generator = torch.Generator()

    def sample(self, logits: torch.Tensor, requests: Sequence[SampleRequest]) -> list[int]:
        """One next token per row of `logits` [S, V], for `requests[row]`. Works on CPU in float32 (a copy only
        if the logits are elsewhere): the noise is drawn there, so seeded results do not depend on the device."""
        if logits.dim() != 2 or logits.shape[0] != len(requests):
            raise ValueError(f"logits {tuple(logits.shape)} do not match {len(requests)} requests")
        if not requests:
            return []
        raw = logits.to("cpu", torch.float32)
        # A row sums to a finite number only if every logit in it is finite (a sum that overflows takes the long
        # way too): one pass instead of isfinite's three, and no copy, in the usual case.
        dead = None
        if bool(torch.isfinite(raw.sum(dim=-1)).all()):
            logits = raw
        else:
            finite = torch.isfinite(raw)
            logits = raw.masked_fill(~finite, _NEG_INF)
            dead = ~finite.any(dim=-1)
        logits = apply_penalties(logits, [r.params for r in requests], _histories(requests, logits.shape[1]))

        greedy = [i for i, r in enumerate(requests) if r.params.greedy]
        sampled = [i for i, r in enumerate(requests) if not r.params.greedy]
        if not sampled:
            tokens = logits.argmax(dim=-1)
        else:
            tokens = torch.empty(len(requests), dtype=torch.long)
            if greedy:
                tokens[greedy] = logits[greedy].argmax(dim=-1)
            tokens[sampled] = self._sample_rows(logits[sampled], [requests[i] for i in sampled])

        if dead is not None and dead.any():  # nothing finite to sample from: the raw argmax is as good a guess
            tokens[dead] = raw[dead].argmax(dim=-1)
        return tokens.tolist()

    def _sample_rows(self, logits: torch.Tensor, requests: Sequence[SampleRequest]) -> torch.Tensor:
        params = [r.params for r in requests]
        scaled, too_cold = apply_temperature(logits, [p.temperature for p in params])
        if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
            scaled = apply_top_k_top_p(scaled, [p.top_k for p in params], [p.top_p for p in params])
        probs = scaled.softmax(dim=-1)
        tokens = probs.div_(self._noise(requests, scaled.shape[1])).argmax(dim=-1)
        if too_cold.any():  # greedy is what sampling tends to as the temperature goes to 0
            tokens[too_cold] = logits[too_cold].argmax(dim=-1)
        return tokens

    def _noise(self, requests: Sequence[SampleRequest], vocab: int) -> torch.Tensor:
        """Exp(1) noise [len(requests), vocab]; seeded rows from their own (seed, n) generator."""
        noise = torch.empty(len(requests), vocab)
        unseeded = []
        for row, r in enumerate(requests):
            if r.params.seed is None:
                unseeded.append(row)
            else:
                self._row_generator.manual_seed(row_seed(r.params.seed, r.num_generated))
                noise[row].uniform_(generator=self._row_generator)
        if unseeded:
            noise[unseeded] = torch.empty(len(unseeded), vocab).uniform_(generator=self.generator)
        # -log(u) is Exp(1) and much cheaper than exponential_(); q = 0 would turn a zero probability into
        # 0/0 = NaN, which argmax prefers
        return noise.log_().neg_().clamp_min_(torch.finfo(noise.dtype).tiny)
