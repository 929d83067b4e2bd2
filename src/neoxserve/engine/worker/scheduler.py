"""Which sequences run in the next step, and with how many tokens each.

There is no prefill or decode phase. Each step has one token budget; every running sequence asks for the tokens
it has not computed yet (`num_tokens - num_computed_tokens`: 1 for a decode, the rest of the prompt for a
prefill) and gets as many as the budget still allows, in FCFS order, running sequences first. Long prompts
therefore prefill in chunks alongside ongoing decodes. When KV blocks run out, the newest running sequence is
preempted by recompute: its blocks are freed and it goes back to the front of the waiting queue (its full
blocks usually stay in the prefix cache, so the recompute is cheap).

A waiting sequence whose next uncached prompt block is being computed by a running sequence (the same system
prompt arriving twice at once) is not admitted yet: a step later that block is in the prefix cache and the
prompt is computed once, not twice.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from neoxserve.engine.worker.block_manager import BlockManager
from neoxserve.engine.worker.sequence import Sequence, SequenceStatus
from neoxserve.model.arith import cdiv


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)   # per sequence, this step
    preempted: list[Sequence] = field(default_factory=list)
    # speculative decoding: of each sequence's new tokens, how many are the first of its draft_token_ids (they
    # come after its token_ids); empty = none anywhere
    num_draft_tokens: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.seqs)

    def drafts(self, i: int) -> int:
        return self.num_draft_tokens[i] if self.num_draft_tokens else 0


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_waiting_tokens = 0        # prompt tokens of waiting sequences (for the bounded queue)
        # prefix cache counters, over first admissions (in prompt tokens)
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)
        self.num_waiting_tokens += seq.num_prompt_tokens

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out (finished or aborted) and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
            self.num_waiting_tokens -= seq.num_prompt_tokens
        self.bm.free_sequence(seq)
        seq.status = SequenceStatus.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.bm.free_sequence(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        self.num_waiting_tokens += seq.num_prompt_tokens

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        bm = self.bm
        running = self.running

        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            need = bm.blocks_needed(seq, n)
            drafts = 0
            if seq.draft_token_ids and seq.num_uncomputed_tokens == 1:
                # a draft to verify: as much of it as the budget and the free blocks take, never preempting for it
                drafts = min(len(seq.draft_token_ids), budget - 1)
                while drafts and bm.blocks_needed(seq, 1 + drafts) > bm.num_free_blocks:
                    drafts -= 1
                n += drafts
                need = bm.blocks_needed(seq, n)
            while need > bm.num_free_blocks and len(running) > i:
                victim = running.pop()
                self._preempt(victim)
                batch.preempted.append(victim)
            if seq.status is not SequenceStatus.RUNNING:
                break                      # it preempted itself: nothing more fits
            bm.allocate(seq, need)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            batch.num_draft_tokens.append(drafts)
            budget -= n
            i += 1

        # admit waiting sequences, but not in a step that had to preempt (that would just thrash)
        now = time.monotonic()
        inflight: set[int] | None = None
        while self.waiting and budget > 0 and len(running) < self.max_num_seqs and not batch.preempted:
            seq = self.waiting[0]
            hits = bm.lookup_prefix(seq)
            if bm.enable_prefix_caching and not seq.scores_prompt:   # (which takes nothing from the cache)
                if inflight is None:
                    inflight = self._inflight_block_hashes()
                if len(hits) < (seq.num_tokens - 1) // bm.block_size and bm.block_hash(seq, len(hits)) in inflight:
                    break                  # FCFS: the ones behind it wait too
            n = min(seq.num_tokens - len(hits) * bm.block_size, budget)
            need = cdiv(len(hits) * bm.block_size + n, bm.block_size) - len(hits)
            if need > bm.num_free_after_taking(hits):
                break
            self.waiting.popleft()
            self.num_waiting_tokens -= seq.num_prompt_tokens
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = now
                seq.num_cached_prompt_tokens = len(hits) * bm.block_size
                self.prefix_queries += seq.num_prompt_tokens
                self.prefix_hits += seq.num_cached_prompt_tokens
            bm.take_prefix(seq, hits)
            bm.allocate(seq, need)
            seq.status = SequenceStatus.RUNNING
            running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            batch.num_draft_tokens.append(0)
            budget -= n
            if inflight is not None:
                inflight.update(self._uncomputed_block_hashes(seq))
        return batch

    def _uncomputed_block_hashes(self, seq: Sequence) -> list[int]:
        """Hashes of the sequence's full blocks whose K/V are not computed yet (this step or later)."""
        bs = self.bm.block_size
        return [self.bm.block_hash(seq, i) for i in range(seq.num_computed_tokens // bs, seq.num_tokens // bs)]

    def _inflight_block_hashes(self) -> set[int]:
        inflight: set[int] = set()
        for seq in self.running:
            inflight.update(self._uncomputed_block_hashes(seq))
        return inflight
