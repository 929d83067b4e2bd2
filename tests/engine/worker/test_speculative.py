"""N-gram speculative decoding: proposals, and output the same as without speculation (engine/worker/speculative.py)."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neoxserve.engine.worker.core import LLMEngine
from neoxserve.engine.worker.sampler import Sampler, SampleRequest
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker.speculative import SpeculativeConfig, accepted_prefix, propose_ngram
from neoxserve.model.arith import cdiv

GREEDY = SamplingParams(greedy=True, max_new_tokens=60, ignore_eos=True)   # the demo model loops a little by then
REPEATED = [(7 * j) % 50 + 100 for j in range(20)] * 3      # a passage three times: drafts to find


# ---- proposals ----------------------------------------------------------------------------------------------

def test_the_longest_suffix_proposes_what_followed_it():
    #            0  1  2  3  4  5  6  7  8  9
    tokens = [1, 2, 3, 9, 8, 2, 3, 4, 5, 6, 7, 1, 2, 3]
    # suffix [1, 2, 3] (3 tokens) occurred at 0..2, followed by 9 8 2; [2, 3] alone would match later (5, 6)
    assert propose_ngram(tokens, 2, 4, 3) == [9, 8, 2]
    assert propose_ngram(tokens, 2, 2, 3) == [4, 5, 6]          # n = 2 only: the latest [2, 3]
    assert propose_ngram(tokens, 4, 4, 3) == []                 # no 4-token suffix occurred before
    assert propose_ngram([5, 6, 7, 8], 1, 4, 2) == []           # nothing repeats
    assert propose_ngram([4], 1, 4, 2) == []
    assert propose_ngram(tokens, 2, 4, 0) == []


def test_a_short_loop_prefers_an_occurrence_with_k_tokens_after_it():
    tokens = [3, 4] * 6
    assert propose_ngram(tokens, 2, 4, 4) == [3, 4, 3, 4]
    assert propose_ngram([1, 2, 3, 1, 2], 2, 3, 4) == [3, 1, 2]   # only one occurrence: fewer than k follow


def test_accepted_prefix():
    assert accepted_prefix([1, 2, 3], [1, 2, 9, 4]) == 2
    assert accepted_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert accepted_prefix([1], [2, 5]) == 0


def test_bad_speculative_config_is_refused():
    with pytest.raises(ValueError, match="speculative_method must be one of none, ngram"):
        SpeculativeConfig(method="eagle")
    with pytest.raises(ValueError, match="ngram_min <= ngram_max"):
        SpeculativeConfig(method="ngram", ngram_min=3, ngram_max=2)
    with pytest.raises(ValueError, match="num_speculative_tokens must be >= 1"):
        SpeculativeConfig(method="ngram", num_tokens=0)


# ---- the engine, on and off ---------------------------------------------------------------------------------

def _engine(h, loaded, method: str, **overrides) -> LLMEngine:
    return LLMEngine(loaded, replace(h.config(**overrides), speculative_method=method))


def _run(h, loaded, method, requests, **overrides):
    engine = _engine(h, loaded, method, **overrides)
    for rid, prompt, params in requests:
        engine.add_request(rid, prompt, params)
    out = h.run_all(engine)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    return out, engine.stats()


def _same(h, off, on):
    assert set(on) == set(off)
    for rid in off:
        for index in {d.index for d in off[rid]}:
            a = [d for d in off[rid] if d.index == index]
            b = [d for d in on[rid] if d.index == index]
            assert h.tokens_of(b) == h.tokens_of(a), (rid, index)
            assert h.text_of(b) == h.text_of(a), (rid, index)
            assert b[-1].finish_reason == a[-1].finish_reason
            assert b[-1].completion_tokens == a[-1].completion_tokens


def test_greedy_repetition_is_accepted_and_identical(h, demo_loaded):
    requests = [("r", REPEATED, GREEDY)]
    off, _ = _run(h, demo_loaded, "none", requests)
    on, stats = _run(h, demo_loaded, "ngram", requests)
    _same(h, off, on)
    assert stats["spec_proposed_tokens_total"] > 0
    assert stats["spec_accepted_tokens_total"] > 0
    # fewer deltas than tokens: some steps emitted several
    assert len(on["r"]) < len(h.tokens_of(on["r"]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(passage=st.lists(st.integers(2, 300), min_size=1, max_size=12), repeats=st.integers(1, 4),
       tail=st.lists(st.integers(2, 300), max_size=5), k=st.integers(1, 6), ngram_min=st.integers(1, 3),
       max_new=st.integers(1, 20), budget=st.sampled_from([512, 4]))
def test_greedy_is_token_identical_with_speculation(h, tiny_loaded, passage, repeats, tail, k, ngram_min, max_new,
                                                    budget):
    prompt = passage * repeats + tail
    params = SamplingParams(greedy=True, max_new_tokens=max_new, ignore_eos=True)
    requests = [("a", prompt, params), ("b", prompt[::-1], replace(params, penalty_score=1.2))]
    off, _ = _run(h, tiny_loaded, "none", requests, max_num_batched_tokens=budget)
    on, _ = _run(h, tiny_loaded, "ngram", requests, num_speculative_tokens=k, ngram_min=ngram_min,
                 ngram_max=ngram_min + 2, max_num_batched_tokens=budget)
    _same(h, off, on)


def test_seeded_sampling_penalties_logprobs_and_n_are_the_same(h, demo_loaded):
    params = [
        SamplingParams(seed=1, temperature=0.8, top_k=20, max_new_tokens=60, ignore_eos=True, n=3),
        SamplingParams(seed=2, top_p=0.9, max_new_tokens=60, ignore_eos=True, penalty_score=1.3,
                       presence_penalty=0.5, frequency_penalty=0.3, logprobs=2),
        SamplingParams(greedy=True, max_new_tokens=60, ignore_eos=True, logprobs=3, prompt_logprobs=1, n=2),
    ]
    requests = [(f"r{i}", REPEATED[i:], p) for i, p in enumerate(params)]
    off, _ = _run(h, demo_loaded, "none", requests)
    on, stats = _run(h, demo_loaded, "ngram", requests)
    _same(h, off, on)
    assert stats["spec_accepted_tokens_total"] > 0
    for rid, index in (("r1", 0), ("r2", 0), ("r2", 1)):
        a = [lp for d in off[rid] if d.index == index for lp in d.logprobs or []]
        b = [lp for d in on[rid] if d.index == index for lp in d.logprobs or []]
        assert len(a) == len(b) == 60
        for x, y in zip(a, b, strict=True):
            assert x.token_id == y.token_id
            assert math.isclose(x.logprob, y.logprob, rel_tol=1e-4, abs_tol=1e-4)
            assert [t for t, _ in x.top] == [t for t, _ in y.top]
    assert on["r2"][0].prompt_logprobs is not None and len(on["r2"][0].prompt_logprobs) == len(REPEATED) - 2


def test_stop_strings_and_stop_tokens_inside_an_accepted_draft_cut_it(h, demo_loaded):
    off, _ = _run(h, demo_loaded, "none", [("r", REPEATED, GREEDY)])
    tokens = h.tokens_of(off["r"])
    text = h.text_of(off["r"])
    on_full, _ = _run(h, demo_loaded, "ngram", [("r", REPEATED, GREEDY)])
    # a stop token and a stop string from the middle of the output, where drafts are being accepted
    stop_token = next(t for i, t in enumerate(tokens) if i >= 40 and t not in tokens[:i])
    stop_text = text[-len(text) // 5:][:3]
    requests = [("t", REPEATED, replace(GREEDY, stop_token_ids=(stop_token,))),
                ("s", REPEATED, replace(GREEDY, stop=(stop_text,)))]
    off, _ = _run(h, demo_loaded, "none", requests)
    on, stats = _run(h, demo_loaded, "ngram", requests)
    _same(h, off, on)
    assert off["t"][-1].finish_reason == "stop" and h.tokens_of(off["t"])[-1] == stop_token
    assert stats["spec_proposed_tokens_total"] > 0
    assert len(on_full["r"]) < len(tokens)


def test_preemption_mid_verification_frees_every_block(h, demo_loaded):
    tiny_pool = dict(kv_block_size=4, kv_cache_memory_mb=1, max_num_batched_tokens=32)
    requests = [(f"r{i}", REPEATED[i:i + 40] * 2, replace(GREEDY, max_new_tokens=40)) for i in range(6)]
    off, _ = _run(h, demo_loaded, "none", requests, **tiny_pool)
    on, stats = _run(h, demo_loaded, "ngram", requests, **tiny_pool)     # (_run checks every block is free)
    _same(h, off, on)
    assert stats["preemptions_total"] > 0, "the tiny pool should have forced preemption"
    assert stats["spec_proposed_tokens_total"] > 0
    assert stats["kv_blocks_used"] == 0


def test_rejected_drafts_give_back_their_blocks_and_aborts_free_everything(h, demo_loaded):
    engine = _engine(h, demo_loaded, "ngram", kv_block_size=4, num_speculative_tokens=8)
    engine.add_request("a", REPEATED, replace(GREEDY, max_new_tokens=60))
    engine.add_request("b", REPEATED[5:], replace(GREEDY, max_new_tokens=60))
    bm = engine.block_manager
    verified = 0
    for _ in range(200):
        engine.step()
        for seq in engine.scheduler.running:
            # no block past the sequence's tokens is kept once a step is over
            assert len(seq.block_table) <= cdiv(seq.num_tokens, bm.block_size)
        stats = engine.stats()
        if stats["spec_verify_steps_total"] > verified and stats["spec_accepted_tokens_total"] < \
                stats["spec_proposed_tokens_total"]:
            break          # some draft token was rejected in the steps so far
        verified = stats["spec_verify_steps_total"]
    else:
        pytest.fail("no draft was ever rejected")
    seq = engine.sequence("a")
    assert seq is not None and seq.draft_token_ids is not None
    assert engine.abort("a") and engine.abort("b")
    deltas = engine.step()
    assert {(d.request_id, d.finish_reason) for d in deltas} == {("a", "abort"), ("b", "abort")}
    assert bm.num_free_blocks == bm.num_blocks and not engine.has_unfinished()


# ---- the sampled distribution -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_vocab_loaded(demo_model_dir):
    """A random NeoX over 12 token ids (the demo tokenizer's first ones), so that token counts can be compared."""
    from neoxserve.model.config import NeoXConfig
    from neoxserve.model.loader import LoadedModel
    from neoxserve.model.neox import GPTNeoX
    from neoxserve.model.tokenizer import Tokenizer

    cfg = NeoXConfig(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, rotary_pct=1.0, max_position_embeddings=128, use_parallel_residual=True)
    torch.manual_seed(1)
    model = GPTNeoX(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.init_rotary()
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, config=cfg, tokenizer=Tokenizer.from_dir(Path(demo_model_dir)),
                       path=Path(demo_model_dir))


CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59,
            11: 31.26}   # chi-square quantiles at p = 0.999


def _chi2_two_samples(a: Counter, b: Counter) -> tuple[float, int]:
    """Pearson's chi-square of a 2 x C contingency table (categories with < 10 in both samples pooled)."""
    keys = [k for k in set(a) | set(b) if a[k] + b[k] >= 10]
    rest = (sum(a.values()) - sum(a[k] for k in keys), sum(b.values()) - sum(b[k] for k in keys))
    cols = [(a[k], b[k]) for k in keys] + ([rest] if sum(rest) else [])
    na, nb = sum(c[0] for c in cols), sum(c[1] for c in cols)
    stat = 0.0
    for x, y in cols:
        total = x + y
        for observed, n in ((x, na), (y, nb)):
            expected = total * n / (na + nb)
            stat += (observed - expected) ** 2 / expected
    return stat, len(cols) - 1


def test_sampled_distribution_is_the_same_with_speculation(h, small_vocab_loaded):
    """Different seeds on and off (with the same seeds the tokens would simply be equal): the tokens at each
    output position, and whole outputs' first three tokens, are distributed alike (chi-square, p = 0.001)."""
    samples = 300
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=6, ignore_eos=True, penalty_score=1.1)
    prompt = [3, 4, 5, 3, 4, 5, 3, 4]

    def outputs(method: str, seed0: int):
        engine = _engine(h, small_vocab_loaded, method, num_speculative_tokens=3, ngram_min=1, ngram_max=3)
        got: list[list[int]] = []
        for batch in range(0, samples, 30):
            for i in range(batch, batch + 30):
                engine.add_request(f"r{i}", prompt, replace(params, seed=seed0 + i))
            got += [h.tokens_of(d) for d in h.run_all(engine).values()]
        assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
        return got, engine.stats()

    off, _ = outputs("none", 0)
    on, stats = outputs("ngram", 10_000)
    assert stats["spec_accepted_tokens_total"] > 0 and stats["spec_proposed_tokens_total"] > \
        stats["spec_accepted_tokens_total"]
    for pos in range(6):
        stat, df = _chi2_two_samples(Counter(t[pos] for t in off), Counter(t[pos] for t in on))
        assert df >= 1 and stat < CHI2_999[min(df, 11)], (pos, stat, df)
    stat, df = _chi2_two_samples(Counter(tuple(t[:2]) for t in off), Counter(tuple(t[:2]) for t in on))
    assert stat < CHI2_999.get(df, df + 4 * math.sqrt(2 * df)), (stat, df)


def test_race_accepts_a_draft_with_its_probability_and_otherwise_draws_the_residual():
    """The acceptance rule verification relies on: drawing from p and accepting draft t when the draw is t
    accepts with p(t), and a rejection's token is distributed as p without t, renormalised."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    p = logits.softmax(-1)[0]
    draft = 1
    sampler = Sampler(seed=0)
    draws = Counter(sampler.sample(logits, [SampleRequest(SamplingParams(temperature=1.0, top_p=1.0, seed=s), [], 0)])
                    [0] for s in range(4000))
    n = sum(draws.values())
    accepted = draws[draft] / n
    assert abs(accepted - float(p[draft])) < 4 * math.sqrt(float(p[draft]) * (1 - float(p[draft])) / n)
    rejected = n - draws[draft]
    residual = p.clone()
    residual[draft] = 0
    residual /= residual.sum()
    stat = sum((draws[i] - rejected * float(residual[i])) ** 2 / (rejected * float(residual[i]))
               for i in range(5) if i != draft)
    assert stat < CHI2_999[3]


# ---- flags --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["generate", "serve"])
def test_bad_ngram_sizes_exit_2_naming_the_problem(command, capsys):
    from neoxserve.cli import main

    argv = [command, *(["x"] if command == "generate" else []), "--ngram-min", "5", "--ngram-max", "3"]
    assert main(argv) == 2
    assert "ngram_min (5) must be <= ngram_max (3)" in capsys.readouterr().err


def test_the_flags_reach_the_engine_config():
    from neoxserve.cli import build_parser
    from neoxserve.commands.engine_config import engine_config
    from neoxserve.commands.speculative_flags import SPECULATIVE_FLAGS
    from neoxserve.config import Settings

    args = build_parser().parse_args(["generate", "x", "--speculative-method", "ngram",
                                      "--num-speculative-tokens", "6", "--ngram-min", "1", "--ngram-max", "5"])
    config = engine_config(Settings.load(None, **{k: getattr(args, k) for k in SPECULATIVE_FLAGS}))
    assert (config.speculative_method, config.num_speculative_tokens, config.ngram_min, config.ngram_max) == \
        ("ngram", 6, 1, 5)
    assert engine_config(Settings()).speculative_method == "none"


# ---- backing off after rejected drafts -------------------------------------------------------------------------

def test_a_rejected_draft_backs_off_doubling_and_an_accepted_token_resets():
    from neoxserve.engine.worker.sequence import Sequence
    from neoxserve.engine.worker.speculative import MAX_DRAFT_BACKOFF, after_verification, wants_draft

    seq = Sequence("r", [1, 2, 3], GREEDY)
    skipped = []
    for _ in range(7):          # seven rejected drafts in a row: skips of 1, 2, 4, 8, 16, 16, 16 steps
        assert wants_draft(seq)
        after_verification(seq, 0)
        n = 0
        while not wants_draft(seq):
            n += 1
        skipped.append(n)
        seq.draft_wait = 0
    assert skipped == [1, 2, 4, 8, 16, 16, 16] and MAX_DRAFT_BACKOFF == 16
    after_verification(seq, 2)
    assert (seq.draft_backoff, seq.draft_wait) == (0, 0) and wants_draft(seq)
    after_verification(seq, 0)
    assert seq.draft_wait == 1    # the back-off starts over


def test_drafts_that_keep_failing_are_proposed_less_and_output_stays_the_same(h, demo_loaded):
    """Seeded sampling at temperature 1 after distinct tokens rejects most drafts: the engine stops verifying
    on most steps, and the tokens are those of speculation off."""
    params = SamplingParams(seed=3, temperature=1.0, top_p=0.95, max_new_tokens=80, ignore_eos=True)
    requests = [("r", [(37 * j) % 250 + 5 for j in range(30)], params)]
    off, _ = _run(h, demo_loaded, "none", requests)
    on, stats = _run(h, demo_loaded, "ngram", requests, ngram_min=1)
    _same(h, off, on)
    verify_steps = stats["spec_verify_steps_total"]
    assert verify_steps > 0 and stats["spec_accepted_tokens_total"] < stats["spec_proposed_tokens_total"]
    assert verify_steps < 80 // 2, stats      # without back-off, ngram_min=1 proposes on nearly every step
