"""How far a quantized model's next-token distributions are from the float model's, on the same positions.

The models and inputs of the check are defined here once: the accuracy tests (tests/model/test_quant_accuracy.py)
enforce thresholds on them and bench/quant_accuracy.py prints the measured values that docs/engine.md reports.
It imports neoxserve from the path its importer set up (bench/quant_accuracy.py: this checkout's src).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from neoxserve.model.config import NeoXConfig
    from neoxserve.model.neox import GPTNeoX


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


def structured_random_model(cfg: NeoXConfig, seed: int, body_std: float = 0.02, head_std: float = 0.3,
                            channel_spread: float = 0.5) -> GPTNeoX:
    """A float32 GPTNeoX with random weights shaped like a trained model's where it matters for quantization: every
    linear weight is N(0, body_std) times a log-normal factor per output row and per input column (trained models'
    rows and channels differ in magnitude, outlier channels included: iid weights would hide a scale or group
    applied to the wrong row), and a wider output head, so next-token distributions are peaked rather than flat.
    No trained GPT-NeoX ships with any package this project can install; docs/engine.md says so with the figures."""
    from neoxserve.model.neox import GPTNeoX, Linear

    g = torch.Generator().manual_seed(seed)
    model = GPTNeoX(cfg, linear_splits=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name == "embed_in.weight":
                p.copy_(torch.randn(p.shape, generator=g))
            elif name == "embed_out.weight":
                p.copy_(head_std * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, Linear) and m is not model.embed_out:
                out_f, in_f = m.weight.shape
                rows = torch.exp(channel_spread * torch.randn(out_f, 1, generator=g))
                cols = torch.exp(channel_spread * torch.randn(1, in_f, generator=g))
                m.weight.copy_(body_std * torch.randn(out_f, in_f, generator=g) * rows * cols)
    model.init_rotary()
    return model.eval().requires_grad_(False)


def teacher_forced_logits(model: GPTNeoX, token_ids: list[int], prefill: int = 16, block_size: int = 16) -> Tensor:
    """float32 logits [len(token_ids), V]: the first `prefill` positions from one prefill step, then one decode step
    per position (the model reads the given ids, not its own samples), so both the many-row and the one-row paths
    of the linears are measured."""
    from neoxserve.model.arith import cdiv
    from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache

    n = len(token_ids)
    blocks = cdiv(n, block_size)
    dtype = model.embed_in.weight.dtype
    kv = allocate_kv_cache(model.cfg, blocks, block_size, dtype, model.embed_in.weight.device)
    table = list(range(blocks))
    out = []
    with torch.inference_mode():
        for start, stop in [(0, prefill)] + [(p, p + 1) for p in range(prefill, n)]:
            meta = AttentionMetadata.build([stop - start], [stop], [table], block_size)
            hidden = model(torch.tensor(token_ids[start:stop]), torch.arange(start, stop), meta, kv)
            out.append(model.compute_logits(hidden))
    return torch.cat(out)


# The check's three model configurations (vocabulary 1024, context 512): both residual layouts, partial and full
# rotary, 2 to 4 layers, head sizes 32 and 64; the 4h linear has several int4 groups of 128 per row.
CHECK_CONFIGS: dict[str, dict[str, Any]] = {
    "parallel-h128-l2-rot0.25": dict(hidden_size=128, num_attention_heads=4, num_hidden_layers=2,
                                     intermediate_size=512, rotary_pct=0.25, use_parallel_residual=True),
    "sequential-h256-l3-rot1.0": dict(hidden_size=256, num_attention_heads=8, num_hidden_layers=3,
                                      intermediate_size=1024, rotary_pct=1.0, use_parallel_residual=False),
    "parallel-h128-l4-rot0.5": dict(hidden_size=128, num_attention_heads=2, num_hidden_layers=4,
                                    intermediate_size=512, rotary_pct=0.5, use_parallel_residual=True),
}
CHECK_POSITIONS = 256


def check_model(name: str) -> GPTNeoX:
    """The float32 model of configuration `name` (seeded by its place in CHECK_CONFIGS)."""
    from neoxserve.model.config import NeoXConfig

    cfg = NeoXConfig(vocab_size=1024, max_position_embeddings=512, **CHECK_CONFIGS[name])
    return structured_random_model(cfg, seed=list(CHECK_CONFIGS).index(name))


@functools.cache
def check_token_ids() -> list[int]:
    """CHECK_POSITIONS fixed token ids, fed to every model of the check."""
    return torch.randint(2, 1000, (CHECK_POSITIONS,), generator=torch.Generator().manual_seed(7)).tolist()
