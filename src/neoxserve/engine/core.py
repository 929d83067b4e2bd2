"""LLMEngine: the whole engine in-process and synchronous. `add_request`, then call `step()` while
`has_unfinished()`; each step returns the deltas it produced. The engine process runs exactly this in a loop."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from neoxserve.engine.block_manager import BlockManager
from neoxserve.engine.config import EngineConfig
from neoxserve.engine.detokenizer import IncrementalDetokenizer
from neoxserve.engine.errors import EngineOverloaded, RequestRejected
from neoxserve.engine.kv_cache import num_kv_blocks
from neoxserve.engine.outputs import Delta, Failure, FinishReason, TokenLogprob
from neoxserve.engine.protocol import ModelInfo
from neoxserve.engine.runner import ModelRunner, StepResult
from neoxserve.engine.sampling_params import SamplingParams, sample_params
from neoxserve.engine.scheduler import ScheduledBatch, Scheduler
from neoxserve.engine.sequence import Sequence, SequenceStatus
from neoxserve.engine.speculative import SpeculativeConfig, allowed_draft, draft_room, propose_ngram
from neoxserve.engine.stats import EngineStats, StatsSnapshot
from neoxserve.engine.structured import StructuredOutputs
from neoxserve.model.arith import cdiv

if TYPE_CHECKING:
    from neoxserve.model.loader import LoadedModel

log = logging.getLogger(__name__)


def resolve_model_dir(config: EngineConfig) -> Path:
    if config.is_demo:
        from neoxserve.model.demo import ensure_trained_demo_model
        return Path(ensure_trained_demo_model(config.data_dir))
    if config.is_random_demo:
        from neoxserve.model.demo import ensure_demo_model
        return Path(ensure_demo_model(config.data_dir))
    return Path(config.model)


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LLMEngine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.tokenizer = loaded.tokenizer
        param = next(loaded.model.parameters())
        self.model_info = ModelInfo(name=config.model_name, path=str(loaded.path),
                                    max_context=cfg.max_position_embeddings, is_chat=self.tokenizer.is_chat,
                                    device=str(param.device), dtype=loaded.dtype,
                                    kernels=loaded.kernels)
        self.block_size = config.kv_block_size
        self.max_waiting_requests = config.max_waiting_requests
        self.max_queued_tokens = config.max_queued_tokens
        self.queue_timeout = config.queue_timeout_seconds

        num_blocks = num_kv_blocks(cfg, config, loaded.model.cache_dtype().itemsize, param.device)
        self.block_manager = BlockManager(num_blocks, self.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens)
        self.runner = ModelRunner(loaded.model, cfg, num_blocks, self.block_size, self.tokenizer.vocab_size)
        self.runner.warm_up()     # before the engine is ready: the first request is as fast as later ones
        self.requests: dict[str, list[Sequence]] = {}   # request id -> its unfinished samples
        self.pending: list[Delta] = []          # deltas produced outside step() (aborts), sent with the next one
        self.counters = EngineStats()
        self.speculative = SpeculativeConfig(config.speculative_method, config.num_speculative_tokens,
                                             config.ngram_min, config.ngram_max)
        self._tokenizer_stop_ids = frozenset(self.tokenizer.stop_token_ids)   # eos included (model/tokenizer.py)

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        """Load the model and build the engine. Sets torch's thread count first when the config gives one."""
        import torch

        from neoxserve.model.loader import load_model
        from neoxserve.model.quant_format import QuantConfig

        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        loaded = load_model(resolve_model_dir(config), resolve_device(config.device), config.dtype,
                            QuantConfig(config.quantization, config.quantization_group_size), config.kernels)
        return cls(loaded, config)

    @property
    def max_context(self) -> int:
        return self.model_info.max_context

    # ---- requests ---------------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Queue a request: `params.n` samples of the prompt, admitted all together or not at all. RequestRejected
        if it can never run, EngineOverloaded if the queue is full.

        The stop tokens are the tokenizer's (eos included) unless `params.ignore_eos`, plus `params.stop_token_ids`:
        callers do not add the tokenizer's themselves.

        The samples are independent sequences that share the prompt through the prefix cache: the scheduler
        admits sample 1.. once sample 0 has computed the prompt's full blocks (see scheduler.py), so those are
        computed once."""
        n = len(prompt_token_ids)
        if request_id in self.requests:
            raise RequestRejected(f"request id {request_id!r} is already in use")
        if n == 0:
            raise RequestRejected("the prompt is empty")
        if params.max_new_tokens > self.model_info.output_room(n):
            raise RequestRejected(
                f"prompt ({n} tokens) + max_new_tokens ({params.max_new_tokens}) = {n + params.max_new_tokens} "
                f"exceeds the model's context of {self.max_context} tokens")
        vocab = self.loaded.config.vocab_size
        if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab:
            raise RequestRejected(f"prompt token ids must be in [0, {vocab})")
        blocks = cdiv(n + params.max_new_tokens, self.block_size)
        if blocks > self.block_manager.num_blocks:
            raise RequestRejected(
                f"prompt + max_new_tokens needs {blocks} KV blocks but the cache has {self.block_manager.num_blocks}"
                " (raise kv_cache_memory_mb)")
        sched = self.scheduler
        samples = params.n
        if samples > sched.max_num_seqs + self.max_waiting_requests:
            raise RequestRejected(
                f"n={samples} samples can never be queued at once: the engine runs {sched.max_num_seqs} sequences "
                f"(max_num_seqs) and queues {self.max_waiting_requests} more (max_waiting_requests)")
        # requests that will start at the next step (free running slots) are not "queued"
        free_slots = max(0, sched.max_num_seqs - len(sched.running))
        if len(sched.waiting) + samples - free_slots > self.max_waiting_requests:
            raise EngineOverloaded(f"{len(sched.waiting)} requests are waiting (max_waiting_requests="
                                   f"{self.max_waiting_requests})")
        if sched.num_waiting_tokens + samples * n > self.max_queued_tokens and sched.waiting:
            raise EngineOverloaded(f"{sched.num_waiting_tokens} prompt tokens are waiting (max_queued_tokens="
                                   f"{self.max_queued_tokens})")

        stop_ids = frozenset(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= self._tokenizer_stop_ids
        deadline = time.monotonic() + self.queue_timeout if self.queue_timeout > 0 else None
        # each sample its own grammar state, built before anything is queued
        grammars = [self._structured().matcher(params.grammar) for _ in range(samples)] if params.grammar else None
        group = self.requests[request_id] = []
        for index in range(samples):
            seq = Sequence(request_id, prompt_token_ids, sample_params(params, index), stop_ids, deadline, index)
            seq.detokenizer = IncrementalDetokenizer(self.tokenizer, params.stop)
            if grammars is not None:
                seq.grammar = grammars[index]
            group.append(seq)
            sched.add(seq)
        self.counters.prompt_tokens_total += n

    def _structured(self) -> StructuredOutputs:
        """The grammars' tokenizer and masks, loaded with the first constrained request."""
        if self.runner.structured is None:
            self.runner.structured = StructuredOutputs(self.loaded.path, self.runner.num_token_ids,
                                                       tuple(sorted(self._tokenizer_stop_ids)))
        return self.runner.structured

    def abort(self, request_id: str) -> bool:
        """Stop a request (all its samples) and free its blocks at once; the final delta of each sample
        (finish_reason "abort") comes with the next step(). False if the request is unknown or already finished."""
        group = self.requests.get(request_id)
        if group is None:
            return False
        for seq in list(group):
            self.pending.append(self._finish(seq, "abort"))
        return True

    def has_unfinished(self) -> bool:
        return bool(self.requests) or bool(self.pending)

    # ---- the step ---------------------------------------------------------------------------------------

    def step(self) -> list[Delta]:
        deltas, self.pending = self.pending, []
        if self.queue_timeout > 0:
            self._expire_waiting(deltas)
        if self.speculative.enabled:
            self._propose()
        batch = self.scheduler.schedule()
        if not batch:
            if self.requests and not deltas:
                sched = self.scheduler
                raise RuntimeError(f"the scheduler ran nothing: {len(sched.running)} running, {len(sched.waiting)} "
                                   f"waiting, {self.block_manager.num_free_blocks} free KV blocks")
            return deltas
        try:
            result = self.runner.run(batch)
        except Exception as e:   # the model failed on this batch: fail its requests, keep serving the rest
            log.exception("engine step failed for %d requests", len(batch.seqs))
            error = f"{type(e).__name__}: {e}"
            for seq in batch.seqs:
                deltas.append(self._finish(seq, "error", Failure.STEP_FAILED, error))
            return deltas
        self._advance(batch, result, deltas)
        return deltas

    def _propose(self) -> None:
        """A draft for every running sequence that decodes next (engine/speculative.py); the scheduler trims it
        to what the step can take."""
        spec = self.speculative
        for seq in self.scheduler.running:
            room = draft_room(seq, spec.num_tokens, self.max_context) if seq.num_uncomputed_tokens == 1 else 0
            seq.draft_token_ids = allowed_draft(
                seq, propose_ngram(seq.token_ids, spec.ngram_min, spec.ngram_max, room)) if room else []

    def _advance(self, batch: ScheduledBatch, result: StepResult, deltas: list[Delta]) -> None:
        bm = self.block_manager
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens, strict=True)):
            # a verified draft's K/V count once its tokens are accepted (below)
            seq.num_computed_tokens += n - batch.drafts(i)
            bm.register_full_blocks(seq)
        for seq, scored in result.prompt_logprobs:
            seq.prompt_logprobs += scored
        now = time.monotonic()
        counters = self.counters
        for _, proposed, accepted in result.verified:
            counters.spec_proposed_tokens_total += proposed
            counters.spec_accepted_tokens_total += accepted
        counters.spec_verify_steps_total += len(result.verified)
        step_deltas: dict[int, Delta] = {}    # id(sequence) -> its delta of this step (several tokens: a draft)
        for seq, token, logprob in result.sampled:
            if seq.status is SequenceStatus.FINISHED:
                continue                 # a stop inside an accepted draft: the rest of it is dropped
            delta = step_deltas.get(id(seq))
            if delta is not None:        # the token before this one was an accepted draft token: its K/V are in
                seq.num_computed_tokens += 1
            counters.generation_tokens_total += 1
            prompt_logprobs: list[TokenLogprob | None] | None = None
            if seq.scores_prompt:      # the first token: the prompt's logprobs go with it, and are let go
                prompt_logprobs = [None, *seq.prompt_logprobs]
                seq.prompt_logprobs = []
            seq.token_ids.append(token)
            if seq.first_token_time is None:
                seq.first_token_time = now
                counters.ttft.observe(now - seq.arrival_time)
                counters.queue_time.observe((seq.first_scheduled_time or now) - seq.arrival_time)
            seq.last_token_time = now
            reason: FinishReason | None = None
            failure: Failure | None = None
            error: str | None = None
            detokenizer = seq.detokenizer
            assert detokenizer is not None   # every admitted sequence has one
            if token in seq.stop_token_ids:
                text, reason = detokenizer.flush(), "stop"
            else:
                text = detokenizer.push(token)
                if detokenizer.stopped:
                    reason = "stop"
                elif seq.grammar is not None and self._grammar_ends(seq, token):
                    reason = "stop"        # the grammar is complete: nothing more may follow
                    text += detokenizer.flush()
                elif seq.grammar is not None and seq.grammar.is_error():
                    reason, failure, error = "error", Failure.STEP_FAILED, seq.grammar.get_error()
                elif seq.num_output_tokens >= seq.params.max_new_tokens:
                    reason = "length"
                    text += detokenizer.flush()
            if delta is None:
                delta = step_deltas[id(seq)] = Delta(
                    seq.request_id, text, [token], seq.num_prompt_tokens, seq.num_output_tokens, index=seq.index,
                    logprobs=None if logprob is None else [logprob], prompt_logprobs=prompt_logprobs)
                deltas.append(delta)
            else:
                delta.text += text
                delta.token_ids.append(token)
                delta.completion_tokens = seq.num_output_tokens
                if delta.logprobs is not None and logprob is not None:
                    delta.logprobs.append(logprob)
            if reason is not None:
                self._retire(seq, reason)
                delta.finished, delta.finish_reason = True, reason
                delta.failure, delta.error = failure, error
        for seq, _, _ in result.verified:
            if seq.status is SequenceStatus.RUNNING:
                bm.register_full_blocks(seq)
                bm.release_tail(seq)      # the blocks only rejected draft tokens were written to

    @staticmethod
    def _grammar_ends(seq: Sequence, token: int) -> bool:
        """Advance the sequence's grammar; True when it is complete. A token it refuses (which the mask rules
        out: only a row with no finite logit at all could yield one) leaves it in error: logged, and the
        sequence fails."""
        try:
            return StructuredOutputs.advance(seq, token)
        except RuntimeError as e:
            log.error("request %s sample %d: %s", seq.request_id, seq.index, e)
            return False

    def _expire_waiting(self, deltas: list[Delta]) -> None:
        now = time.monotonic()
        for seq in list(self.scheduler.waiting):
            if seq.deadline is not None and seq.first_scheduled_time is None and now > seq.deadline:
                deltas.append(self._finish(
                    seq, "error", Failure.QUEUE_TIMEOUT, f"waited {now - seq.arrival_time:.1f} s "
                                                         f"(queue_timeout_seconds={self.queue_timeout})"))

    def _finish(self, seq: Sequence, reason: FinishReason, failure: Failure | None = None,
                error: str | None = None) -> Delta:
        """End a sample without a new token (abort, failure, timeout): its last, empty delta."""
        self._retire(seq, reason)
        return Delta(seq.request_id, "", [], seq.num_prompt_tokens, seq.num_output_tokens, finished=True,
                     finish_reason=reason, failure=failure, error=error, index=seq.index,
                     logprobs=None if seq.params.logprobs is None else [])

    def _retire(self, seq: Sequence, reason: FinishReason) -> None:
        self.scheduler.remove(seq)
        group = self.requests[seq.request_id]
        group.remove(seq)
        if not group:
            del self.requests[seq.request_id]
        self.counters.finished[reason] += 1
        if seq.first_token_time is not None and seq.num_output_tokens >= 2 and seq.last_token_time is not None:
            self.counters.tpot.observe((seq.last_token_time - seq.first_token_time) / (seq.num_output_tokens - 1))

    # ---- introspection ----------------------------------------------------------------------------------

    def stats(self) -> StatsSnapshot:
        sched, bm = self.scheduler, self.block_manager
        return self.counters.snapshot(
            running=len(sched.running), waiting=len(sched.waiting), kv_blocks_used=bm.num_used_blocks,
            kv_blocks_total=bm.num_blocks, prefix_queries=sched.prefix_queries, prefix_hits=sched.prefix_hits,
            preemptions=sched.num_preemptions)

    def sequence(self, request_id: str, index: int = 0) -> Sequence | None:
        """Sample `index` of an unfinished request, None once it finished."""
        return next((s for s in self.requests.get(request_id, ()) if s.index == index), None)
