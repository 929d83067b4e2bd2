"""Paged KV cache bookkeeping: a pool of fixed-size blocks, per-sequence block tables, and the prefix cache.

Prefix caching: once a block is full and its K/V written, it is keyed by a hash chain over its tokens
(hash(parent block's hash, its token ids)), so equal prefixes map to equal keys whatever follows them. A block is
shared by ref count; when its last user lets go it stays in the cache but joins the free pool, and is evicted
(least recently freed first) only when the pool needs it for something else. Blocks without a hash are reused
before any cached block.
"""
from __future__ import annotations

from collections import OrderedDict

from neoxserve.engine.worker.sequence import Sequence
from neoxserve.model.arith import cdiv


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] | None = None


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # free blocks in reuse order: the front is taken first (uncached ones, then least recently freed)
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}   # block hash -> block id

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free)

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = seq.num_computed_tokens + num_new_tokens
        return max(0, cdiv(total, self.block_size) - len(seq.block_table))

    # ---- prefix cache -----------------------------------------------------------------------------------

    def block_hash(self, seq: Sequence, i: int) -> int:
        """Hash of the sequence's i-th full block (computed once per sequence, kept on it)."""
        hashes = seq.block_hashes
        bs = self.block_size
        while len(hashes) <= i:
            j = len(hashes)
            parent = hashes[j - 1] if j else 0
            hashes.append(hash((parent, *seq.token_ids[j * bs:(j + 1) * bs])))
        return hashes[i]

    def lookup_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks that hold a prefix of the sequence. Never the block of its last token, which must be
        computed to get logits, and nothing for a sequence that needs the logits of every prompt position
        (prompt logprobs). No side effects beyond remembering hashes on the sequence."""
        if not self.enable_prefix_caching or seq.scores_prompt:
            return []
        bs = self.block_size
        hits: list[int] = []
        for i in range((seq.num_tokens - 1) // bs):
            bid = self.cached.get(self.block_hash(seq, i))
            # the token check guards against hash collisions
            if bid is None or self.blocks[bid].token_ids != tuple(seq.token_ids[i * bs:(i + 1) * bs]):
                break
            hits.append(bid)
        return hits

    def num_free_after_taking(self, block_ids: list[int]) -> int:
        return len(self.free) - sum(1 for b in block_ids if self.blocks[b].ref_count == 0)

    def take_prefix(self, seq: Sequence, block_ids: list[int]) -> None:
        assert not seq.block_table and seq.num_computed_tokens == 0
        for bid in block_ids:
            block = self.blocks[bid]
            if block.ref_count == 0:
                del self.free[bid]
            block.ref_count += 1
        seq.block_table = list(block_ids)
        seq.num_computed_tokens = len(block_ids) * self.block_size
        seq.num_hashed_blocks = len(block_ids)

    def register_full_blocks(self, seq: Sequence) -> None:
        """After a step wrote K/V: publish the sequence's newly completed blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        bs = self.block_size
        for i in range(seq.num_hashed_blocks, num_full):
            h = self.block_hash(seq, i)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and h not in self.cached:
                block.hash = h
                block.token_ids = tuple(seq.token_ids[i * bs:(i + 1) * bs])
                self.cached[h] = block.block_id
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, num_full)

    # ---- allocation -------------------------------------------------------------------------------------

    def allocate(self, seq: Sequence, num_blocks: int) -> None:
        if num_blocks > len(self.free):
            raise RuntimeError(f"out of KV blocks: need {num_blocks}, {len(self.free)} free")
        table = seq.block_table
        for _ in range(num_blocks):
            bid, _ = self.free.popitem(last=False)
            block = self.blocks[bid]
            if block.hash is not None:      # evict it from the prefix cache
                if self.cached.get(block.hash) == bid:
                    del self.cached[block.hash]
                block.hash = None
                block.token_ids = None
            block.ref_count = 1
            table.append(bid)

    def release_tail(self, seq: Sequence) -> None:
        """Let go of the blocks past the sequence's tokens (speculative decoding: those of rejected draft tokens,
        allocated this step, never shared nor cached)."""
        keep = cdiv(seq.num_tokens, self.block_size)
        self._release(seq.block_table[keep:])
        del seq.block_table[keep:]

    def free_sequence(self, seq: Sequence) -> None:
        """Let go of all the sequence's blocks (finish, abort, preemption)."""
        self._release(seq.block_table)
        seq.block_table = []
        seq.num_hashed_blocks = 0

    def _release(self, table: list[int]) -> None:
        """One reference fewer to each block of `table`; a block no one holds is free again."""
        # the tail of a chain goes nearest the front so it is evicted before the shared head
        for bid in reversed(table):
            block = self.blocks[bid]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[bid] = None
                if block.hash is None:
                    self.free.move_to_end(bid, last=False)
