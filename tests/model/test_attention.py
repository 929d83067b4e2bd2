"""paged_attention against a dense reference, over random batches of sequences, lengths and block tables."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neoxserve.model.attention import AttentionMetadata, paged_attention

NH, HD, BLOCK, NUM_BLOCKS = 2, 8, 4, 64


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q [q_len, nh, hd] over k, v [n, nh, hd]; query i sits at position n - q_len + i."""
    q_len, n = q.shape[0], k.shape[0]
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * scale
    allowed = torch.arange(n)[None, :] <= torch.arange(n - q_len, n)[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double()).float()


@st.composite
def batches(draw):
    """[(cached tokens before the step, new tokens)] per sequence; all-decode batches are drawn often."""
    num_seqs = draw(st.integers(1, 4))
    decode = draw(st.booleans())
    seqs = []
    for _ in range(num_seqs):
        cached = draw(st.integers(1 if decode else 0, 30))
        # up to 16 new tokens attend as decode rows (attention.DECODE_ROW_MAX_QUERY), more per sequence
        new = 1 if decode else draw(st.one_of(st.integers(1, 12), st.integers(13, 24)))
        seqs.append((cached, new))
    return seqs, draw(st.randoms(use_true_random=False))


@pytest.fixture(scope="module")
def native_kernels() -> None:
    from neoxserve.model import kernels
    if not kernels.load():
        pytest.fail("the native kernels did not build on this machine (a C++ compiler and AVX2 are expected)")


@pytest.mark.parametrize(("native", "cache_dtype"), [(False, torch.float32), (True, torch.float32),
                                                     (True, torch.bfloat16)],
                         ids=["torch", "native", "native-bf16-cache"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_paged_attention_matches_dense(native, cache_dtype, batch, native_kernels, kernel_variant):
    """A bfloat16 cache (bf16 linears, GPTNeoX.kv_dtype) holds K/V rounded to bf16: the reference uses them
    rounded the same way, so the kernel's result must match it as closely as a float32 cache's."""
    seqs, rng = batch
    torch.manual_seed(rng.randrange(2**31))
    free = list(range(NUM_BLOCKS))
    rng.shuffle(free)
    # garbage outside the written slots must never be read
    k_cache = torch.randn(NUM_BLOCKS, BLOCK, NH, HD).to(cache_dtype)
    v_cache = torch.randn(NUM_BLOCKS, BLOCK, NH, HD).to(cache_dtype)
    tables, full_k, full_v = [], [], []
    for cached, new in seqs:
        n = cached + new
        table = [free.pop() for _ in range(-(-n // BLOCK))]
        k, v = torch.randn(n, NH, HD), torch.randn(n, NH, HD)
        k, v = k.to(cache_dtype).float(), v.to(cache_dtype).float()        # what the cache can hold
        for p in range(cached):  # what earlier steps wrote
            k_cache[table[p // BLOCK], p % BLOCK] = k[p].to(cache_dtype)
            v_cache[table[p // BLOCK], p % BLOCK] = v[p].to(cache_dtype)
        tables.append(table)
        full_k.append(k)
        full_v.append(v)

    meta = AttentionMetadata.build([new for _, new in seqs], [c + new for c, new in seqs], tables, BLOCK)
    q = torch.randn(sum(new for _, new in seqs), NH, HD)
    new_k = torch.cat([k[c:] for k, (c, _) in zip(full_k, seqs, strict=True)])
    new_v = torch.cat([v[c:] for v, (c, _) in zip(full_v, seqs, strict=True)])
    out = paged_attention(q, new_k, new_v, (k_cache, v_cache), meta, HD ** -0.5, native)

    start = 0
    for (_, new), k, v in zip(seqs, full_k, full_v, strict=True):
        expected = _reference(q[start:start + new], k, v, HD ** -0.5)
        torch.testing.assert_close(out[start:start + new], expected, atol=1e-5, rtol=1e-5)
        start += new


@settings(max_examples=60, deadline=None)
@given(batches())
def test_slot_mapping_is_block_times_size_plus_offset(batch):
    """build's block-by-block slot ranges equal the per-token definition `table[p // bs] * bs + p % bs`."""
    seqs, rng = batch
    free = list(range(NUM_BLOCKS))
    rng.shuffle(free)
    tables = [[free.pop() for _ in range(-(-(c + new) // BLOCK))] for c, new in seqs]
    meta = AttentionMetadata.build([new for _, new in seqs], [c + new for c, new in seqs], tables, BLOCK)
    assert meta.slot_mapping.tolist() == [table[p // BLOCK] * BLOCK + p % BLOCK
                                          for (c, new), table in zip(seqs, tables, strict=True)
                                          for p in range(c, c + new)]
    assert meta.query_start_loc.tolist() == [sum(new for _, new in seqs[:i]) for i in range(len(seqs) + 1)]


@pytest.mark.parametrize("native", [False, True], ids=["torch", "native"])
def test_non_finite_kv_of_one_request_never_reaches_another(native, native_kernels):
    """A request whose K/V overflowed (inf/NaN, e.g. in fp16) leaves them in its blocks; batched decode reads
    those blocks masked (the padding of shorter block tables is block 0, and the tail of a reused last block is
    stale), and a masked NaN still poisons the softmax or the weighted sum. Other requests must not see it."""
    torch.manual_seed(0)
    k_cache, v_cache = torch.zeros(4, BLOCK, NH, HD), torch.zeros(4, BLOCK, NH, HD)
    bad = torch.full((BLOCK, NH, HD), float("nan"))
    bad[1] = float("inf")
    paged_attention(torch.randn(BLOCK, NH, HD), bad, bad, (k_cache, v_cache),
                    AttentionMetadata.build([BLOCK], [BLOCK], [[0]], BLOCK), HD ** -0.5, native)   # fills block 0

    # two decodes of 2 and 6 tokens: the short one's table is padded with block 0 (masked)
    k_short, v_short, k_long, v_long = (torch.randn(n, NH, HD) for n in (2, 2, 6, 6))
    tables = [[1], [2, 3]]
    for k, v, table in ((k_short, v_short, tables[0]), (k_long, v_long, tables[1])):
        for p in range(k.shape[0] - 1):
            k_cache[table[p // BLOCK], p % BLOCK], v_cache[table[p // BLOCK], p % BLOCK] = k[p], v[p]
    q = torch.randn(2, NH, HD)
    meta = AttentionMetadata.build([1, 1], [2, 6], tables, BLOCK)
    out = paged_attention(q, torch.stack([k_short[-1], k_long[-1]]), torch.stack([v_short[-1], v_long[-1]]),
                          (k_cache, v_cache), meta, HD ** -0.5, native)
    torch.testing.assert_close(out[0:1], _reference(q[0:1], k_short, v_short, HD ** -0.5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:2], _reference(q[1:2], k_long, v_long, HD ** -0.5), atol=1e-5, rtol=1e-5)
