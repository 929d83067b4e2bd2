"""The native kernels per instruction set (model/kernels: VARIANTS): which one `auto` picks, forcing one, what each
build holds, and the bf16 x bf16 GEMV of the AVX512-BF16 build. The kernels' products against the reference are in
test_quant.py, test_bf16_linear.py and test_attention.py, once per variant this CPU can run (kernel_variant)."""
from __future__ import annotations

import itertools
import logging

import pytest
import torch

from neoxserve.model import kernels
from neoxserve.model.loader import load_model
from neoxserve.model.neox import Linear

AVX2_ONLY = frozenset({"fpu", "sse2", "avx", "avx2", "fma", "f16c"})


@pytest.fixture
def restore_selection():
    before = (kernels._active, kernels._selected)
    yield
    kernels._active, kernels._selected = before


def test_the_setting_offers_exactly_the_variants():
    from neoxserve.commands.model_flags import setting_choices
    assert setting_choices("kernels") == ("auto", *kernels.VARIANTS)


def test_each_variant_needs_the_flags_of_the_narrower_ones():
    names = list(kernels.VARIANTS)
    for narrow, wide in itertools.pairwise(names):
        assert set(kernels.VARIANTS[narrow].cpu_flags) < set(kernels.VARIANTS[wide].cpu_flags)


def test_auto_picks_the_widest_variant_this_cpu_has():
    """This machine's rule, whatever the machine: every flag of the chosen variant is the CPU's, and the next wider
    variant (if any) needs a flag the CPU lacks."""
    names = list(kernels.VARIANTS)
    chosen = kernels.auto_variant()
    flags = kernels.cpu_flags()
    if chosen is None:
        assert not set(kernels.VARIANTS["avx2"].cpu_flags) <= flags
        return
    assert set(kernels.VARIANTS[chosen].cpu_flags) <= flags
    wider = names[names.index(chosen) + 1:]
    assert all(kernels.missing_flags(n) for n in wider)
    assert kernels.runnable() == names[:names.index(chosen) + 1]


def test_a_cpu_with_avx2_only_gets_avx2_and_never_builds_a_wider_variant(monkeypatch, restore_selection):
    built = []
    monkeypatch.setattr(kernels, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setattr(kernels, "_build", lambda name: built.append(name) or "")
    assert kernels.runnable() == ["avx2"]
    assert kernels.select("auto") == "avx2"
    assert built == ["avx2"]
    assert not kernels.has_bf16_gemv() and not kernels.cpu_has_bf16()


@pytest.mark.parametrize("name", ["avx512", "avx512_vnni", "avx512_bf16"])
def test_forcing_a_variant_the_cpu_lacks_is_an_error_naming_the_flags(name, monkeypatch, restore_selection):
    monkeypatch.setattr(kernels, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setattr(kernels, "_build", lambda n: pytest.fail(f"{n} must not be built on this CPU"))
    missing = [f for f in kernels.VARIANTS[name].cpu_flags if f not in AVX2_ONLY]
    with pytest.raises(kernels.KernelsError) as e:
        kernels.select(name)
    assert str(e.value) == (f"kernels {name} were asked for, but this CPU lacks {', '.join(missing)} (it can run: "
                            "avx2); set kernels to auto or one of those")


def test_load_model_refuses_a_forced_variant_the_cpu_lacks(demo_model_dir, monkeypatch, restore_selection):
    monkeypatch.setattr(kernels, "cpu_flags", lambda: AVX2_ONLY)
    with pytest.raises(ValueError, match="kernels avx512_bf16 were asked for, but this CPU lacks avx512f, "):
        load_model(demo_model_dir, kernels="avx512_bf16")


def test_unknown_variant_is_refused(restore_selection):
    with pytest.raises(kernels.KernelsError, match="kernels must be auto or one of avx2, avx512"):
        kernels.select("sse4")


def test_each_build_holds_its_instruction_sets(kernel_variant):
    """The ops of a variant come from its own build (its own namespace), compiled with its flags."""
    features = kernels.ops().features().split(",")
    expected = {"avx2": ["avx2"], "avx512": ["avx2", "avx512"], "avx512_vnni": ["avx2", "avx512", "avx512_vnni"],
                "avx512_bf16": ["avx2", "avx512", "avx512_vnni", "avx512_bf16"]}[kernel_variant]
    assert features == expected
    assert kernels.active() == kernel_variant


def test_the_choice_is_logged_and_reported(demo_model_dir, caplog, restore_selection):
    with caplog.at_level(logging.INFO, logger="neoxserve.model.kernels"):
        loaded = load_model(demo_model_dir, dtype="float32")
    assert loaded.kernels == (kernels.auto_variant() or "none")
    if loaded.kernels != "none":
        assert f"native kernels: {loaded.kernels} (chosen from the CPU's flags; this CPU can run " in caplog.text


def test_a_forced_variant_is_reported(demo_model_dir, kernel_variant, restore_selection):
    loaded = load_model(demo_model_dir, dtype="float32", kernels=kernel_variant)
    assert loaded.kernels == kernel_variant == kernels.active()


# --- bf16 x bf16 GEMV (AVX512-BF16 builds) ---------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(37, 100), (64, 768), (8, 32)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_bf16_gemv_is_the_float32_sum_rounded_once(rows, shape, bf16_variant):
    """bfloat16 products summed in float32 and rounded to bfloat16 once: within one bf16 rounding of the exact
    product (37 outputs leave partial blocks of rows, 100 inputs a partial block of 32 columns)."""
    n, k = shape
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(n, k, generator=g).to(torch.bfloat16)
    x = torch.randn(rows, k, generator=g).to(torch.bfloat16)
    out = kernels.ops().bf16_gemv(x, w)
    ref = x.double() @ w.double().t()
    assert out.dtype == torch.bfloat16 and out.shape == (rows, n)
    err = (out.double() - ref).abs()
    # bf16 has 8 significant bits: rounding once is at most 2^-8 relative, and float32 sums add little
    assert bool((err <= ref.abs() * 2 ** -8 + 1e-4 * float(ref.abs().max())).all())
    assert kernels.has_bf16_gemv()


def test_bf16_gemv_refuses_too_many_rows(bf16_variant):
    x, w = torch.zeros(5, 32, dtype=torch.bfloat16), torch.zeros(8, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="bf16_gemv: 1 to 4 rows of x, not 5"):
        kernels.ops().bf16_gemv(x, w)


def test_builds_without_bf16_refuse_the_gemv(no_bf16_variant):
    assert not kernels.has_bf16_gemv()
    x, w = torch.zeros(1, 32, dtype=torch.bfloat16), torch.zeros(8, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="has no AVX512-BF16 code"):
        kernels.ops().bf16_gemv(x, w)


@pytest.mark.parametrize("rows", [1, 4, 5])
def test_bf16_linear_with_native_gemv_matches_pytorchs(rows, bf16_variant):
    """neox.Linear with native_gemv: up to BF16_GEMV_ROWS rows through the GEMV, more through PyTorch; both
    within bf16 rounding of PyTorch's own bf16 product, bias included."""
    g = torch.Generator().manual_seed(3)
    lin = Linear(96, 40).to(torch.bfloat16)
    with torch.no_grad():
        lin.bias.normal_(generator=g)
    x = torch.randn(rows, 96, generator=g).to(torch.bfloat16)
    with torch.inference_mode():
        ref = lin(x)
        lin.native_gemv = True
        out = lin(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2 ** -7, atol=2e-2)


def test_a_bfloat16_model_runs_the_gemv_where_the_kernels_have_it(demo_model_dir, bf16_variant, runner_cls):
    loaded = load_model(demo_model_dir, dtype="bfloat16", kernels=bf16_variant)
    linears = [m for m in loaded.model.modules() if isinstance(m, Linear)]
    assert linears and all(m.native_gemv for m in linears)
    prompt = list(range(5, 17))
    logits = {}
    for native in (True, False):
        loaded.model.use_native_gemv(native)
        runner = runner_cls(loaded.model, 32)
        runner.step(prompt)
        logits[native] = runner.step([17])[-1]
    cos = torch.nn.functional.cosine_similarity(logits[True], logits[False], dim=0)
    assert float(cos) > 0.999


# --- the bfloat16 expansion for many rows ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["int8", "int4"])
def test_dequantize_to_bfloat16_rounds_the_float32_expansion(method, kernel_variant):
    from neoxserve.model.quant_format import QuantConfig, quantize
    from neoxserve.model.quant_linear import QuantLinear
    cfg = QuantConfig(method, 64)
    w = torch.randn(37, 128)
    m = QuantLinear(128, 37, False, cfg, torch.float32, "cpu", "native")
    m.load_state_dict(m.runtime_tensors(quantize(cfg, w), torch.float32, torch.device("cpu")), assign=True)
    zero = None if method == "int8" else m.weight_zero
    bits = 8 if method == "int8" else 4
    f32 = kernels.ops().dequantize(m.weight, m.weight_scale, zero, 64, bits, 37)
    b16 = kernels.ops().dequantize(m.weight, m.weight_scale, zero, 64, bits, 37, True)
    assert b16.dtype == torch.bfloat16 and torch.equal(b16, f32.to(torch.bfloat16))


# --- the VNNI GEMM over the packed tiles (int8_gemm, int4_gemm) -------------------------------------------------

def _packed(method: str, group: int, n: int, k: int, seed: int):
    from neoxserve.model.quant_format import QuantConfig, quantize
    from neoxserve.model.quant_linear import QuantLinear
    cfg = QuantConfig(method, group)
    g = torch.Generator().manual_seed(seed)
    m = QuantLinear(k, n, False, cfg, torch.float32, "cpu", "native")
    parts = quantize(cfg, torch.randn(n, k, generator=g))
    m.load_state_dict(m.runtime_tensors(parts, torch.float32, torch.device("cpu")), assign=True)
    return m, parts, g


def _quantized_rows(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's activation quantization, in float32 as it does it: q = round(x * (127 / max|x|)) per block of
    each row, d = max|x| / 127; q [M, K] and d [M, K / block]."""
    xb = x.view(x.shape[0], -1, block)
    mx = xb.abs().amax(-1, keepdim=True)
    inv = torch.where(mx > 0, torch.tensor(127.0) / mx, torch.zeros_like(mx))
    return torch.round(xb * inv).view_as(x), (mx / 127.0).squeeze(-1)


def _gemm_references(method: str, parts: dict, x: torch.Tensor, group: int, block: int):
    """(float64 product with the dequantized weight, float64 product with the kernel's quantized activations)."""
    from neoxserve.model.quant_format import QuantConfig, dequantize, unpack_nibbles
    exact = x.double() @ dequantize(QuantConfig(method, group), parts).double().t()
    if method == "int8":
        q, d = _quantized_rows(x, block)
        w = parts["weight"].double()                                          # [N, K]
        blocks = torch.einsum("mgb,ngb->mng", q.double().view(x.shape[0], -1, block),
                              w.view(w.shape[0], -1, block))
        emulated = (blocks * d.double()[:, None, :]).sum(-1) * parts["weight_scale"].double()
    else:
        q, d = _quantized_rows(x, group)
        lev = unpack_nibbles(parts["weight"]).double()                        # [N, K] in 0..15
        s, z = parts["weight_scale"].double(), parts["weight_zero"].double()  # [N, G]
        dots = torch.einsum("mgb,ngb->mng", q.double().view(x.shape[0], -1, group),
                            lev.view(lev.shape[0], -1, group))
        xs = x.double().view(x.shape[0], -1, group).sum(-1)                  # [M, G] exact sums
        qsum = q.double().view(x.shape[0], -1, group).sum(-1)               # the -8 s term takes quantized x
        emulated = ((dots - 8 * qsum[:, None, :]) * d.double()[:, None, :] * s[None]).sum(-1) + xs @ z.t()
    return exact, emulated


GEMM_CASES = [("int8", 32, 0), ("int8", 128, 0), ("int8", 256, 256), ("int8", 128, 32),
              ("int4", 64, 0), ("int4", 128, 0), ("int4", 32, 0), ("int4", 256, 0)]


@pytest.mark.parametrize("rows", [5, 17, 64, 131, 300])
@pytest.mark.parametrize("method,group,block", GEMM_CASES, ids=lambda v: str(v))
def test_packed_gemm_matches_the_reference(method, group, block, rows, vnni_variant):
    """int8_gemm / int4_gemm on the same tiles the decode kernels read. Against the product with the kernel's own
    activation quantization emulated in float64: float32 rounding only (the int32 sums are exact, each block's
    float32 conversion and sum rounds at 2^-24 relative), so 1e-5 of the output scale. Against the exact product
    loosely: the activation quantization's error is about max|x| / 254 per element, uniform, so for unit x and w
    its sum over K is ~ sqrt(K) * 0.4 / 127 * |w| standard deviation; 2% of the output scale bounds it with room.
    37 and 45 outputs leave partial tiles; rows 5..300 leave partial blocks of 8 rows and several L2 chunks."""
    n, k = (37, 512) if rows % 2 else (45, 768)
    m, parts, g = _packed(method, group, n, k, rows)
    x = torch.randn(rows, k, generator=g)
    block = block or k
    if method == "int8":
        from neoxserve.model import weight_tiles
        out = kernels.ops().int8_gemm(x, m.weight, m.weight_scale, weight_tiles.int8_block_sums(m.weight, block),
                                      block)
        exact, emulated = _gemm_references(method, parts, x, group, block)
    else:
        out = kernels.ops().int4_gemm(x, m.weight, m.weight_scale, m.weight_zero, group, n)
        exact, emulated = _gemm_references(method, parts, x, group, group)
    assert out.shape == (rows, n) and out.dtype == torch.float32
    scale = float(exact.abs().max())
    assert float((out.double() - emulated).abs().max()) <= 1e-5 * scale
    assert float((out.double() - exact).abs().max()) <= 2e-2 * scale


@pytest.mark.parametrize("method,group", [("int8", 128), ("int4", 128), ("int4", 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quant_linear_runs_the_packed_gemm_above_the_gemv_rows(method, group, dtype, vnni_variant, monkeypatch):
    """QuantLinear above NATIVE_GEMM_ROWS: the GEMM where it is chosen (int4 groups below INT4_GEMM_MIN_GROUP with
    bfloat16 activations on a bf16 CPU keep the expansion); same output as the expansion within the activation
    quantization's error, bias included."""
    from neoxserve.model.quant_linear import NATIVE_GEMM_ROWS
    m, _, g = _packed(method, group, 40, 256, 1)
    with torch.no_grad():
        m.bias = torch.nn.Parameter(torch.randn(40, generator=g), requires_grad=False)
    x = torch.randn(NATIVE_GEMM_ROWS + 3, 256, generator=g).to(dtype)
    calls = []
    real = kernels.ops()
    gemm_op = "int8_gemm" if method == "int8" else "int4_gemm"

    class Spy:
        def __getattr__(self, name):
            if name == gemm_op:
                calls.append(name)
            return getattr(real, name)
    monkeypatch.setattr(kernels, "ops", lambda: Spy())
    with torch.inference_mode():
        out = m(x)
        m.packed_gemm = False
        expanded = m(x)
    expected_gemm = method == "int8" or group >= kernels.INT4_GEMM_MIN_GROUP or dtype != torch.bfloat16 \
        or not kernels.cpu_has_bf16()
    assert calls == ([gemm_op] if expected_gemm else [])
    assert out.dtype == dtype
    scale = float(expanded.float().abs().max())
    torch.testing.assert_close(out.float(), expanded.float(), rtol=0, atol=2e-2 * scale)


def test_builds_without_vnni_refuse_the_packed_gemm(no_vnni_variant):
    assert not kernels.has_int8_gemm()
    w = torch.zeros(1, 1, 8, 32, dtype=torch.int8)
    with pytest.raises(RuntimeError, match=rf"int8_gemm: this build \(neoxserve_{no_vnni_variant}\) has no "
                                           "AVX512-VNNI code"):
        kernels.ops().int8_gemm(torch.zeros(17, 32), w, torch.ones(8), torch.zeros(1, 1, 8), 32)


def test_packed_gemm_refuses_a_block_that_does_not_divide_k(vnni_variant):
    w = torch.zeros(1, 3, 8, 32, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="int8_gemm: block 64 must be a multiple of 32 dividing 96"):
        kernels.ops().int8_gemm(torch.zeros(17, 96), w, torch.ones(8), torch.zeros(1, 1, 8), 64)
