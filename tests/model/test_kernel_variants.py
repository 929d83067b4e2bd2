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
