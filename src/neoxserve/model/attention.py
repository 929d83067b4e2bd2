"""Paged attention: K/V live in fixed-size blocks; each sequence's block table lists the blocks of its context.

One engine step runs S sequences with T new tokens in total, flattened into one batch. The K/V of the new tokens
are written into the cache first (by `slot_mapping`), then each sequence attends over its whole cached context,
so prefill, chunked prefill, prefix-cache hits and decode are all the same computation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from neoxserve.model import kernels
from neoxserve.model.arith import cdiv
from neoxserve.model.config import NeoXConfig
from neoxserve.model.kv_layout import kv_cache_shape

KVCache = tuple[Tensor, Tensor]  # (k_cache, v_cache), each as kv_layout.kv_cache_shape

# A sequence with at most this many new tokens attends one decode row per token, in the batched decode path, so
# that a speculative verification (K + 1 tokens) does not send its whole batch through one attention call per
# sequence. Longer rows (prefill chunks) take the per-sequence path, whose flash kernel wins there.
DECODE_ROW_MAX_QUERY = 16


@dataclass
class AttentionMetadata:
    query_start_loc: Tensor   # [S+1] offsets of each sequence's new tokens in the flat batch
    seq_lens: Tensor          # [S] tokens in the cache for that sequence after this step
    block_tables: Tensor      # [S, max_blocks] block ids, padded with 0
    slot_mapping: Tensor      # [T] flat slot (block * block_size + offset) of each new token
    query_lens: list[int]     # the same as Python lists, so loops need no device sync
    seq_lens_list: list[int]
    # One decode row per new token when no sequence has more than DECODE_ROW_MAX_QUERY of them (None otherwise):
    # the row's sequence's block table, and how many cached tokens it attends over (itself included).
    row_block_tables: Tensor | None = None   # [T, max_blocks]
    row_seq_lens: Tensor | None = None       # [T]
    row_seq_lens_list: list[int] | None = None
    # Derived once per step and shared by every layer (built lazily by paged_attention).
    _decode_plan: tuple[Tensor, Tensor | None] | None = field(default=None, init=False, repr=False)

    @property
    def is_decode(self) -> bool:
        """Every new token attends as a decode row (plain decode, speculative verification, short chunks)."""
        return self.row_seq_lens_list is not None

    @classmethod
    def build(cls, query_lens: list[int], seq_lens: list[int], block_tables: list[list[int]], block_size: int,
              device: torch.device | str = "cpu") -> AttentionMetadata:
        """Metadata from plain lists (new tokens are the last `query_len` of each sequence's `seq_len`)."""
        starts = [0]
        slots: list[int] = []
        for q, n, table in zip(query_lens, seq_lens, block_tables, strict=True):
            starts.append(starts[-1] + q)
            p = n - q
            while p < n:        # slots block by block: one range per block instead of one op per token
                block, offset = divmod(p, block_size)
                stop = min(n, (block + 1) * block_size)
                base = table[block] * block_size
                slots += range(base + offset, base + offset + stop - p)
                p = stop
        width = max((len(t) for t in block_tables), default=0)
        padded = [list(t) + [0] * (width - len(t)) for t in block_tables]

        def long(values: list[int] | list[list[int]]) -> Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        tables_t, seq_lens_t = long(padded).view(len(block_tables), width), long(seq_lens)
        row_tables, row_lens, row_lens_list = None, None, None
        if all(q == 1 for q in query_lens):
            row_tables, row_lens, row_lens_list = tables_t, seq_lens_t, list(seq_lens)
        elif max(query_lens) <= DECODE_ROW_MAX_QUERY:
            # query i of a sequence with n tokens after the step sits at position n - q + i and sees n - q + i + 1
            # tokens: causal attention without a mask, the K/V of every new token being written before the reads
            row_lens_list = [n - q + i + 1 for q, n in zip(query_lens, seq_lens, strict=True) for i in range(q)]
            row_lens = long(row_lens_list)
            row_tables = tables_t.repeat_interleave(torch.tensor(query_lens, device=device), dim=0)
        return cls(query_start_loc=long(starts), seq_lens=seq_lens_t, block_tables=tables_t,
                   slot_mapping=long(slots), query_lens=list(query_lens), seq_lens_list=list(seq_lens),
                   row_block_tables=row_tables, row_seq_lens=row_lens, row_seq_lens_list=row_lens_list)


def allocate_kv_cache(cfg: NeoXConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                      device: torch.device | str) -> list[KVCache]:
    shape = kv_cache_shape(cfg, num_blocks, block_size)
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(cfg.num_hidden_layers)]


def paged_attention(q: Tensor, k: Tensor, v: Tensor, kv_cache: KVCache, meta: AttentionMetadata,
                    scale: float, native: bool = False) -> Tensor:
    """q, k, v: [T, nh, hd] for the new tokens -> attention output [T, nh, hd]. Writes k, v into the cache.

    native: decode steps run kernels/wq_gemm.cpp's paged_decode_attention (float32 q on CPU, a float32 or bfloat16
    cache; the caller checks), which reads each sequence's context where it lies in the cache instead of gathering
    a copy per layer. The cache may hold a narrower dtype than q (GPTNeoX.kv_dtype): K/V are rounded to it when
    written and widened back when read."""
    k_cache, v_cache = kv_cache
    _, block_size, nh, hd = k_cache.shape
    if native:
        # Every read below is of the sequence's own first seq_len positions, so nothing another request wrote
        # (padding, stale tails of reused blocks) is ever read and no finite-value guard is needed.
        k_cache.view(-1, nh, hd).index_copy_(0, meta.slot_mapping, k.to(k_cache.dtype))
        v_cache.view(-1, nh, hd).index_copy_(0, meta.slot_mapping, v.to(v_cache.dtype))
        if meta.is_decode:
            return kernels.ops().paged_decode_attention(q, k_cache, v_cache, meta.row_block_tables,
                                                        meta.row_seq_lens, scale)
    else:
        # The cache holds finite values only: the batched decode of _decode_attention reads slots it masks out
        # (block-table padding, the stale tail of a reused block), and a masked NaN or inf still turns a softmax
        # or its weighted sum into NaN: K/V that overflowed in one request (fp16) would poison every request
        # batched with its freed blocks later on.
        k_cache.view(-1, nh, hd).index_copy_(0, meta.slot_mapping, k.nan_to_num(0.0, 0.0, 0.0))
        v_cache.view(-1, nh, hd).index_copy_(0, meta.slot_mapping, v.nan_to_num(0.0, 0.0, 0.0))
        if meta.is_decode:
            return _decode_attention(q, k_cache, v_cache, meta, scale)

    out = torch.empty_like(q)
    start = 0
    for s, (q_len, n) in enumerate(zip(meta.query_lens, meta.seq_lens_list, strict=True)):
        end = start + q_len
        if q_len == n:  # nothing cached before this step: attend over the new tokens themselves
            ks, vs = k[start:end], v[start:end]
        else:
            ks, vs = _gather(k_cache, v_cache, meta.block_tables[s], n, block_size)
        out[start:end] = _sdpa(q[start:end], _widen(ks, q.dtype), _widen(vs, q.dtype), scale, q_len, n)
        start = end
    return out


def _gather(k_cache: Tensor, v_cache: Tensor, table: Tensor, n: int, block_size: int) -> tuple[Tensor, Tensor]:
    """The first n cached tokens of one sequence: [n, nh, hd] each."""
    blocks = table[: cdiv(n, block_size)]
    nh, hd = k_cache.shape[2:]
    return k_cache[blocks].view(-1, nh, hd)[:n], v_cache[blocks].view(-1, nh, hd)[:n]


def _widen(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float, q_len: int, n: int) -> Tensor:
    """q [q_len, nh, hd] over k, v [n, nh, hd]; query i sits at position n - q_len + i (causal, end-aligned).

    Batched as [1, nh, len, hd]: PyTorch's CPU flash-attention kernel takes 4-D inputs only; 3-D ones run the
    math path, which took 3x as long for a 512-token prompt (43 vs 14 ms per layer, 160M shape)."""
    q, k, v = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    if q_len == 1:
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    elif q_len == n:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:
        rows = torch.arange(n - q_len, n, device=q.device)[:, None]
        mask = torch.arange(n, device=q.device)[None, :] <= rows
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out[0].transpose(0, 1)


def _decode_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, meta: AttentionMetadata,
                      scale: float) -> Tensor:
    """Every new token is a decode row: one batched SDPA over the rows' contexts padded to the longest, masked."""
    assert meta.row_seq_lens_list is not None and meta.row_block_tables is not None and meta.row_seq_lens is not None
    row_lens = meta.row_seq_lens_list
    num_seqs = len(row_lens)      # decode rows
    _, block_size, nh, hd = k_cache.shape
    if meta._decode_plan is None:
        nb = cdiv(max(row_lens), block_size)
        blocks = meta.row_block_tables[:, :nb]
        mask = None
        if num_seqs > 1 and min(row_lens) != nb * block_size:
            positions = torch.arange(nb * block_size, device=q.device)
            mask = (positions[None, :] < meta.row_seq_lens[:, None]).view(num_seqs, 1, 1, -1)
        elif num_seqs == 1:  # single stream: slice the exact context instead of masking
            blocks = blocks[0]
        meta._decode_plan = (blocks, mask)
    blocks, mask = meta._decode_plan

    if num_seqs == 1:
        n = row_lens[0]
        ks = k_cache[blocks].view(-1, nh, hd)[:n].transpose(0, 1)     # [nh, n, hd]
        vs = v_cache[blocks].view(-1, nh, hd)[:n].transpose(0, 1)
        out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], ks[None], vs[None], scale=scale)  # [1, nh, 1, hd]
        return out[0].transpose(0, 1)

    ks = k_cache[blocks].view(num_seqs, -1, nh, hd).transpose(1, 2)   # [S, nh, L, hd]
    vs = v_cache[blocks].view(num_seqs, -1, nh, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q.unsqueeze(2), ks, vs, attn_mask=mask, scale=scale)
    return out.squeeze(2)
