"""How the engine sizes its KV cache, and which token ids it may sample."""
from __future__ import annotations

from neoxserve.engine.worker import kv_cache
from neoxserve.engine.sampling_params import SamplingParams


def test_explicit_kv_budget_is_used_as_given(h, make_engine):
    engine = make_engine(kv_cache_memory_mb=3)
    per_block = engine.runner.kv_caches[0][0][0].numel() * engine.runner.kv_caches[0][0].element_size() * 2 \
        * len(engine.runner.kv_caches)
    assert engine.block_manager.num_blocks == 3 * 2**20 // per_block


def test_auto_kv_budget_holds_max_num_seqs_contexts_when_memory_allows(h, make_engine, monkeypatch):
    monkeypatch.setattr(kv_cache, "available_memory", lambda device: 2**40)
    engine = make_engine(kv_cache_memory_mb=0, max_num_seqs=2)
    assert engine.block_manager.num_blocks * engine.block_size == 2 * engine.max_context


def test_auto_kv_budget_takes_at_most_half_the_free_memory(h, make_engine, monkeypatch):
    caches = make_engine(kv_cache_memory_mb=1).runner.kv_caches
    per_block = sum(t[0].numel() * t.element_size() for pair in caches for t in pair)
    monkeypatch.setattr(kv_cache, "available_memory", lambda device: 10 * per_block)
    engine = make_engine(kv_cache_memory_mb=0, max_num_seqs=32)
    assert engine.block_manager.num_blocks == 5


def test_padded_embedding_rows_are_never_sampled(h, make_engine):
    engine = make_engine()
    tokenizer_ids = engine.tokenizer.vocab_size
    assert engine.loaded.config.vocab_size > tokenizer_ids, "the demo model's embedding should be padded"
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=64, ignore_eos=True, seed=3)
    for i in range(8):
        engine.add_request(f"r{i}", [5, 6, 7, i + 10], params)
    tokens = [t for deltas in h.run_all(engine).values() for t in h.tokens_of(deltas)]
    assert len(tokens) == 8 * 64
    assert max(tokens) < tokenizer_ids
