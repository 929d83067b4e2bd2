"""n samples of one prompt in the in-process engine: the prompt's full blocks computed once and shared, sample i
seeded with seed + i, admitted all together or refused, aborted together."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest

from neoxserve.engine.errors import EngineOverloaded, RequestRejected
from neoxserve.engine.sampling_params import SamplingParams, sample_params

BLOCK = 8


def _prompt(n: int, salt: int = 0) -> list[int]:
    return [(29 * j + 5 * salt) % 880 + 30 for j in range(n)]


def _counting(engine) -> Counter:
    """Wrap the runner: tokens computed per (request id, sample index)."""
    computed: Counter = Counter()
    run = engine.runner.run

    def wrapped(batch):
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            computed[seq.request_id, seq.index] += n
        return run(batch)

    engine.runner.run = wrapped
    return computed


def _by_index(deltas) -> dict[int, list]:
    out: dict[int, list] = {}
    for d in deltas:
        out.setdefault(d.index, []).append(d)
    return out


def test_samples_compute_the_prompts_full_blocks_once_and_share_them(h, make_engine):
    engine = make_engine(kv_block_size=BLOCK)
    computed = _counting(engine)
    prompt = _prompt(45)                       # 5 full blocks + 5 tokens
    params = SamplingParams(seed=7, temperature=1.0, max_new_tokens=6, ignore_eos=True, n=3)
    engine.add_request("r", prompt, params)
    shared: list[int] = []
    out: list = []
    while engine.has_unfinished():
        out += engine.step()
        seqs = [engine.sequence("r", i) for i in range(3)]
        if all(s is not None and s.num_output_tokens > 0 for s in seqs):
            tables = [s.block_table[:5] for s in seqs]
            if not shared:
                assert tables[0] == tables[1] == tables[2]
                shared = tables[0]
                refs = [engine.block_manager.blocks[b].ref_count for b in shared]
                assert refs == [3] * 5
    assert shared, "the three samples never ran side by side"
    assert engine.stats()["kv_blocks_used"] == 0

    assert sorted(d.index for d in out if d.finished) == [0, 1, 2]
    # sample 0 computed the whole prompt; the others only its last, partial block
    assert computed["r", 1] == computed["r", 2] == computed["r", 0] - 40
    assert engine.stats()["prefix_cache_hits_total"] == 2 * 40


def test_every_sample_streams_its_own_tokens_with_its_index_and_usage(h, make_engine):
    engine = make_engine(kv_block_size=BLOCK)
    prompt = _prompt(21, 1)
    engine.add_request("r", prompt, SamplingParams(seed=11, temperature=1.0, max_new_tokens=9, ignore_eos=True,
                                                   n=4))
    samples = _by_index(h.run_all(engine)["r"])
    assert sorted(samples) == [0, 1, 2, 3]
    for deltas in samples.values():
        assert [d.finished for d in deltas] == [False] * 8 + [True]
        assert deltas[-1].finish_reason == "length"
        assert [d.completion_tokens for d in deltas] == list(range(1, 10))
        assert all(d.prompt_tokens == len(prompt) for d in deltas)
    assert engine.stats()["prompt_tokens_total"] == len(prompt)       # the prompt counts once
    assert engine.stats()["generation_tokens_total"] == 4 * 9


def test_sample_i_draws_as_a_single_request_seeded_with_seed_plus_i(h, make_engine):
    prompt = _prompt(30, 2)
    params = SamplingParams(seed=100, temperature=1.0, top_p=0.95, presence_penalty=0.5, frequency_penalty=0.3,
                            max_new_tokens=12, ignore_eos=True)
    engine = make_engine(kv_block_size=BLOCK)
    engine.add_request("n", prompt, replace(params, n=3))
    samples = {i: h.tokens_of(d) for i, d in _by_index(h.run_all(engine)["n"]).items()}

    for i in range(3):
        single = make_engine(kv_block_size=BLOCK)
        single.add_request("one", prompt, replace(params, seed=100 + i))
        assert samples[i] == h.tokens_of(h.run_all(single)["one"]), i
    assert len({tuple(t) for t in samples.values()}) == 3, "three seeds drew the same tokens"


def test_unseeded_samples_are_independent_draws(h, make_engine):
    engine = make_engine(kv_block_size=BLOCK)
    engine.add_request("r", _prompt(12, 3), SamplingParams(temperature=1.0, max_new_tokens=30, ignore_eos=True,
                                                           n=3))
    samples = [tuple(h.tokens_of(d)) for d in _by_index(h.run_all(engine)["r"]).values()]
    assert len(samples) == 3 and len(set(samples)) == 3


def test_sample_params_seed_each_sample_and_score_the_prompt_once():
    params = SamplingParams(seed=5, n=3, logprobs=2, prompt_logprobs=1)
    assert sample_params(SamplingParams(seed=5), 0) == SamplingParams(seed=5)
    got = [sample_params(params, i) for i in range(3)]
    assert [p.seed for p in got] == [5, 6, 7]
    assert [p.n for p in got] == [1, 1, 1]
    assert [p.logprobs for p in got] == [2, 2, 2]
    assert [p.prompt_logprobs for p in got] == [1, None, None]
    assert sample_params(SamplingParams(n=2), 1).seed is None


def test_prompt_logprobs_come_once_and_the_other_samples_still_share_the_prompt(h, make_engine):
    engine = make_engine(kv_block_size=BLOCK)
    prompt = _prompt(45, 4)
    engine.add_request("r", prompt, SamplingParams(seed=1, max_new_tokens=4, ignore_eos=True, n=2, logprobs=1,
                                                   prompt_logprobs=2))
    deltas = h.run_all(engine)["r"]
    with_prompt = [(d.index, d.completion_tokens) for d in deltas if d.prompt_logprobs is not None]
    assert with_prompt == [(0, 1)]
    first = next(d for d in deltas if d.prompt_logprobs is not None)
    assert len(first.prompt_logprobs) == len(prompt) and first.prompt_logprobs[0] is None
    assert all(len(d.logprobs) == len(d.token_ids) == 1 for d in deltas)
    assert engine.stats()["prefix_cache_hits_total"] == 40      # sample 1 took sample 0's full blocks


def test_abort_ends_every_sample_and_frees_every_block(h, make_engine):
    engine = make_engine(kv_block_size=4, max_num_seqs=2)
    start = engine.block_manager.num_free_blocks
    engine.add_request("r", _prompt(20), SamplingParams(seed=3, max_new_tokens=200, ignore_eos=True, n=3,
                                                        logprobs=0))
    for _ in range(4):
        engine.step()
    assert len(engine.scheduler.running) == 2 and len(engine.scheduler.waiting) == 1   # one sample still waits
    assert engine.abort("r")
    assert not engine.abort("r")
    assert engine.block_manager.num_free_blocks == start
    final = engine.step()
    assert sorted((d.index, d.finish_reason, d.finished, d.logprobs) for d in final) == [
        (i, "abort", True, []) for i in range(3)]
    assert not engine.has_unfinished()
    assert engine.stats()["requests_finished_total"]["abort"] == 3
    engine.add_request("r", _prompt(5), SamplingParams(max_new_tokens=2, n=2))   # the id is free again
    assert len(h.run_all(engine)["r"]) == 4


def test_admission_takes_all_samples_or_none(make_engine):
    engine = make_engine(max_num_seqs=2, max_waiting_requests=2)
    engine.add_request("busy", _prompt(6), SamplingParams(max_new_tokens=50, n=2))   # takes both running slots
    with pytest.raises(EngineOverloaded, match="max_waiting_requests"):
        engine.add_request("three", _prompt(6, 1), SamplingParams(max_new_tokens=5, n=3))
    assert engine.sequence("three") is None
    assert len(engine.scheduler.waiting) == 2 and engine.scheduler.num_waiting_tokens == 12
    engine.add_request("two", _prompt(6, 1), SamplingParams(max_new_tokens=5, n=2))
    assert len(engine.scheduler.waiting) == 4

    engine = make_engine(max_queued_tokens=40)
    engine.add_request("a", _prompt(15), SamplingParams(max_new_tokens=5))
    with pytest.raises(EngineOverloaded, match="max_queued_tokens"):
        engine.add_request("b", _prompt(10, 1), SamplingParams(max_new_tokens=5, n=3))   # 15 + 3 * 10 > 40
    engine.add_request("b", _prompt(10, 1), SamplingParams(max_new_tokens=5, n=2))


def test_more_samples_than_the_engine_can_ever_queue_are_rejected(make_engine):
    engine = make_engine(max_num_seqs=2, max_waiting_requests=3)
    message = ("n=6 samples can never be queued at once: the engine runs 2 sequences (max_num_seqs) and queues 3 "
               "more (max_waiting_requests)")
    with pytest.raises(RequestRejected, match=f"^{re.escape(message)}$"):
        engine.add_request("r", _prompt(5), SamplingParams(n=6))
    assert not engine.has_unfinished()
    engine.add_request("r", _prompt(5), SamplingParams(n=5))


def test_a_failed_step_fails_every_sample_it_ran(h, make_engine):
    engine = make_engine()
    h.fail_step(engine, 2, "simulated out of memory")
    engine.add_request("x", _prompt(10), SamplingParams(seed=1, max_new_tokens=8, ignore_eos=True, n=2))
    last = {d.index: d for d in h.run_all(engine)["x"] if d.finished}
    assert sorted(last) == [0, 1]
    assert all(d.finish_reason == "error" and "simulated out of memory" in d.error for d in last.values())
    assert engine.block_manager.num_used_blocks == 0
