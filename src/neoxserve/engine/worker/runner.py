"""Runs one scheduled batch through the model: flat inputs + AttentionMetadata in, sampled tokens out."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from neoxserve.engine.worker.logprobs import prompt_logprobs, token_logprobs
from neoxserve.engine.outputs import TokenLogprob
from neoxserve.engine.worker.penalties import TokenHistory, needs_history
from neoxserve.engine.worker.sampler import Sampler, SampleRequest
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker.scheduler import ScheduledBatch
from neoxserve.engine.worker.structured import StructuredOutputs
from neoxserve.engine.worker.sequence import Sequence
from neoxserve.engine.worker.speculative import accepted_prefix
from neoxserve.model.arith import cdiv
from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache
from neoxserve.model.config import NeoXConfig
from neoxserve.model.neox import GPTNeoX


@dataclass
class StepResult:
    # every sequence caught up after the step: its new token, and that token's logprobs when it asked for them
    sampled: list[tuple[Sequence, int, TokenLogprob | None]] = field(default_factory=list)
    # sequences that asked for prompt logprobs: those of the prompt tokens whose logits this step computed
    prompt_logprobs: list[tuple[Sequence, list[TokenLogprob]]] = field(default_factory=list)
    # speculative decoding: (sequence, draft tokens verified, of them accepted); its entries in `sampled` are the
    # accepted draft tokens and the one after them, in order
    verified: list[tuple[Sequence, int, int]] = field(default_factory=list)


class ModelRunner:
    def __init__(self, model: GPTNeoX, config: NeoXConfig, num_blocks: int, block_size: int,
                 num_token_ids: int | None = None, structured: StructuredOutputs | None = None) -> None:
        """num_token_ids: ids the tokenizer has. The embedding is padded past them (50432 rows for 50277 tokens in
        StableLM-Alpha-7B); those rows stand for no text, so they are never sampled."""
        self.model = model
        self.num_token_ids = min(num_token_ids or config.vocab_size, config.vocab_size)
        self.config = config
        self.block_size = block_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.kv_caches = allocate_kv_cache(config, num_blocks, block_size, model.cache_dtype(), self.device)
        self.sampler = Sampler()
        self.structured = structured   # the grammars' masks; None: no sequence is constrained

    def warm_up(self, prompt_tokens: int = 32) -> None:
        """One short prefill and one decode step of a scratch sequence, so that what the first call of each code
        path costs (memory the allocator must map, the thread pool starting, lazily initialized kernels and
        libraries) is paid before the engine reports ready instead of by the first request. The prompt is long
        enough for the quantized linears' many-row path (quant_linear.NATIVE_GEMM_ROWS). Its K/V go to the first
        blocks, which belong to no sequence yet; every sequence writes its own K/V before reading them."""
        capacity = self.kv_caches[0][0].shape[0] * self.block_size
        n = max(1, min(prompt_tokens, capacity - 1, self.num_token_ids))
        seq = Sequence("warm-up", list(range(n)), SamplingParams(max_new_tokens=2))
        seq.block_table = list(range(cdiv(n + 1, self.block_size)))
        batch = ScheduledBatch(seqs=[seq], num_new_tokens=[n])
        for seq_, token, _ in self.run(batch).sampled:
            seq_.token_ids.append(token)
        seq.num_computed_tokens = n
        self.run(ScheduledBatch(seqs=[seq], num_new_tokens=[1]))

    def run(self, batch: ScheduledBatch) -> StepResult:
        """Compute the batch's new tokens; sample one token for every sequence that is caught up after it."""
        input_ids: list[int] = []
        positions: list[int] = []
        seq_lens: list[int] = []
        tables: list[list[int]] = []
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        prompt_rows: list[tuple[Sequence, int, int, int]] = []   # (sequence, row, position, count) to score
        verify: list[tuple[Sequence, int]] = []    # (sequence, draft tokens) verified this step
        verify_rows: list[int] = []                # their k + 1 rows each, after the sample_rows
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens, strict=True)):
            c = seq.num_computed_tokens
            end = c + n
            drafts = batch.drafts(i)
            if drafts:    # the last token and the draft's: drafts + 1 rows to sample (engine/worker/speculative.py)
                input_ids += seq.token_ids[c:]
                input_ids += seq.draft_token_ids[:drafts]
                positions += range(c, end)
                seq_lens.append(end)
                tables.append(seq.block_table)
                verify_rows += range(len(input_ids) - drafts - 1, len(input_ids))
                verify.append((seq, drafts))
                continue
            if seq.scores_prompt:
                # position p's logits score prompt token p + 1; the ones already scored (before a preemption) are
                # not scored again
                first, last = max(c, len(seq.prompt_logprobs)), min(end, seq.num_prompt_tokens - 1)
                if first < last:
                    prompt_rows.append((seq, len(input_ids) + first - c, first, last - first))
            input_ids += seq.token_ids[c:end]
            positions += range(c, end)
            seq_lens.append(end)
            tables.append(seq.block_table)
            if end == seq.num_tokens:
                sample_rows.append(len(input_ids) - 1)
                sample_seqs.append(seq)

        dev = self.device
        result = StepResult()
        meta = AttentionMetadata.build(batch.num_new_tokens, seq_lens, tables, self.block_size, dev)
        with torch.inference_mode():
            hidden = self.model(torch.tensor(input_ids, dtype=torch.long, device=dev),
                                torch.tensor(positions, dtype=torch.long, device=dev), meta, self.kv_caches)
            for seq, row, first, count in prompt_rows:
                k = seq.params.prompt_logprobs
                assert k is not None
                result.prompt_logprobs.append((seq, prompt_logprobs(
                    self.model.compute_logits, hidden[row:row + count], seq.token_ids[first + 1:first + 1 + count],
                    k, self.num_token_ids)))
            sample_rows += verify_rows
            if not sample_rows:
                return result
            rows = hidden[sample_rows[0]:sample_rows[0] + 1] if len(sample_rows) == 1 else \
                hidden[torch.tensor(sample_rows, device=dev)]
            logits = self.model.compute_logits(rows)[:, :self.num_token_ids]
            if self.structured is not None:
                # the first rows are the sequences sampling one token; verify rows never carry a grammar
                # (speculative.allowed_draft proposes nothing for a constrained sequence)
                self.structured.apply_masks(logits[:len(sample_seqs)], sample_seqs)
            requests = [self._sample_request(s) for s in sample_seqs]
            row_seqs = list(sample_seqs)
            for seq, k in verify:
                requests += self._draft_requests(seq, k)
                row_seqs += [seq] * (k + 1)
            tokens = self.sampler.sample(logits, requests)
            if verify:
                tokens, row_seqs, keep = self._accept(tokens, row_seqs, len(sample_seqs), verify, result)
                logits = logits[torch.tensor(keep)] if len(keep) < logits.shape[0] else logits
            scored = self._logprobs(logits, tokens, row_seqs)
        result.sampled = list(zip(row_seqs, tokens, scored, strict=True))
        return result

    def _draft_requests(self, seq: Sequence, k: int) -> list[SampleRequest]:
        """Rows 0..k of a verified sequence: row j samples the token after its tokens and draft[:j], with the
        penalties over exactly those tokens and the token index (seed) it would have without speculation."""
        first = self._sample_request(seq)
        requests = [first]
        draft = seq.draft_token_ids
        for j in range(1, k + 1):
            # a history of its own (None: counted afresh), as the draft may yet be rejected
            requests.append(SampleRequest(seq.params, seq.token_ids + draft[:j], seq.num_output_tokens + j, None))
        return requests

    @staticmethod
    def _accept(tokens: list[int], row_seqs: list[Sequence], first_row: int, verify: list[tuple[Sequence, int]],
                result: StepResult) -> tuple[list[int], list[Sequence], list[int]]:
        """Keep each verified sequence's accepted draft tokens and the one after them; which rows they are."""
        keep = list(range(first_row))
        row = first_row
        for seq, k in verify:
            sampled = tokens[row:row + k + 1]
            accepted = accepted_prefix(seq.draft_token_ids[:k], sampled)
            keep += range(row, row + accepted + 1)
            result.verified.append((seq, k, accepted))
            row += k + 1
        return [tokens[r] for r in keep], [row_seqs[r] for r in keep], keep

    def _sample_request(self, seq: Sequence) -> SampleRequest:
        if seq.token_history is None and needs_history(seq.params):
            seq.token_history = TokenHistory(self.num_token_ids, seq.params)
        return SampleRequest(seq.params, seq.token_ids, seq.num_output_tokens, seq.token_history)

    @staticmethod
    def _logprobs(logits: torch.Tensor, tokens: list[int], seqs: list[Sequence]) -> list[TokenLogprob | None]:
        """The sampled tokens' logprobs, for the rows that asked (no other row is touched)."""
        out: list[TokenLogprob | None] = [None] * len(seqs)
        asking = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
        if asking:
            scored = token_logprobs(logits[asking], [tokens[i] for i in asking],
                                    [seqs[i].params.logprobs or 0 for i in asking])
            for i, lp in zip(asking, scored, strict=True):
                out[i] = lp
        return out
