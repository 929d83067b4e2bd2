"""The one-budget scheduler, without a model: chunked prefill, decode-first order, preemption."""
from __future__ import annotations

from neoxserve.engine.worker.block_manager import BlockManager
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker.scheduler import Scheduler
from neoxserve.engine.worker.sequence import SequenceStatus, Sequence


def _run_step(sched: Scheduler, next_token: int = 1):
    """Pretend the model ran: computed tokens catch up, and sequences whose prompt is done get a token."""
    batch = sched.schedule()
    for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
        seq.num_computed_tokens += n
        sched.bm.register_full_blocks(seq)
        if seq.num_computed_tokens == seq.num_tokens:
            seq.token_ids.append(next_token)
    return batch


def test_long_prompt_is_chunked_and_decodes_share_the_budget():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    a = Sequence("a", list(range(3)), SamplingParams())
    sched.add(a)
    _run_step(sched)                              # a prefills in one go and gets its first token
    b = Sequence("b", list(range(100, 125)), SamplingParams())
    sched.add(b)
    batch = _run_step(sched)
    assert [s.request_id for s in batch.seqs] == ["a", "b"]
    assert batch.num_new_tokens == [1, 9]         # a decodes, b gets the rest of the budget
    batch = _run_step(sched)
    assert batch.num_new_tokens == [1, 9]
    batch = _run_step(sched)
    assert batch.num_new_tokens == [1, 7]         # b's last chunk: 25 = 9 + 9 + 7
    assert b.num_output_tokens == 1


def test_max_num_seqs_caps_running():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=2, max_num_batched_tokens=100)
    for i in range(3):
        sched.add(Sequence(str(i), [1, 2, 3], SamplingParams()))
    batch = _run_step(sched)
    assert len(batch.seqs) == 2 and len(sched.waiting) == 1


def test_out_of_blocks_preempts_the_newest_and_it_recomputes():
    bm = BlockManager(num_blocks=4, block_size=4)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64)
    a = Sequence("a", list(range(7)), SamplingParams())
    b = Sequence("b", list(range(50, 57)), SamplingParams())
    sched.add(a)
    sched.add(b)
    _run_step(sched)                              # both hold 2 blocks (7 prompt tokens each): full pool
    assert bm.num_free_blocks == 0
    _run_step(sched)                              # token 8 still fits in each one's second block
    batch = _run_step(sched)                      # a needs a third block: b (newest) is preempted
    assert [s.request_id for s in batch.preempted] == ["b"]
    assert b.status is SequenceStatus.WAITING and b.num_computed_tokens == 0 and b.block_table == []
    assert sched.waiting[0] is b
    # once a is done, b comes back and recomputes prompt + its output
    sched.remove(a)
    batch = _run_step(sched)
    assert batch.seqs == [b]
    assert b.num_output_tokens == 3
