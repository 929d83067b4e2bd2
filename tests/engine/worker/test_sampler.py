"""Sampler: transformers' processors as the reference, seeds independent of the batch, robust to bad logits."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from neoxserve.engine.worker.penalties import TokenHistory, apply_penalties, needs_history
from neoxserve.engine.worker.sampler import SampleRequest, Sampler, apply_temperature, apply_top_k_top_p, row_seed
from neoxserve.engine.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")

V = 600


def random_logits(seed: int, rows: int, vocab: int = V, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def req(params: SamplingParams, token_ids=(), n: int = 0) -> SampleRequest:
    return SampleRequest(params=params, token_ids=list(token_ids), num_generated=n)


def apply_repetition_penalty(logits: torch.Tensor, token_ids: list[list[int]], penalties: list[float]) -> torch.Tensor:
    """The sampler's penalty step (engine/penalties.py) with only the repetition penalty, each row's history counted
    afresh: transformers' RepetitionPenaltyLogitsProcessor per row. A new tensor unless no row is penalized."""
    params = [SamplingParams(penalty_score=p) for p in penalties]
    histories = [TokenHistory(logits.shape[1], p) if needs_history(p) else None for p in params]
    for history, ids in zip(histories, token_ids, strict=True):
        if history is not None:
            history.update(ids, 0)
    return apply_penalties(logits, params, histories)


def reference_warp(row: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """transformers' warpers in generate()'s order on one row."""
    ids = torch.zeros(1, 1, dtype=torch.long)
    scores = transformers.TemperatureLogitsWarper(temperature)(ids, row.unsqueeze(0).clone())
    if top_k > 0:
        scores = transformers.TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = transformers.TopPLogitsWarper(top_p)(ids, scores)
    return scores[0]


def test_repetition_penalty_matches_transformers():
    logits = random_logits(0, 4)
    gen = torch.Generator().manual_seed(1)
    token_ids = [torch.randint(0, V, (n,), generator=gen).tolist() for n in (0, 5, 50, 400)]
    penalties = [1.3, 2.0, 1.0, 1.17]
    ours = apply_repetition_penalty(logits.clone(), token_ids, penalties)
    for row in range(4):
        ids = torch.tensor([token_ids[row] or [0]], dtype=torch.long)
        processor = transformers.RepetitionPenaltyLogitsProcessor(penalties[row])
        expected = processor(ids, logits[row:row + 1].clone())[0] if token_ids[row] else logits[row]
        assert torch.equal(ours[row], expected), row


def test_repetition_penalty_ignores_ids_outside_the_logits():
    logits = random_logits(2, 1)
    out = apply_repetition_penalty(logits.clone(), [[-1, V, V + 7, 3]], [1.5])
    changed = torch.nonzero(out[0] != logits[0]).flatten().tolist()
    assert changed == [3]


def test_penalty_one_is_a_no_op():
    logits = random_logits(3, 3)
    ids = [[1, 2, 3], [4, 5], list(range(100))]
    assert torch.equal(apply_repetition_penalty(logits.clone(), ids, [1.0] * 3), logits)
    base = dict(temperature=0.8, top_p=0.95, seed=11)
    with_penalty = [req(SamplingParams(**base, penalty_score=1.0), t, 4) for t in ids]
    without = [req(SamplingParams(**base), (), 4) for _ in ids]
    assert Sampler(0).sample(logits, with_penalty) == Sampler(0).sample(logits, without)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.5, 3.0, 12.0]),
    rows=st.lists(st.tuples(st.floats(0.05, 1.0), st.sampled_from([0, 0, 1, 2, 7, 40, 300, 900]),
                            st.sampled_from([1.0, 1.0, 0.0, 0.1, 0.5, 0.9, 0.97])), min_size=1, max_size=6),
    candidates=st.sampled_from([4, 256]),
)
def test_temperature_top_k_top_p_match_transformers(seed, scale, rows, candidates):
    logits = random_logits(seed, len(rows), scale=scale)
    temps = torch.tensor([r[0] for r in rows]).unsqueeze(1)
    ours = apply_top_k_top_p(logits / temps, [r[1] for r in rows], [r[2] for r in rows], candidates=candidates)
    for i, (t, k, p) in enumerate(rows):
        expected = reference_warp(logits[i], t, k, p)
        assert torch.equal(torch.isinf(ours[i]), torch.isinf(expected)), (i, t, k, p)
        assert torch.equal(ours[i][~torch.isinf(ours[i])], expected[~torch.isinf(expected)])


def test_top_k_one_equals_greedy():
    logits = random_logits(4, 8)
    greedy = Sampler(0).sample(logits, [req(SamplingParams(greedy=True))] * 8)
    assert greedy == logits.argmax(dim=-1).tolist()
    for s in range(20):
        top1 = Sampler(s).sample(logits, [req(SamplingParams(top_k=1, seed=s, temperature=1.0))] * 8)
        assert top1 == greedy


def test_tiny_temperature_equals_greedy():
    gen = torch.Generator().manual_seed(5)
    # distinct logits 0.01 apart, so that 1e-6 makes the softmax one-hot
    logits = torch.stack([torch.randperm(V, generator=gen).float() * 0.01 for _ in range(6)])
    greedy = logits.argmax(dim=-1).tolist()
    for s in range(20):
        assert Sampler(s).sample(logits, [req(SamplingParams(temperature=1e-6))] * 6) == greedy


def test_temperature_too_small_for_float32_is_exactly_where_a_quotient_overflows():
    # the largest finite logit is 2.0: 2 / 2^-127 = 2^128 overflows float32, 2 / (2^-127 + 2^-149) rounds to a
    # finite value (the next float32 temperature up, a subnormal)
    logits = torch.tensor([[2.0, -1.5, 0.25, float("-inf")]] * 5)
    temps = [2.0**-127, 2.0**-127 + 2.0**-149, 1e-40, 5e-324, 1.0]
    scaled, too_cold = apply_temperature(logits, temps)
    assert too_cold.tolist() == [True, False, True, True, False]
    assert torch.isfinite(scaled[1, :3]).all() and torch.isinf(scaled[0, 0])
    assert torch.equal(scaled[4], logits[4])


def test_temperatures_too_small_for_float32_sample_the_argmax():
    logits = random_logits(13, 6, scale=3.0)
    temps = [1e-40, 5e-324, 2.0**-126, 2.0**-127, 1e-30, 0.7]
    batch = [req(SamplingParams(temperature=t, seed=s)) for s, t in enumerate(temps)]
    tokens = Sampler(0).sample(logits, batch)
    assert tokens[:5] == logits[:5].argmax(dim=-1).tolist()
    # the cold rows do not disturb a normal row's draw
    assert tokens[5] == Sampler(0).sample(logits[5:], batch[5:])[0]


def test_greedy_sees_the_penalty():
    logits = random_logits(6, 1)
    best = int(logits[0].argmax())
    penalized = transformers.RepetitionPenaltyLogitsProcessor(2.0)(torch.tensor([[best]]), logits.clone())
    token = Sampler(0).sample(logits, [req(SamplingParams(greedy=True, penalty_score=2.0), [best])])
    assert token == [int(penalized[0].argmax())]


PARAMS = st.builds(
    SamplingParams,
    temperature=st.floats(0.1, 1.0),
    top_k=st.sampled_from([0, 0, 3, 50]),
    top_p=st.sampled_from([1.0, 0.5, 0.9]),
    penalty_score=st.sampled_from([1.0, 1.0, 1.3]),
    seed=st.one_of(st.none(), st.integers(0, 2**40)),
    greedy=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**63),
    n=st.integers(0, 5000),
    others=st.lists(PARAMS, max_size=5),
    position=st.integers(0, 5),
    data=st.integers(0, 1000),
)
def test_seeded_token_does_not_depend_on_the_batch(seed, n, others, position, data):
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=100, penalty_score=1.2, seed=seed)
    mine = torch.randn(V, generator=torch.Generator().manual_seed(data)) * 2
    history = list(range(0, V, 7))
    alone = Sampler(1).sample(mine.unsqueeze(0), [req(params, history, n)])

    position = min(position, len(others))
    batch = [req(p, [data % V], data % 17) for p in others]
    batch.insert(position, req(params, history, n))
    rows = random_logits(data + 1, len(batch))
    rows[position] = mine
    mixed = Sampler(2).sample(rows, batch)
    assert mixed[position] == alone[0]


def test_seed_and_step_choose_the_noise():
    logits = random_logits(7, 1, scale=0.3)
    draw = lambda seed, n: Sampler().sample(logits, [req(SamplingParams(seed=seed), (), n)])[0]  # noqa: E731
    assert [draw(42, n) for n in range(30)] == [draw(42, n) for n in range(30)]
    assert len({draw(42, n) for n in range(30)}) > 5
    assert len({draw(s, 0) for s in range(30)}) > 5
    assert row_seed(1, 2) != row_seed(2, 1)


def test_unseeded_draws_come_from_the_sampler_generator():
    logits = random_logits(8, 4, scale=0.3)
    batch = [req(SamplingParams())] * 4
    assert Sampler(9).sample(logits, batch) == Sampler(9).sample(logits, batch)
    sampler = Sampler(9)
    assert len({tuple(sampler.sample(logits, batch)) for _ in range(10)}) > 1


def test_samples_stay_inside_the_nucleus():
    logits = random_logits(10, 1, scale=1.5)
    for top_p in (0.3, 0.8):
        nucleus = set(torch.nonzero(~torch.isinf(reference_warp(logits[0], 0.7, 0, top_p))).flatten().tolist())
        assert 1 < len(nucleus) < V
        seen = set(Sampler(0).sample(logits.expand(200, V), [
            req(SamplingParams(temperature=0.7, top_p=top_p, seed=s)) for s in range(200)]))
        assert seen <= nucleus
        assert len(seen) > 1


def test_frequencies_follow_the_probabilities():
    logits = torch.tensor([[1.0, 0.0, -1.0, float("-inf")]])
    probs = logits.softmax(dim=-1)[0]
    n = 4000
    plain = dict(temperature=1.0, top_p=1.0)
    tokens = Sampler(0).sample(logits.expand(n, 4), [req(SamplingParams(**plain, seed=s)) for s in range(n)])
    freq = torch.bincount(torch.tensor(tokens), minlength=4).float() / n
    assert freq[3] == 0
    assert torch.allclose(freq, probs, atol=0.03)


def test_bad_logits_do_not_crash():
    logits = random_logits(11, 4)
    logits[0, :] = float("nan")
    logits[1, ::2] = float("nan")
    logits[1, 1::2] = float("-inf")
    logits[1, 5] = 0.0                     # the only finite entry
    logits[2, :] = float("-inf")
    logits[2, 9] = float("inf")            # only +inf: treated as -inf, so the raw argmax decides
    logits[3, 17] = float("nan")
    logits[3, 18] = float("inf")
    for params in (SamplingParams(greedy=True), SamplingParams(seed=3, top_p=0.5, top_k=5, penalty_score=1.5),
                   SamplingParams()):
        tokens = Sampler(0).sample(logits, [req(params, [5, 9])] * 4)
        assert all(0 <= t < V for t in tokens)
        assert tokens[1] == 5
        assert tokens[2] == 9
        assert tokens[3] not in (17, 18)


def test_finite_logits_whose_sum_overflows_are_sampled_as_finite():
    """The sampler's quick all-finite check sums each row; a row of huge finite logits overflows that sum and must
    still be sampled from its own logits, not treated as a row with nothing finite."""
    logits = torch.full((2, V), -3e38)
    logits[:, :3] = torch.tensor([3e38, 3.3e38, 3.1e38])
    logits[1, 7] = float("nan")
    tokens = Sampler(0).sample(logits, [req(SamplingParams(greedy=True), [1])] * 2)
    assert tokens == [1, 1]


def test_rejects_mismatched_batches_and_handles_empty():
    assert Sampler(0).sample(torch.zeros(0, V), []) == []
    with pytest.raises(ValueError):
        Sampler(0).sample(torch.zeros(2, V), [req(SamplingParams())])


def test_low_precision_logits_are_sampled_in_float32():
    logits = random_logits(12, 3)
    batch = [req(SamplingParams(greedy=True))] + [req(SamplingParams(seed=s)) for s in (1, 2)]
    assert Sampler(0).sample(logits.bfloat16(), batch) == Sampler(0).sample(logits.bfloat16().float(), batch)
