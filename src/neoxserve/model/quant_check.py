"""How far a quantized model's next-token distributions are from the float model's, on the same positions.

Used by the accuracy tests and bench/quant_accuracy.py; docs/engine.md reports the measured values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LogitAgreement:
    positions: int
    mean_kl: float           # mean over positions of KL(float || quantized) of the softmax distributions, nats
    top1_agreement: float    # share of positions whose argmax is the same
    mean_cosine: float       # mean over positions of the cosine similarity of the logit vectors

    def __str__(self) -> str:
        return (f"{self.positions} positions: mean KL {self.mean_kl:.5f}, top-1 agreement "
                f"{self.top1_agreement:.4f}, logit cosine {self.mean_cosine:.5f}")


def compare_logits(reference: Tensor, test: Tensor) -> LogitAgreement:
    """reference, test: logits [N, V] of the same N positions."""
    ref, out = reference.double(), test.double()
    kl = F.kl_div(out.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return LogitAgreement(positions=ref.shape[0], mean_kl=float(kl.mean()),
                          top1_agreement=float((ref.argmax(-1) == out.argmax(-1)).double().mean()),
                          mean_cosine=float(F.cosine_similarity(ref, out, dim=-1).mean()))
