"""Logprobs: the reference model's log-softmax for generated and prompt tokens, sorted alternatives, only for the
rows that ask, and the same whatever the scheduler does (chunks, preemption, prefix cache)."""
from __future__ import annotations

import math

import pytest
import torch

from neoxserve.engine.worker import runner as runner_module
from neoxserve.engine.worker.core import LLMEngine
from neoxserve.engine.worker.logprobs import token_logprobs
from neoxserve.engine.outputs import TokenLogprob
from neoxserve.engine.sampling_params import MAX_LOGPROBS, SamplingParams

pytest.importorskip("transformers")

TOKENIZER_IDS = 905   # the demo tokenizer's ids (tests/conftest.py's make_hf_model directories carry it)
ATOL = 1e-4           # fp32 logits agree with transformers' to ~1e-5 (tests/model/test_neox.py)


@pytest.fixture(scope="module", params=[TOKENIZER_IDS, 960], ids=["vocab=tokenizer", "padded-vocab"])
def reference(request, make_hf_model):
    """(transformers model, our model loaded from its directory in float32). With a padded vocabulary the engine's
    distribution is over the tokenizer's ids only (those it can sample), so the reference is the log-softmax of
    those logits."""
    from neoxserve.model.loader import load_model

    hf, path = make_hf_model(vocab_size=request.param, max_position_embeddings=256)
    return hf, load_model(path, "cpu", "float32")


def reference_logprobs(hf, token_ids: list[int]) -> torch.Tensor:
    """log_softmax over the tokenizer's ids of the reference model's logits at every position of `token_ids`."""
    with torch.inference_mode():
        logits = hf(torch.tensor([token_ids])).logits[0, :, :TOKENIZER_IDS]
    return logits.float().log_softmax(dim=-1)


def assert_matches(entry: TokenLogprob, ref: torch.Tensor, token: int, k: int) -> None:
    """`entry` scores `token` and lists k alternatives as the reference distribution `ref` [V] does: each listed
    logprob is the reference's for that id, and the listed values are the reference's k largest."""
    assert entry.token_id == token
    assert entry.logprob == pytest.approx(float(ref[token]), abs=ATOL)
    ids = [t for t, _ in entry.top]
    values = [v for _, v in entry.top]
    assert len(ids) == k and len(set(ids)) == k
    assert values == sorted(values, reverse=True)
    for t, v in entry.top:
        assert v == pytest.approx(float(ref[t]), abs=ATOL)
    torch.testing.assert_close(torch.tensor(values), ref.topk(k).values, atol=ATOL, rtol=0)


def prompt_of(n: int, salt: int = 0) -> list[int]:
    return [(37 * j + 11 * salt) % 880 + 20 for j in range(n)]


CASES = {
    # greedy: the chosen token is the most likely one
    "greedy": SamplingParams(greedy=True, max_new_tokens=12, ignore_eos=True, logprobs=5, prompt_logprobs=5),
    # sampled through every processor: the logprobs are still the raw model's
    "sampled": SamplingParams(seed=9, temperature=0.6, top_k=40, top_p=0.8, penalty_score=1.5,
                              presence_penalty=1.0, frequency_penalty=0.7, max_new_tokens=12, ignore_eos=True,
                              logprobs=MAX_LOGPROBS, prompt_logprobs=2),
    "no-alternatives": SamplingParams(seed=2, max_new_tokens=6, ignore_eos=True, logprobs=0, prompt_logprobs=0),
}


@pytest.mark.parametrize("case", CASES)
def test_logprobs_are_the_reference_models_log_softmax(h, reference, case):
    hf, loaded = reference
    params = CASES[case]
    prompt = prompt_of(19)
    engine = LLMEngine(loaded, h.config())
    engine.add_request("r", prompt, params)
    deltas = h.run_all(engine)["r"]
    tokens = h.tokens_of(deltas)
    ref = reference_logprobs(hf, prompt + tokens)

    entries = [e for d in deltas for e in d.logprobs]
    assert len(entries) == len(tokens) == params.max_new_tokens
    for i, (entry, token) in enumerate(zip(entries, tokens, strict=True)):
        assert_matches(entry, ref[len(prompt) - 1 + i], token, params.logprobs)
        if params.greedy:
            assert entry.top[0][0] == token

    scored = deltas[0].prompt_logprobs
    assert scored is not None and len(scored) == len(prompt) and scored[0] is None
    for j in range(1, len(prompt)):
        assert_matches(scored[j], ref[j - 1], prompt[j], params.prompt_logprobs)
    assert all(d.prompt_logprobs is None for d in deltas[1:])


def test_the_chosen_token_is_listed_when_it_is_among_the_most_likely(h, make_engine):
    engine = make_engine()
    params = SamplingParams(seed=4, temperature=1.0, top_p=1.0, max_new_tokens=40, ignore_eos=True, logprobs=3)
    engine.add_request("r", prompt_of(10), params)
    for d in h.run_all(engine)["r"]:
        for entry in d.logprobs:
            ids = [t for t, _ in entry.top]
            assert (entry.token_id in ids) == (entry.logprob >= entry.top[-1][1])
            if entry.token_id in ids:
                assert dict(entry.top)[entry.token_id] == entry.logprob


def test_no_logprobs_unless_asked_and_aligned_with_token_ids(h, make_engine, demo_loaded):
    eos = demo_loaded.tokenizer.eos_token_id
    engine = make_engine()
    engine.add_request("plain", prompt_of(8), SamplingParams(greedy=True, max_new_tokens=5, ignore_eos=True))
    # ends on a stop token: its id is in token_ids (not in the text) and has its entry
    engine.add_request("stops", prompt_of(8, 1), SamplingParams(greedy=True, max_new_tokens=5, ignore_eos=True,
                                                                stop_token_ids=(eos,), logprobs=2))
    out = h.run_all(engine)
    assert all(d.logprobs is None and d.prompt_logprobs is None for d in out["plain"])
    for d in out["stops"]:
        assert [e.token_id for e in d.logprobs] == d.token_ids


def test_an_aborted_request_ends_with_an_empty_list(make_engine):
    engine = make_engine()
    engine.add_request("r", prompt_of(8), SamplingParams(max_new_tokens=50, logprobs=1))
    engine.step()
    engine.abort("r")
    last = engine.step()[-1]
    assert last.finish_reason == "abort" and last.token_ids == [] and last.logprobs == []


def test_only_the_rows_that_ask_are_scored(h, make_engine, monkeypatch):
    calls = []

    def counting(logits, token_ids, ks):
        calls.append((logits.shape[0], list(ks)))
        return token_logprobs(logits, token_ids, ks)

    monkeypatch.setattr(runner_module, "token_logprobs", counting)
    monkeypatch.setattr(runner_module, "prompt_logprobs", lambda *a: pytest.fail("no prompt logprobs were asked"))
    engine = make_engine()
    for i in range(3):
        engine.add_request(f"plain{i}", prompt_of(9, i), SamplingParams(seed=i, max_new_tokens=6, ignore_eos=True))
    h.run_all(engine)
    assert calls == []

    engine.add_request("asks", prompt_of(9, 5), SamplingParams(seed=1, max_new_tokens=6, ignore_eos=True,
                                                               logprobs=4))
    for i in range(3):
        engine.add_request(f"more{i}", prompt_of(9, i), SamplingParams(seed=i, max_new_tokens=6, ignore_eos=True))
    h.run_all(engine)
    assert calls == [(1, [4])] * 6


PROMPT_SCENARIOS = {
    "chunked": dict(max_num_batched_tokens=7),
    "preempt": dict(kv_block_size=4, kv_cache_memory_mb=1, max_num_batched_tokens=32),
}


@pytest.mark.parametrize("scenario", PROMPT_SCENARIOS)
def test_prompt_logprobs_survive_chunks_and_preemption(h, make_engine, scenario):
    # 4 prompts of 30-57 tokens, 16 new tokens each: 238 tokens where the "preempt" pool holds 128
    params = SamplingParams(greedy=True, max_new_tokens=16, ignore_eos=True, logprobs=2, prompt_logprobs=3)
    prompts = {f"r{i}": prompt_of(30 + 9 * i, i) for i in range(4)}
    alone = {}
    for rid, prompt in prompts.items():
        engine = make_engine()
        engine.add_request(rid, prompt, params)
        alone[rid] = h.run_all(engine)[rid]

    engine = make_engine(**PROMPT_SCENARIOS[scenario])
    for rid, prompt in prompts.items():
        engine.add_request(rid, prompt, params)
    got = h.run_all(engine)
    if scenario == "preempt":
        assert engine.stats()["preemptions_total"] > 0
    for rid in prompts:
        assert h.tokens_of(got[rid]) == h.tokens_of(alone[rid])
        assert [d.prompt_logprobs is not None for d in got[rid]] == [True] + [False] * (len(got[rid]) - 1)
        assert_close_entries(got[rid][0].prompt_logprobs[1:], alone[rid][0].prompt_logprobs[1:])
        assert_close_entries([e for d in got[rid] for e in d.logprobs], [e for d in alone[rid] for e in d.logprobs])


def assert_close_entries(got: list[TokenLogprob], want: list[TokenLogprob]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.token_id == b.token_id and a.logprob == pytest.approx(b.logprob, abs=ATOL)
        assert [t for t, _ in a.top] == [t for t, _ in b.top]
        assert [v for _, v in a.top] == pytest.approx([v for _, v in b.top], abs=ATOL)


def test_prompt_logprobs_compute_the_whole_prompt_even_when_it_is_cached(h, make_engine):
    engine = make_engine(kv_block_size=8)
    prompt = prompt_of(45)
    engine.add_request("first", prompt, SamplingParams(greedy=True, max_new_tokens=3))
    h.run_all(engine)
    engine.add_request("scored", prompt, SamplingParams(greedy=True, max_new_tokens=3, prompt_logprobs=1))
    engine.add_request("cached", prompt, SamplingParams(greedy=True, max_new_tokens=3))
    first = engine.step()
    assert engine.sequence("scored").num_cached_prompt_tokens == 0
    assert engine.sequence("cached").num_cached_prompt_tokens == 40
    scored = next(d for d in first if d.request_id == "scored").prompt_logprobs
    h.run_all(engine)

    fresh = make_engine(kv_block_size=8)
    fresh.add_request("scored", prompt, SamplingParams(greedy=True, max_new_tokens=3, prompt_logprobs=1))
    assert_close_entries(scored[1:], h.run_all(fresh)["scored"][0].prompt_logprobs[1:])


def test_rows_without_a_finite_logit_score_minus_infinity():
    logits = torch.randn(3, 50)
    logits[0] = float("nan")
    logits[1] = float("-inf")
    logits[1, 7] = float("inf")              # +inf counts as -inf, as in the sampler
    logits[2, 10] = float("nan")
    out = token_logprobs(logits, [3, 7, 10], [4, 4, 2])
    for entry in out[:2]:
        assert entry.logprob == -math.inf
        assert entry.top == tuple((t, -math.inf) for t in range(4))   # ties in token id order
    assert out[2].logprob == -math.inf and all(math.isfinite(v) for _, v in out[2].top)


def test_ties_are_listed_in_token_id_order_whatever_the_batch():
    row = torch.zeros(1, 40)
    row[0, [5, 9, 17, 30]] = 2.0
    alone = token_logprobs(row, [0], [3])[0].top
    in_batch = token_logprobs(torch.cat([torch.randn(2, 40), row]), [0, 0, 0], [20, 1, 3])[2].top
    assert [t for t, _ in alone] == [t for t, _ in in_batch] == [5, 9, 17]


@pytest.mark.parametrize("name", ["logprobs", "prompt_logprobs"])
@pytest.mark.parametrize("value", [-1, MAX_LOGPROBS + 1])
def test_alternatives_beyond_the_engine_limit_are_refused(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 20\] \(alternatives per token\), got {value}$"):
        SamplingParams(**{name: value})
