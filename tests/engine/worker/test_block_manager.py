"""Block pool, ref counts and the prefix cache, without a model."""
from __future__ import annotations

from neoxserve.engine.worker.block_manager import BlockManager
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker.sequence import Sequence


def _seq(tokens, rid="r"):
    return Sequence(rid, list(tokens), SamplingParams())


def _compute_all(bm: BlockManager, seq: Sequence) -> None:
    bm.allocate(seq, bm.blocks_needed(seq, seq.num_uncomputed_tokens))
    seq.num_computed_tokens = seq.num_tokens
    bm.register_full_blocks(seq)


def test_allocate_and_free_return_every_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = _seq(range(10))
    assert bm.blocks_needed(seq, 10) == 3
    bm.allocate(seq, 3)
    assert bm.num_free_blocks == 5 and len(seq.block_table) == 3
    bm.free_sequence(seq)
    assert bm.num_free_blocks == 8 and seq.block_table == []


def test_prefix_hit_shares_full_blocks_but_never_the_last_token():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = _seq(range(12), "a")
    _compute_all(bm, a)
    # same 12 tokens: only 2 blocks may be reused, the block holding the last token is computed again
    b = _seq(range(12), "b")
    hits = bm.lookup_prefix(b)
    assert hits == a.block_table[:2]
    bm.take_prefix(b, hits)
    assert b.num_computed_tokens == 8
    assert bm.blocks[hits[0]].ref_count == 2
    # a different continuation after one shared block
    c = _seq([0, 1, 2, 3, 99, 98, 97, 96, 5], "c")
    assert bm.lookup_prefix(c) == a.block_table[:1]


def test_freed_cached_blocks_stay_hittable_until_evicted():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = _seq(range(9), "a")
    _compute_all(bm, a)
    table = list(a.block_table)
    bm.free_sequence(a)
    assert bm.num_free_blocks == 4
    b = _seq(range(9), "b")
    assert bm.lookup_prefix(b) == table[:2]
    # using the whole pool for something else evicts them
    other = _seq(range(100, 116), "o")
    bm.allocate(other, 4)
    assert bm.lookup_prefix(b) == []
    assert bm.cached == {}


def test_uncached_free_blocks_are_reused_before_cached_ones():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = _seq(range(8), "a")            # two full blocks, both cached once computed
    _compute_all(bm, a)
    a_table = list(a.block_table)
    bm.free_sequence(a)
    cached_ids = set(bm.cached.values())
    other = _seq([7] * 5, "o")
    bm.allocate(other, 2)
    assert set(other.block_table).isdisjoint(cached_ids)
    assert len(bm.cached) == 2
    bm.allocate(other, 1)              # then the tail of the freed chain goes first, the shared head last
    assert other.block_table[-1] == a_table[1] and bm.lookup_prefix(_seq(range(9), "b")) == [a_table[0]]


def test_disabled_prefix_caching_never_hits():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = _seq(range(12), "a")
    _compute_all(bm, a)
    assert bm.lookup_prefix(_seq(range(12), "b")) == []
