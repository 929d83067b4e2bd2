"""Weight-only quantization: the numbers, the kernels, loading from every checkpoint format, quantized directories."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from neoxserve.model.loader import CheckpointError, load_model
from neoxserve.model.quant_format import (QuantConfig, QuantizationError, dequantize, pack_nibbles, quantize,
                                          quantize_int4, quantize_int8, unpack_nibbles)
from neoxserve.model.quant_linear import NATIVE_GEMM_ROWS, QuantLinear, quantize_model
from neoxserve.model.quantize_dir import write_quantized

INT8, INT4 = QuantConfig("int8"), QuantConfig("int4", 32)
PROMPT = [5, 17, 300, 42, 7, 99, 640, 3, 250, 11, 12, 13]


def _exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# --- the numbers -----------------------------------------------------------------------------------------------

def test_int8_error_is_at_most_half_a_step_per_row():
    w = torch.randn(64, 96) * torch.rand(64, 1) * 3
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-6).all())
    assert torch.equal(q.abs().amax(1), torch.full((64,), 127, dtype=torch.int8))   # each row uses its full range


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_error_is_at_most_half_a_step_per_group(group):
    w = torch.randn(16, 256) + torch.linspace(-2, 2, 256)       # groups with different ranges and offsets
    q, scale, zero = quantize_int4(w, group)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    deq = ((q.float().view(16, -1, group) - 8) * scale[..., None] + zero[..., None]).view(16, 256)
    step = scale.repeat_interleave(group, dim=1)
    assert bool(((deq - w).abs() <= step / 2 + 1e-5).all())
    # the group's minimum and maximum are levels 0 and 15
    groups = w.view(16, -1, group)
    torch.testing.assert_close(zero - 8 * scale, groups.amin(-1))
    torch.testing.assert_close(zero + 7 * scale, groups.amax(-1))


def test_nibble_packing_is_low_then_high():
    q = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    packed = pack_nibbles(q)
    assert packed.tolist() == [[1 | 2 << 4, 15]]
    assert torch.equal(unpack_nibbles(packed), q)


def test_constant_rows_and_groups_do_not_divide_by_zero():
    w = torch.zeros(4, 64)
    for cfg in (INT8, INT4):
        assert torch.equal(dequantize(cfg, quantize(cfg, w)), w)


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="int3"), "quantization must be one of none, int8, int4; got 'int3'"),
    (dict(method="int4", group_size=48), "quantization_group_size must be one of 32, 64, 128, 256; got 48"),
])
def test_config_refusals(kwargs, message):
    with pytest.raises(QuantizationError, match=_exact(message)):
        QuantConfig(**kwargs)


def test_settings_offer_exactly_what_the_model_supports():
    from neoxserve.commands.model_flags import setting_choices
    from neoxserve.choices import GROUP_SIZES, QUANTIZATION_METHODS

    assert setting_choices("quantization") == QUANTIZATION_METHODS
    assert setting_choices("quantization_group_size") == GROUP_SIZES


# --- the kernels -----------------------------------------------------------------------------------------------

def _module(cfg: QuantConfig, kernel: str, dtype: torch.dtype, parts: dict, bias: torch.Tensor | None = None):
    out_f, in_f = parts["weight"].shape[0], in_features(cfg, parts)
    m = QuantLinear(in_f, out_f, bias is not None, cfg, dtype, "cpu", kernel)
    state = m.runtime_tensors(parts, dtype, torch.device("cpu"))
    m.load_state_dict(state | ({"bias": bias.to(dtype)} if bias is not None else {}), assign=True)
    return m


def in_features(cfg: QuantConfig, parts: dict) -> int:
    return parts["weight"].shape[1] * (1 if cfg.method == "int8" else 2)


def _native_reference(x: torch.Tensor, cfg: QuantConfig, parts: dict) -> torch.Tensor:
    """What the native kernel computes, in float64: activations quantized per block of 32 (round to nearest,
    scale max|x| / 127) times the weight's levels; int4 (w = (q - 8) s + z = q s + (z - 8 s)) multiplies q s
    with the quantized x and the constant z - 8 s of each group with the exact x."""
    blocks = x.double().view(x.shape[0], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    xq = (torch.where(d > 0, torch.round(blocks / d), 0) * d).view_as(x)
    if cfg.method == "int8":
        return xq @ dequantize(cfg, parts).double().t()
    levels = dequantize(cfg, parts | {"weight_zero": 8 * parts["weight_scale"]}).double()      # q s
    constant = (parts["weight_zero"] - 8 * parts["weight_scale"]).double().repeat_interleave(cfg.group_size, dim=1)
    return xq @ levels.t() + x.double() @ constant.t()


@pytest.fixture(scope="module")
def native():
    from neoxserve.model import kernels
    if not kernels.load():
        pytest.fail("the native kernels did not build on this machine (a C++ compiler and AVX2 are expected)")


@pytest.mark.parametrize("cfg", [INT8, INT4, QuantConfig("int4", 128)], ids=lambda c: c.describe())
@pytest.mark.parametrize("kernel", ["native", "aten", "dequant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_kernels_compute_the_dequantized_product(cfg, kernel, dtype, rows, kernel_variant):
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(100, 256, generator=g), torch.randn(100, generator=g)
    x = torch.randn(rows, 256, generator=g).to(dtype)
    parts = quantize(cfg, w)
    m = _module(cfg, kernel, dtype, parts, b)
    ref = x.float() @ dequantize(cfg, parts).t() + b.to(dtype).float()
    out = m(x)
    assert out.dtype == dtype and out.shape == (rows, 100)
    # bf16 rounds the activations and the result; the native kernels quantize activations (per block of 32; above
    # NATIVE_GEMM_ROWS the VNNI GEMM per row or group), the expansion does not
    from neoxserve.model import kernels
    exact = dtype == torch.float32 and (kernel != "native" or (rows > NATIVE_GEMM_ROWS and not kernels.has_int8_gemm()))
    tol = 1e-4 if exact else (0.05 if dtype == torch.bfloat16 else 0.02) * float(ref.abs().max())
    assert float((out.float() - ref).abs().max()) < tol


@pytest.mark.parametrize("cfg", [INT8, INT4, QuantConfig("int4", 128)], ids=lambda c: c.describe())
@pytest.mark.parametrize("rows", [1, 3, NATIVE_GEMM_ROWS])
def test_native_kernel_is_exactly_the_block_quantized_product(cfg, rows, kernel_variant):
    """To float32 rounding, not just within the tolerance of activation quantization: a wrong nibble order, group
    scale or zero term shows here."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(37, 512, generator=g) + torch.linspace(-1, 1, 512)   # 37: a partial tile of 8 rows
    x = torch.randn(rows, 512, generator=g) * torch.linspace(0.1, 4, 512)
    x[0, :32] = 0                                                       # an all-zero block
    parts = quantize(cfg, w)
    out = _module(cfg, "native", torch.float32, parts)(x)
    ref = _native_reference(x, cfg, parts)
    assert float((out.double() - ref).abs().max()) < 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("cfg", [INT8, INT4, QuantConfig("int4", 32)], ids=lambda c: c.describe())
def test_many_rows_expand_the_weight_slice_by_slice(cfg, monkeypatch, kernel_variant):
    """Past NATIVE_GEMM_ROWS the native path expands the weight a slice of tiles at a time
    (kernels.expanded_linear): slices of 2 tiles over 37 rows (the last one partial) give the whole product."""
    from neoxserve.model import kernels
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(37, 128, generator=g), torch.randn(37, generator=g)
    x = torch.randn(NATIVE_GEMM_ROWS + 5, 128, generator=g)
    parts = quantize(cfg, w)
    m = _module(cfg, "native", torch.float32, parts, b)
    m.packed_gemm = False    # the expansion, where the VNNI GEMM would run (test_kernel_variants.py tests that)
    whole = m(x)
    monkeypatch.setattr(kernels, "EXPAND_FLOATS", 2 * 8 * 128)
    torch.testing.assert_close(m(x), whole, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(whole, x @ dequantize(cfg, parts).t() + b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cfg", [INT8, INT4], ids=lambda c: c.describe())
@pytest.mark.parametrize("kernel", ["native", "aten", "dequant"])
def test_portable_parts_invert_the_kernel_layout(cfg, kernel, native):
    parts = quantize(cfg, torch.randn(128, 64))
    back = _module(cfg, kernel, torch.float32, parts).portable_parts()
    assert back.keys() == parts.keys()
    for k in parts:
        assert torch.equal(back[k], parts[k]), k


def test_int4_needs_inputs_divisible_by_the_group():
    with pytest.raises(QuantizationError, match=_exact(
            "int4 with group size 128 needs input sizes that are multiples of it; a linear has 96 inputs")):
        QuantLinear(96, 32, False, QuantConfig("int4", 128))


# --- loading ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def float_dir(make_hf_model) -> Path:
    return make_hf_model(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2)[1]


def _buffers(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


def _assert_same_state(a, b) -> None:
    sa, sb = _buffers(a), _buffers(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _logits(model, runner_cls) -> torch.Tensor:
    return runner_cls(model, len(PROMPT)).step(PROMPT)


@pytest.mark.parametrize("cfg", [INT8, INT4], ids=lambda c: c.describe())
def test_quantized_while_loading_equals_quantizing_the_loaded_model(cfg, float_dir):
    """Every layer linear and the output head are swapped; the state equals quantizing the float model's weights."""
    loaded = load_model(float_dir, dtype="float32", quantization=cfg)
    assert loaded.quantization == cfg
    linears = [n for n, m in loaded.model.named_modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 2 * 4 + 1 and "embed_out" in linears
    reference = load_model(float_dir, dtype="float32").model
    # the split fp32 layout is undone before quantizing, so both see the same [out, in] weights
    _assert_same_state(loaded.model, quantize_model(reference, cfg))


@pytest.mark.parametrize("fmt", ["safetensors-sharded", "bin", "bin-sharded"])
def test_every_checkpoint_format_quantizes_alike(fmt, float_dir, tmp_path):
    tensors = load_file(float_dir / "model.safetensors")
    d = tmp_path / "m"
    d.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(float_dir / name, d / name)
    names = sorted(tensors)
    if fmt == "bin":
        torch.save(tensors, d / "pytorch_model.bin")
    else:
        ext, prefix = ("safetensors", "model") if fmt.startswith("safetensors") else ("bin", "pytorch_model")
        weight_map = {}
        for i in range(3):
            shard = f"{prefix}-{i + 1:05d}-of-00003.{ext}"
            part = {n: tensors[n].contiguous() for n in names[i::3]}
            save_file(part, d / shard) if ext == "safetensors" else torch.save(part, d / shard)
            weight_map.update({n: shard for n in part})
        index = "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
        (d / index).write_text(json.dumps({"weight_map": weight_map}))
    _assert_same_state(load_model(d, dtype="float32", quantization=INT4).model,
                       load_model(float_dir, dtype="float32", quantization=INT4).model)


def test_quantized_bfloat16_model_keeps_the_rest_in_bfloat16(float_dir, runner_cls):
    model = load_model(float_dir, dtype="bfloat16", quantization=INT8).model
    qkv = model.layers[0].attention.query_key_value
    assert qkv.kernel == "native"       # its scales are float32, as the native kernels take them
    assert qkv.weight.dtype == torch.int8 and qkv.weight_scale.dtype == torch.float32
    assert qkv.bias.dtype == torch.bfloat16 and model.embed_in.weight.dtype == torch.bfloat16
    logits = runner_cls(model, len(PROMPT), dtype=torch.bfloat16).step(PROMPT)
    assert logits.dtype == torch.float32 and bool(logits.isfinite().all())


# --- quantized directories (neoxserve quantize) ----------------------------------------------------------------

@pytest.mark.parametrize("cfg", [INT8, INT4], ids=lambda c: c.describe())
def test_quantized_directory_loads_as_stored(cfg, float_dir, tmp_path, runner_cls):
    out = write_quantized(float_dir, tmp_path / "q", cfg)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == cfg.to_hf()
    assert (out / "tokenizer.json").read_bytes() == (float_dir / "tokenizer.json").read_bytes()
    stored = load_file(out / "model.safetensors")
    qkv = "gpt_neox.layers.0.attention.query_key_value"
    assert stored[f"{qkv}.weight"].dtype == (torch.int8 if cfg.method == "int8" else torch.uint8)
    assert stored["embed_out.weight"].dtype == stored[f"{qkv}.weight"].dtype
    assert stored["gpt_neox.embed_in.weight"].dtype == torch.float32      # not a linear: copied as stored

    from_dir = load_model(out, dtype="float32")
    assert from_dir.quantization == cfg
    on_the_fly = load_model(float_dir, dtype="float32", quantization=cfg)
    _assert_same_state(from_dir.model, on_the_fly.model)
    torch.testing.assert_close(_logits(from_dir.model, runner_cls), _logits(on_the_fly.model, runner_cls),
                               rtol=0, atol=0)
    # asking for what it holds is fine; asking for something else is refused
    assert load_model(out, dtype="float32", quantization=cfg).quantization == cfg


def test_quantized_directory_in_shards(float_dir, tmp_path):
    out = write_quantized(float_dir, tmp_path / "q", INT8, shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).is_file() for s in shards)
    assert not (out / "model.safetensors").exists()
    _assert_same_state(load_model(out, dtype="float32").model,
                       load_model(float_dir, dtype="float32", quantization=INT8).model)


def test_quantize_command_writes_a_directory_generate_loads(float_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "q"
    run = subprocess.run([sys.executable, "-m", "neoxserve.cli", "quantize", "--model", str(float_dir), "--out",
                          str(out), "--quantization", "int4", "--quantization-group-size", "32"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"wrote {out} (int4 (group 32)) in " in run.stderr
    assert load_model(out).quantization == INT4
    refused = subprocess.run([sys.executable, "-m", "neoxserve.cli", "quantize", "--model", str(float_dir),
                              "--out", str(out), "--quantization", "int8"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 1
    assert refused.stderr == f"neoxserve quantize: {out} already exists and is not an empty directory\n"


# --- refusals --------------------------------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_quantized_directory_refuses_another_quantization(float_dir, tmp_path):
    out = write_quantized(float_dir, tmp_path / "q", INT4)
    with pytest.raises(CheckpointError, match=_exact(
            f"{out} holds weights quantized as int4 (group 32); they cannot be loaded as int8 (quantize the float "
            "checkpoint instead, or leave quantization at none to load them as they are)")):
        load_model(out, quantization=INT8)


@pytest.mark.parametrize("entry,message", [
    ({"quant_method": "gptq", "bits": 4}, "quantization_config with quant_method 'gptq' is not supported; only "
                                          "directories written by `neoxserve quantize` ('neoxserve') load"),
    ({"quant_method": "neoxserve", "format_version": 2, "weights": "int8"},
     "quantization_config format_version 2 is not supported (expected 1)"),
    ({"quant_method": "neoxserve", "format_version": 1, "weights": "int2"},
     "quantization_config weights must be 'int8' or 'int4'; got 'int2'"),
    ({"quant_method": "neoxserve", "format_version": 1, "weights": "int4", "group_size": 40},
     "quantization_group_size must be one of 32, 64, 128, 256; got 40"),
])
def test_unsupported_quantization_config(entry, message, float_dir, tmp_path):
    d = _copy(write_quantized(float_dir, tmp_path / "q", INT8), tmp_path / "bad")
    config = json.loads((d / "config.json").read_text())
    config["quantization_config"] = entry
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=_exact(f"{d / 'config.json'}: {message}")):
        load_model(d)


def test_quantized_part_missing_or_of_the_wrong_dtype(float_dir, tmp_path):
    d = write_quantized(float_dir, tmp_path / "q", INT8)
    tensors = load_file(d / "model.safetensors")
    name = "gpt_neox.layers.1.attention.dense"
    del tensors[f"{name}.weight_scale"]
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=_exact(
            f"{d}: tensor '{name}.weight_scale' is missing from model.safetensors")):
        load_model(d)
    tensors[f"{name}.weight_scale"] = torch.ones(64)
    tensors[f"{name}.weight"] = tensors[f"{name}.weight"].float()
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=_exact(
            f"{d / 'model.safetensors'}: tensor '{name}.weight' has dtype torch.float32, but int8 weights are "
            "torch.int8")):
        load_model(d)


def test_group_size_that_does_not_divide_the_model(float_dir, tmp_path):
    with pytest.raises(CheckpointError, match=_exact(
            f"{float_dir / 'config.json'}: int4 with group size 128 needs input sizes that are multiples of it; "
            "a linear has 64 inputs")):
        load_model(float_dir, quantization=QuantConfig("int4", 128))
    with pytest.raises(CheckpointError, match=_exact(
            f"{float_dir / 'config.json'}: int4 with group size 128 needs input sizes that are multiples of it; "
            "a linear has 64 inputs")):
        write_quantized(float_dir, tmp_path / "q", QuantConfig("int4", 128))
    assert not (tmp_path / "q").exists()


def test_quantizing_a_quantized_directory_is_refused(float_dir, tmp_path):
    out = write_quantized(float_dir, tmp_path / "q", INT8)
    with pytest.raises(CheckpointError, match=_exact(
            f"{out} is quantized already; quantize its float checkpoint instead")):
        write_quantized(out, tmp_path / "again", INT4)


# --- fallbacks -------------------------------------------------------------------------------------------------

def test_a_failed_native_build_falls_back_to_pytorchs_kernels(float_dir, monkeypatch, caplog, runner_cls):
    """Where no variant builds, `auto` tries each this CPU can run, widest first, says so, and the quantized linears
    run PyTorch's kernels, with the same tokens."""
    import logging

    from neoxserve.model import kernels

    monkeypatch.setattr(kernels, "_build", lambda name: "g++: command not found")
    with caplog.at_level(logging.WARNING, logger="neoxserve.model.kernels"):
        fallback_loaded = load_model(float_dir, dtype="float32", quantization=INT8)
    narrowest = kernels.runnable()[0]
    assert (f"quantized kernels: building wq_gemm.cpp for {narrowest} failed, using PyTorch's kernels instead "
            "(slower on AVX2 CPUs): g++: command not found") in caplog.text
    assert caplog.text.count("g++: command not found") == len(kernels.runnable())
    assert fallback_loaded.kernels == "none" and not kernels.load()
    fallback = fallback_loaded.model
    assert {m.kernel for m in fallback.modules() if isinstance(m, QuantLinear)} == {"aten"}
    monkeypatch.undo()
    native_loaded = load_model(float_dir, dtype="float32", quantization=INT8)
    assert native_loaded.kernels == kernels.auto_variant()
    native = native_loaded.model
    assert {m.kernel for m in native.modules() if isinstance(m, QuantLinear)} == {"native"}
    a, b = _logits(fallback, runner_cls), _logits(native, runner_cls)
    assert float((a - b).abs().max()) < 0.05 * float(a.abs().max())


def test_cuda_says_at_start_up_that_it_has_no_quantized_kernel(caplog):
    import logging

    from neoxserve.model.quant_linear import choose_kernel, log_quantization

    assert choose_kernel(torch.device("cuda")) == "dequant"
    with caplog.at_level(logging.WARNING, logger="neoxserve.model.quant_linear"):
        log_quantization(INT8, "dequant", torch.device("cuda:0"))
    assert caplog.messages == [
        "quantization int8 on cuda:0: there is no quantized kernel for this device; the weights stay int8 in memory "
        "and are expanded for every product, which saves memory but is slower than unquantized weights"]
