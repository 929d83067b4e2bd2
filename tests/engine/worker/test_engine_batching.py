"""Concurrent requests give exactly the tokens each gives alone, however the scheduler slices the work."""
from __future__ import annotations

import pytest

from neoxserve.engine.sampling_params import SamplingParams

PROMPT_LENGTHS = [3, 17, 40, 64, 9, 30]
PARAMS = [
    SamplingParams(greedy=True, max_new_tokens=12, ignore_eos=True),
    SamplingParams(seed=1, temperature=0.8, top_k=20, max_new_tokens=20, ignore_eos=True),
    SamplingParams(greedy=True, max_new_tokens=24, ignore_eos=True, penalty_score=1.3),
    SamplingParams(seed=7, top_p=0.9, max_new_tokens=16, ignore_eos=True),
    SamplingParams(greedy=True, max_new_tokens=8),
    SamplingParams(seed=5, temperature=0.7, max_new_tokens=18, ignore_eos=True),
]


def _requests(vocab: int):
    reqs = []
    for i, (n, params) in enumerate(zip(PROMPT_LENGTHS, PARAMS, strict=True)):
        prompt = [(17 * i + 31 * j + 5) % (vocab - 8) + 2 for j in range(n)]   # deterministic, distinct
        reqs.append((f"r{i}", prompt, params))
    return reqs


_ALONE: dict = {}


def _alone(h, make_engine, loaded, reqs):
    key = id(loaded)
    if key in _ALONE:
        return _ALONE[key]
    out = _ALONE[key] = {}
    for rid, prompt, params in reqs:
        engine = make_engine(loaded, enable_prefix_caching=False)
        engine.add_request(rid, prompt, params)
        out[rid] = h.run_all(engine)[rid]
    return out


SCENARIOS = {
    "whole": dict(),                                                      # everything fits in one step
    "chunked": dict(max_num_batched_tokens=7),                            # chunked prefill beside decodes
    "preempt": dict(kv_block_size=4, kv_cache_memory_mb=1, max_num_batched_tokens=32),   # tiny pool
    "capped": dict(max_num_seqs=2, kv_block_size=8),                      # queueing behind a running cap
}


# (1 MB, the smallest pool, holds the tiny model's whole working set: no preemption to test with it)
@pytest.mark.parametrize("model,scenario", [(m, s) for m in ("demo", "tiny") for s in SCENARIOS
                                            if (m, s) != ("tiny", "preempt")])
def test_concurrent_equals_alone(h, make_engine, demo_loaded, tiny_loaded, model, scenario):
    scenario = SCENARIOS[scenario]
    loaded = demo_loaded if model == "demo" else tiny_loaded
    reqs = _requests(loaded.config.vocab_size)
    expected = _alone(h, make_engine, loaded, reqs)

    engine = make_engine(loaded, **scenario)
    for rid, prompt, params in reqs:
        engine.add_request(rid, prompt, params)
    got = h.run_all(engine)

    for rid, _, _ in reqs:
        assert h.tokens_of(got[rid]) == h.tokens_of(expected[rid]), rid
        assert h.text_of(got[rid]) == h.text_of(expected[rid]), rid
        assert got[rid][-1].finish_reason == expected[rid][-1].finish_reason
    stats = engine.stats()
    if "kv_cache_memory_mb" in scenario:
        assert stats["preemptions_total"] > 0, "the tiny pool should have forced preemption"
    assert stats["kv_blocks_used"] == 0
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_chunked_prefill_runs_prompts_next_to_decodes(h, make_engine):
    engine = make_engine(max_num_batched_tokens=8)
    sizes = []
    engine.runner.run = _recording(engine.runner.run, sizes)
    engine.add_request("short", [5, 6, 7], SamplingParams(greedy=True, max_new_tokens=10, ignore_eos=True))
    engine.step()
    engine.add_request("long", list(range(10, 50)), SamplingParams(greedy=True, max_new_tokens=2, ignore_eos=True))
    h.run_all(engine)
    # after the first step, "short" decodes 1 token per step while "long" prefills 7 tokens a step beside it
    assert sizes[1] == [1, 7]
    assert all(sum(s) <= 8 for s in sizes)


def _recording(run, sizes):
    def wrapped(batch):
        sizes.append(list(batch.num_new_tokens))
        return run(batch)
    return wrapped


def test_runner_metadata_matches_the_reference_builder(make_engine, monkeypatch):
    """On chunked, multi-block batches the runner's metadata and positions agree with AttentionMetadata.build
    from the scheduled lengths and the sequences' own block tables (build's slots: tests/model/test_attention.py)."""
    from neoxserve.model import attention

    engine = make_engine(kv_block_size=4, max_num_batched_tokens=11)
    seen = []
    real_forward = engine.runner.model.forward

    def check(input_ids, positions, meta, kv_caches):
        ref = attention.AttentionMetadata.build(meta.query_lens, meta.seq_lens_list,
                                                [row[:(n + 3) // 4] for row, n in
                                                 zip(meta.block_tables.tolist(), meta.seq_lens_list, strict=True)], 4)
        assert meta.slot_mapping.tolist() == ref.slot_mapping.tolist()
        assert meta.query_start_loc.tolist() == ref.query_start_loc.tolist()
        assert meta.seq_lens.tolist() == ref.seq_lens.tolist()
        assert positions.tolist() == [p for q, n in zip(meta.query_lens, meta.seq_lens_list, strict=True)
                                      for p in range(n - q, n)]
        seen.append(len(meta.query_lens))
        return real_forward(input_ids, positions, meta, kv_caches)

    monkeypatch.setattr(engine.runner.model, "forward", check)
    for i, n in enumerate((3, 9, 14)):
        engine.add_request(str(i), [10 + i + j for j in range(n)],
                           SamplingParams(greedy=True, max_new_tokens=6, ignore_eos=True))
    for _ in range(100):
        if not engine.has_unfinished():
            break
        engine.step()
    assert not engine.has_unfinished() and max(seen) == 3
