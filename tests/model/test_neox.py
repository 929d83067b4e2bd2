"""The GPT-NeoX module against transformers: greedy tokens, logits, and paged-batch equivalences."""
from __future__ import annotations

import pytest
import torch

from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache
from neoxserve.model.loader import load_model

CONFIGS = {
    "parallel-rot0.25-hd16": dict(use_parallel_residual=True, rotary_pct=0.25, hidden_size=64, num_attention_heads=4),
    "sequential-rot1.0-hd32": dict(use_parallel_residual=False, rotary_pct=1.0, hidden_size=128,
                                   num_attention_heads=4, num_hidden_layers=3),
    "parallel-rot1.0-hd16": dict(use_parallel_residual=True, rotary_pct=1.0, hidden_size=96, num_attention_heads=6),
    "sequential-rot0.25-hd32": dict(use_parallel_residual=False, rotary_pct=0.25, hidden_size=64,
                                    num_attention_heads=2),
}
NEW_TOKENS = 64


@pytest.mark.parametrize("name", CONFIGS)
def test_greedy_matches_transformers(name, make_hf_model, greedy_loop):
    hf, path = make_hf_model(**CONFIGS[name])
    model = load_model(path, dtype="float32").model    # the reference is fp32: pinned, whatever auto picks
    prompt = torch.randint(2, 900, (12,), generator=torch.Generator().manual_seed(1)).tolist()

    ours, margins, prompt_logits = greedy_loop(model, prompt, NEW_TOKENS)
    with torch.inference_mode():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
        ref_logits = hf(torch.tensor([prompt])).logits[0]

    # fp32 logits agree to ~1e-5, so a top1-top2 margin above 1e-4 cannot flip on rounding noise
    assert min(margins) > 1e-4, "argmax nearly tied: the comparison would hinge on rounding noise"
    assert ours == ref
    torch.testing.assert_close(prompt_logits[-1], ref_logits[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(prompt_logits, ref_logits, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def model(make_hf_model):
    _, path = make_hf_model(**CONFIGS["sequential-rot1.0-hd32"])
    return load_model(path, dtype="float32").model


def _alone(model, runner_cls, ids: list[int], prefill: int) -> torch.Tensor:
    """Logits of ids[prefill:] after ids[:prefill] was prefilled on its own."""
    runner = runner_cls(model, len(ids))
    if prefill:
        runner.step(ids[:prefill])
    return runner.step(ids[prefill:])


def test_mixed_batch_matches_each_alone(model, runner_cls):
    """One step with a prefilling sequence (prompt of 11) and a decoding one (20 cached + 1 new)."""
    g = torch.Generator().manual_seed(2)
    a = torch.randint(2, 900, (11,), generator=g).tolist()
    b = torch.randint(2, 900, (21,), generator=g).tolist()
    kv = allocate_kv_cache(model.cfg, 16, 4, torch.float32, "cpu")
    table_a, table_b = [9, 3, 14], [0, 7, 1, 12, 5, 2]   # scattered, non-contiguous blocks

    with torch.inference_mode():
        meta = AttentionMetadata.build([20], [20], [table_b], 4)
        model(torch.tensor(b[:20]), torch.arange(20), meta, kv)
        meta = AttentionMetadata.build([11, 1], [11, 21], [table_a, table_b], 4)
        hidden = model(torch.tensor(a + b[20:]), torch.cat([torch.arange(11), torch.tensor([20])]), meta, kv)
        mixed = model.compute_logits(hidden)

    torch.testing.assert_close(mixed[:11], _alone(model, runner_cls, a, 0), atol=1e-4, rtol=0)
    torch.testing.assert_close(mixed[11:], _alone(model, runner_cls, b, 20), atol=1e-4, rtol=0)


def test_batched_decode_and_chunked_prefill_match_alone(model, runner_cls):
    """Three sequences of different lengths decode in one padded, masked step; one was prefilled in chunks."""
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(2, 900, (n,), generator=g).tolist() for n in (5, 17, 9)]
    tables = [[4, 11], [0, 6, 2, 8, 10], [1, 3, 5]]
    kv = allocate_kv_cache(model.cfg, 12, 4, torch.float32, "cpu")
    with torch.inference_mode():
        for s, table in zip(seqs, tables, strict=True):
            chunks = [(0, 7), (7, len(s) - 1)] if len(s) > 8 else [(0, len(s) - 1)]
            for lo, hi in chunks:  # a chunk after the first attends over cached context plus itself
                meta = AttentionMetadata.build([hi - lo], [hi], [table], 4)
                model(torch.tensor(s[lo:hi]), torch.arange(lo, hi), meta, kv)
        meta = AttentionMetadata.build([1, 1, 1], [len(s) for s in seqs], tables, 4)
        hidden = model(torch.tensor([s[-1] for s in seqs]), torch.tensor([len(s) - 1 for s in seqs]), meta, kv)
        batched = model.compute_logits(hidden)

    for i, s in enumerate(seqs):
        torch.testing.assert_close(batched[i:i + 1], _alone(model, runner_cls, s, len(s) - 1), atol=1e-4, rtol=0)


def test_compute_logits_is_float32(model):
    hidden = torch.randn(3, model.cfg.hidden_size)
    with torch.inference_mode():
        logits = model.compute_logits(hidden)
    assert logits.dtype == torch.float32 and logits.shape == (3, model.cfg.vocab_size)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("splits", [1, 2, 3, 5])
@pytest.mark.parametrize("rows", [1, 3, 16, 40])
def test_split_linear_matches_nn_linear(rows, splits, bias):
    from neoxserve.model.neox import Linear

    g = torch.Generator().manual_seed(rows)
    weight, b, x = torch.randn(48, 32, generator=g), torch.randn(48, generator=g), torch.randn(rows, 32, generator=g)
    layer = Linear(32, 48, bias=bias, splits=splits)
    assert layer.splits == (splits if 48 % splits == 0 else 1)
    with torch.no_grad():
        layer.weight.copy_(layer.load_layout(weight))
        if bias:
            layer.bias.copy_(b)
        out = layer(x)
    assert out.is_contiguous() and out.shape == (rows, 48)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, b if bias else None))
