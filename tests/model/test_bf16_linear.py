"""bf16 weights with float32 arithmetic (neox.Linear's bf16 tiles, kernels/wq_gemm.cpp's bf16_linear): what
`--dtype bfloat16` runs on CPUs without bf16 units."""
from __future__ import annotations

import pytest
import torch

from neoxserve.model import kernels, weight_tiles
from neoxserve.model.dtype_policy import uses_bf16_weight_kernel
from neoxserve.model.loader import load_model
from neoxserve.model.neox import Linear


@pytest.fixture(scope="module")
def native():
    if not kernels.load():
        pytest.fail("the native kernels did not build on this machine (a C++ compiler and AVX2 are expected)")


def _linear(w: torch.Tensor, b: torch.Tensor | None) -> Linear:
    lin = Linear(w.shape[1], w.shape[0], bias=b is not None, bf16_tiles=True)
    state = {"weight": lin.load_layout(w)} | ({"bias": b} if b is not None else {})
    lin.load_state_dict(state, assign=True)
    return lin.requires_grad_(False)


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 16, kernels.GEMM_ROWS + 1, 40])
@pytest.mark.parametrize("out_features", [37, 64])
def test_bf16_tiles_compute_the_product_with_the_rounded_weight(rows, out_features, kernel_variant):
    """To float32 rounding: every row of x (each block of 8 rows, the one-row path, the GEMM path past
    GEMM_ROWS) against the bf16-rounded weight; 37 outputs leave a partial tile."""
    g = torch.Generator().manual_seed(rows)
    w, b = torch.randn(out_features, 96, generator=g), torch.randn(out_features, generator=g)
    x = torch.randn(rows, 96, generator=g) * torch.linspace(0.1, 3, 96)
    ref = x.double() @ w.to(torch.bfloat16).double().t() + b.double()
    out = _linear(w, b)(x)
    assert out.dtype == torch.float32 and out.shape == (rows, out_features)
    assert float((out.double() - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_a_swapped_tile_column_is_caught(native):
    """The check above can fail: two columns of the k-major layout swapped give a different product."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(16, 64, generator=g), torch.randn(1, 64, generator=g)
    lin = _linear(w, None)
    with torch.no_grad():
        lin.weight[:, [0, 1]] = lin.weight[:, [1, 0]]
    ref = x @ w.to(torch.bfloat16).float().t()
    assert float((lin(x) - ref).abs().max()) > 1e-3


def test_tiles_invert():
    w = torch.randn(37, 24).to(torch.bfloat16)
    tiles = weight_tiles.bf16_tiles(w)
    assert tiles.shape == (5, 24, 8) and tiles.dtype == torch.bfloat16
    assert torch.equal(weight_tiles.group_untiled(tiles, 37), w)   # the same [N/8, K, 8] interleaving
    assert torch.equal(tiles[4, :, 5:], torch.zeros(24, 3, dtype=torch.bfloat16))   # padding rows


def test_bfloat16_on_this_cpu_loads_bf16_linears_close_to_float32(demo_model_dir, native):
    """On a CPU without bf16 units `--dtype bfloat16` holds the linears as bf16 tiles and the K/V cache as bf16, and
    computes in float32; the logits stay within bf16 rounding of the float32 model's; the model reports bfloat16."""
    from neoxserve.model.attention import AttentionMetadata, allocate_kv_cache
    if not uses_bf16_weight_kernel(torch.bfloat16, torch.device("cpu"), load_model(demo_model_dir).config):
        pytest.skip("this CPU has bf16 units: bfloat16 runs PyTorch's own bf16 products there")
    logits = {}
    for dtype in ("float32", "bfloat16"):
        loaded = load_model(demo_model_dir, "cpu", dtype)
        assert loaded.dtype == dtype
        m = loaded.model
        linears = [mod for mod in m.modules() if isinstance(mod, Linear)]
        assert all(mod.bf16_tiles == (dtype == "bfloat16") for mod in linears)
        assert m.embed_in.weight.dtype == torch.float32
        assert m.cache_dtype() == (torch.bfloat16 if dtype == "bfloat16" else torch.float32)
        ids = torch.arange(10, 30)
        kv = allocate_kv_cache(loaded.config, 4, 16, m.cache_dtype(), "cpu")
        meta = AttentionMetadata.build([20], [20], [[0, 1, 2, 3]], 16)
        with torch.inference_mode():
            logits[dtype] = m.compute_logits(m(ids, torch.arange(20), meta, kv))
    cos = torch.nn.functional.cosine_similarity(logits["float32"], logits["bfloat16"], dim=-1)
    assert float(cos.min()) > 0.999


@pytest.mark.parametrize("tiles_per_slice", [1, 3])
def test_many_rows_expand_the_weight_slice_by_slice(tiles_per_slice, monkeypatch, kernel_variant):
    """Past GEMM_ROWS the weight is expanded a slice of tiles at a time (kernels.expanded_linear); slices of 1 and 3
    tiles over 37 rows (the last slice partial) give the product of the whole weight."""
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(37, 64, generator=g), torch.randn(37, generator=g)
    x = torch.randn(kernels.GEMM_ROWS + 3, 64, generator=g)
    lin = _linear(w, b)
    whole = lin(x)
    monkeypatch.setattr(kernels, "EXPAND_FLOATS", tiles_per_slice * 8 * 64)
    torch.testing.assert_close(lin(x), whole, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(whole, x @ w.to(torch.bfloat16).float().t() + b, rtol=1e-5, atol=1e-4)
