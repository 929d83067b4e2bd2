"""Presence and frequency penalties: OpenAI's formula exactly, over output tokens only, combined with the
repetition penalty; histories kept across steps equal a fresh count."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from neoxserve.engine.worker.penalties import TokenHistory, apply_penalties
from neoxserve.engine.worker.sampler import SampleRequest, Sampler
from neoxserve.engine.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")

V = 300


def random_logits(seed: int, rows: int, vocab: int = V) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def history(params: SamplingParams, prompt: list[int], output: list[int], vocab: int = V) -> TokenHistory:
    h = TokenHistory(vocab, params)
    h.update(prompt + output, len(output))
    return h


def formula(row: torch.Tensor, output: list[int], frequency: float, presence: float) -> torch.Tensor:
    """OpenAI's documented formula element by element, in float32, in the order it is written:
    logit[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty, c[j] = count of j in the output."""
    counts = np.bincount(np.array([t for t in output if 0 <= t < len(row)], dtype=np.int64), minlength=len(row))
    f, p = np.float32(frequency), np.float32(presence)
    values = row.numpy()
    out = np.empty_like(values)
    for j, logit in enumerate(values):
        c = np.float32(counts[j])
        out[j] = np.float32(logit - c * f) - np.float32(c > 0) * p
    return torch.from_numpy(out)


PENALTY = st.floats(-2.0, 2.0, allow_nan=False, width=32)
TOKENS = st.lists(st.integers(-3, V + 3), max_size=60)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000),
       rows=st.lists(st.tuples(PENALTY, PENALTY, TOKENS, TOKENS), min_size=1, max_size=5))
def test_presence_and_frequency_follow_the_formula_exactly(seed, rows):
    logits = random_logits(seed, len(rows))
    params = [SamplingParams(frequency_penalty=f, presence_penalty=p) for f, p, _, _ in rows]
    histories = [history(par, prompt, output) for par, (_, _, prompt, output) in zip(params, rows, strict=True)]
    ours = apply_penalties(logits, params, histories)
    for i, (f, p, _, output) in enumerate(rows):
        assert torch.equal(ours[i], formula(logits[i], output, f, p)), i


def test_prompt_tokens_are_not_counted():
    logits = random_logits(1, 1)
    params = SamplingParams(presence_penalty=1.5, frequency_penalty=0.5)
    prompt, output = [3, 3, 3, 7], [7, 9, 9]
    ours = apply_penalties(logits, [params], [history(params, prompt, output)])[0]
    changed = torch.nonzero(ours != logits[0]).flatten().tolist()
    assert changed == [7, 9]
    assert ours[7] == np.float32(logits[0, 7] - np.float32(0.5)) - np.float32(1.5)
    assert ours[9] == np.float32(logits[0, 9] - np.float32(2) * np.float32(0.5)) - np.float32(1.5)


def test_repetition_penalty_comes_first_then_the_formula():
    logits = random_logits(2, 1)
    params = SamplingParams(penalty_score=1.4, presence_penalty=0.7, frequency_penalty=-0.3)
    prompt, output = [1, 5, 8, 8], [8, 20, 20, 20, 5]
    ours = apply_penalties(logits, [params], [history(params, prompt, output)])[0]
    repeated = transformers.RepetitionPenaltyLogitsProcessor(1.4)(torch.tensor([prompt + output]), logits.clone())[0]
    assert torch.equal(ours, formula(repeated, output, -0.3, 0.7))


def test_zero_penalties_change_nothing():
    logits = random_logits(3, 2)
    params = [SamplingParams(), SamplingParams(presence_penalty=0.0, frequency_penalty=0.0)]
    assert apply_penalties(logits, params, [None, None]) is logits


def test_a_history_kept_across_steps_equals_a_fresh_one():
    params = SamplingParams(penalty_score=1.2, presence_penalty=0.4, frequency_penalty=0.9)
    gen = torch.Generator().manual_seed(4)
    prompt = torch.randint(-2, V + 2, (30,), generator=gen).tolist()
    tokens = list(prompt)
    kept = TokenHistory(V, params)
    for step in range(40):
        kept.update(tokens, step)
        fresh = history(params, prompt, tokens[len(prompt):])
        assert kept.num_tokens == fresh.num_tokens == len(tokens)
        assert torch.equal(kept.seen, fresh.seen) and torch.equal(kept.counts, fresh.counts)
        tokens.append(int(torch.randint(0, V + 3, (1,), generator=gen)))
    assert kept.counts.sum() == sum(1 for t in tokens[len(prompt):-1] if t < V)


def test_a_history_holds_only_what_its_penalties_need():
    assert TokenHistory(V, SamplingParams(penalty_score=1.3)).counts is None
    only_output = TokenHistory(V, SamplingParams(frequency_penalty=1.0))
    assert only_output.seen is None and only_output.counts is not None


def test_greedy_sees_the_presence_penalty():
    logits = random_logits(5, 1)
    best, second = logits[0].topk(2).indices.tolist()
    gap = float(logits[0, best] - logits[0, second])
    params = SamplingParams(greedy=True, presence_penalty=gap + 0.1)
    prompt = [best, best]
    # a prompt token is no output: the penalty does not apply
    assert Sampler(0).sample(logits, [SampleRequest(params, prompt, 0)]) == [best]
    assert Sampler(0).sample(logits, [SampleRequest(params, [*prompt, best], 1)]) == [second]


def test_the_sampler_counts_afresh_without_a_history_and_updates_a_given_one():
    logits = random_logits(6, 1)
    params = SamplingParams(seed=3, frequency_penalty=2.0, presence_penalty=1.0)
    tokens = [4, 5, 6, 6, 9]
    kept = TokenHistory(V, params)
    with_history = Sampler(0).sample(logits, [SampleRequest(params, tokens, 3, kept)])
    without = Sampler(0).sample(logits, [SampleRequest(params, tokens, 3)])
    assert with_history == without
    assert kept.num_tokens == 5 and kept.counts[6] == 2 and kept.counts[9] == 1 and kept.counts[5] == 0


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_penalties_are_refused(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be a finite number, got {value}$"):
        SamplingParams(**{name: value})


def test_the_engine_generates_what_the_formula_on_the_reference_models_logits_picks(h, make_hf_model):
    """End to end: greedy generation with both penalties equals a reference loop that applies the formula to
    transformers' logits of the same weights and takes the argmax (the penalties change the tokens here)."""
    from neoxserve.engine.worker.core import LLMEngine
    from neoxserve.model.loader import load_model

    vocab = 905                                     # the demo tokenizer's ids: no padded rows
    hf, path = make_hf_model(vocab_size=vocab, max_position_embeddings=256)
    prompt = [(41 * j) % 880 + 20 for j in range(15)]

    def reference(frequency: float, presence: float, steps: int) -> list[int]:
        tokens = list(prompt)
        for _ in range(steps):
            with torch.inference_mode():
                row = hf(torch.tensor([tokens])).logits[0, -1].float()
            tokens.append(int(formula(row, tokens[len(prompt):], frequency, presence).argmax()))
        return tokens[len(prompt):]

    plain = reference(0.0, 0.0, 16)
    penalized = reference(0.6, 0.8, 16)
    assert penalized != plain

    engine = LLMEngine(load_model(path, "cpu", "float32"), h.config())
    engine.add_request("r", prompt, SamplingParams(greedy=True, max_new_tokens=16, ignore_eos=True,
                                                   frequency_penalty=0.6, presence_penalty=0.8))
    assert h.tokens_of(h.run_all(engine)["r"]) == penalized
