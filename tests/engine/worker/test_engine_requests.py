"""Request lifecycle in the in-process engine: prefix cache, abort, admission, failures, stops, deadlines."""
from __future__ import annotations

import time

import pytest

from neoxserve.engine.errors import EngineOverloaded, RequestRejected
from neoxserve.engine.outputs import Failure
from neoxserve.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(greedy=True, max_new_tokens=8, ignore_eos=True)


def _prompt(n: int, salt: int = 0) -> list[int]:
    return [(13 * j + 7 * salt) % 900 + 50 for j in range(n)]


def _counting(engine):
    """Wrap the runner: record the number of tokens computed per request."""
    computed: dict[str, int] = {}
    run = engine.runner.run

    def wrapped(batch):
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            computed[seq.request_id] = computed.get(seq.request_id, 0) + n
        return run(batch)

    engine.runner.run = wrapped
    return computed


def test_repeated_prefix_is_computed_once(h, make_engine):
    engine = make_engine(kv_block_size=8)
    computed = _counting(engine)
    system = _prompt(45)
    engine.add_request("first", [*system, 60, 61, 62], GREEDY)
    first = h.run_all(engine)["first"]
    engine.add_request("second", [*system, 60, 61, 62], GREEDY)
    second = engine.step()
    cached = engine.sequence("second").num_cached_prompt_tokens
    second += h.run_all(engine)["second"]

    assert cached == 40          # 48 prompt tokens: every full block but the one holding the last token
    assert computed["second"] == computed["first"] - cached
    assert h.tokens_of(second) == h.tokens_of(first)
    assert h.text_of(second) == h.text_of(first)
    stats = engine.stats()
    assert stats["prefix_cache_hits_total"] == cached
    assert 0 < stats["prefix_cache_hit_rate"] < 1


def test_shared_system_prompt_different_questions(h, make_engine):
    engine = make_engine(kv_block_size=8, enable_prefix_caching=True)
    plain = make_engine(kv_block_size=8, enable_prefix_caching=False)
    system = _prompt(40, salt=3)
    computed = _counting(engine)
    for e in (engine, plain):         # all at once: the later ones wait a step for the shared blocks
        for i in range(3):
            e.add_request(f"q{i}", system + _prompt(5 + i, salt=10 + i), GREEDY)
    got, want = h.run_all(engine), h.run_all(plain)
    for i in range(3):
        assert h.tokens_of(got[f"q{i}"]) == h.tokens_of(want[f"q{i}"])
    assert engine.stats()["prefix_cache_hits_total"] == 2 * 40       # 5 shared full blocks, for q1 and q2
    assert plain.stats()["prefix_cache_hits_total"] == 0
    assert computed["q1"] == computed["q0"] - 40 + 1 and computed["q2"] == computed["q0"] - 40 + 2


def test_abort_mid_stream_frees_every_block(h, make_engine):
    engine = make_engine(kv_block_size=4, max_num_batched_tokens=16)
    start = engine.block_manager.num_free_blocks
    long = SamplingParams(greedy=True, max_new_tokens=200, ignore_eos=True)
    engine.add_request("a", _prompt(30), long)
    engine.add_request("b", _prompt(50, 1), long)        # still prefilling in chunks when aborted below
    engine.add_request("c", _prompt(5, 2), long)         # never gets to run: waiting
    for _ in range(4):
        engine.step()
    assert engine.block_manager.num_free_blocks < start
    assert engine.abort("a") and engine.abort("b") and engine.abort("c")
    assert not engine.abort("a")
    assert engine.block_manager.num_free_blocks == start
    final = engine.step()
    assert sorted((d.request_id, d.finish_reason) for d in final) == [("a", "abort"), ("b", "abort"), ("c", "abort")]
    assert all(d.finished for d in final)
    assert not engine.has_unfinished()
    assert engine.stats()["kv_blocks_used"] == 0


def test_full_queue_refuses_at_once(make_engine):
    engine = make_engine(max_num_seqs=1, max_waiting_requests=1)
    engine.add_request("runs", _prompt(5), GREEDY)     # takes the free running slot
    engine.add_request("waits", _prompt(5), GREEDY)
    with pytest.raises(EngineOverloaded, match="max_waiting_requests"):
        engine.add_request("refused", _prompt(5), GREEDY)

    engine = make_engine(max_queued_tokens=20)
    engine.add_request("a", _prompt(15), GREEDY)
    with pytest.raises(EngineOverloaded, match="max_queued_tokens"):
        engine.add_request("b", _prompt(15), GREEDY)
    engine.step()                                       # "a" starts: its tokens no longer queue
    engine.add_request("b", _prompt(15), GREEDY)


def test_impossible_requests_are_rejected_with_the_reason(make_engine, demo_loaded):
    engine = make_engine(kv_cache_memory_mb=40)      # room for a whole context
    ctx = demo_loaded.config.max_position_embeddings
    with pytest.raises(RequestRejected, match=f"exceeds the model's context of {ctx} tokens"):
        engine.add_request("long", _prompt(ctx - 10), SamplingParams(max_new_tokens=11))
    with pytest.raises(RequestRejected, match="empty"):
        engine.add_request("empty", [], GREEDY)
    with pytest.raises(RequestRejected, match="token ids"):
        engine.add_request("bad", [demo_loaded.config.vocab_size], GREEDY)
    small = make_engine(kv_block_size=16, kv_cache_memory_mb=1)   # 8 blocks of 16 tokens
    with pytest.raises(RequestRejected, match="KV blocks"):
        small.add_request("big", _prompt(100), SamplingParams(max_new_tokens=100))
    engine.add_request("fits", _prompt(ctx - 10), SamplingParams(max_new_tokens=10))
    with pytest.raises(RequestRejected, match="in use"):
        engine.add_request("fits", _prompt(3), GREEDY)


def test_batch_exception_fails_its_requests_and_the_engine_carries_on(h, make_engine):
    engine = make_engine()
    h.fail_step(engine, 2, "simulated out of memory")
    engine.add_request("x", _prompt(10), GREEDY)
    engine.add_request("y", _prompt(12, 1), GREEDY)
    out = h.run_all(engine)
    for rid in ("x", "y"):
        assert out[rid][-1].finish_reason == "error"
        assert "simulated out of memory" in out[rid][-1].error
    assert engine.block_manager.num_used_blocks == 0
    engine.add_request("z", _prompt(10), GREEDY)
    z = h.run_all(engine)["z"]
    assert z[-1].finish_reason == "length" and len(h.tokens_of(z)) == 8
    assert engine.stats()["requests_finished_total"]["error"] == 2


def test_stop_token_and_stop_string_end_generation(h, make_engine):
    engine = make_engine()
    prompt = _prompt(12)
    engine.add_request("free", prompt, SamplingParams(greedy=True, max_new_tokens=16, ignore_eos=True))
    free = h.run_all(engine)["free"]
    tokens, text = h.tokens_of(free), h.text_of(free)

    stop_id = tokens[4]
    first = tokens.index(stop_id)
    engine.add_request("tok", prompt, SamplingParams(greedy=True, max_new_tokens=16, ignore_eos=True,
                                                     stop_token_ids=(stop_id,)))
    out = h.run_all(engine)["tok"]
    assert h.tokens_of(out) == tokens[:first + 1]
    assert out[-1].finish_reason == "stop" and out[-1].completion_tokens == first + 1

    stop = text.strip()[len(text.strip()) // 2:][:3]
    assert stop, "the demo model produced no text to stop on"
    engine.add_request("str", prompt, SamplingParams(greedy=True, max_new_tokens=16, ignore_eos=True,
                                                     stop=(stop,)))
    out = h.run_all(engine)["str"]
    assert h.text_of(out) == text[:text.index(stop)]
    assert out[-1].finish_reason == "stop"


def test_eos_ends_generation_unless_ignored(h, make_engine, demo_loaded):
    eos = demo_loaded.tokenizer.eos_token_id
    engine = make_engine()
    prompt = _prompt(12)
    engine.add_request("free", prompt, SamplingParams(greedy=True, max_new_tokens=6, ignore_eos=True))
    tokens = h.tokens_of(h.run_all(engine)["free"])
    # the request-level stop ids stand in for eos here (the demo model rarely samples token 0)
    engine.add_request("eos", prompt, SamplingParams(greedy=True, max_new_tokens=6, stop_token_ids=(tokens[1],)))
    assert h.run_all(engine)["eos"][-1].completion_tokens == tokens.index(tokens[1]) + 1
    seq_ids = engine._tokenizer_stop_ids
    assert eos in seq_ids


def test_waiting_past_the_deadline_fails_with_queue_timeout(h, make_engine):
    engine = make_engine(max_num_seqs=1, queue_timeout_seconds=0.2)
    engine.add_request("busy", _prompt(8), SamplingParams(greedy=True, max_new_tokens=1000, ignore_eos=True))
    engine.add_request("late", _prompt(8, 1), GREEDY)
    deadline = time.monotonic() + 30
    late = None
    while late is None and time.monotonic() < deadline:
        for d in engine.step():
            if d.request_id == "late":
                late = d
    assert late is not None and (late.finish_reason, late.failure) == ("error", Failure.QUEUE_TIMEOUT)
    assert late.error.startswith("waited ")
    assert late.completion_tokens == 0
    engine.abort("busy")
    engine.step()
    assert not engine.has_unfinished()


def test_model_demo_setting_loads_the_demo_model(h, tmp_path):
    from neoxserve.engine.worker.core import LLMEngine

    engine = LLMEngine.from_config(h.config(model="demo", data_dir=tmp_path, kv_cache_memory_mb=4))
    assert engine.loaded.path.is_relative_to(tmp_path)
    engine.add_request("d", _prompt(5), GREEDY)
    assert len(h.tokens_of(h.run_all(engine)["d"])) == 8


def test_a_step_that_can_run_nothing_is_an_error_not_a_spin(make_engine, monkeypatch):
    """Admission guarantees every queued request can run; if the scheduler still runs nothing, that is a bug and
    step() says so instead of letting the engine loop spin."""
    from neoxserve.engine.worker.scheduler import ScheduledBatch

    engine = make_engine()
    engine.add_request("stuck", _prompt(8), GREEDY)
    monkeypatch.setattr(engine.scheduler, "schedule", ScheduledBatch)
    with pytest.raises(RuntimeError, match=r"^the scheduler ran nothing: 0 running, 1 waiting, \d+ free KV blocks$"):
        engine.step()
