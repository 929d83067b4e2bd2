"""load_model: every weight format and config style gives transformers' logits; bad directories fail clearly."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from neoxserve.model.loader import CheckpointError, load_model

PROMPT = [5, 17, 300, 42, 7, 99, 640, 3, 250]


@pytest.fixture(scope="module")
def reference(make_hf_model):
    """(hf model, its save_pretrained directory, transformers' logits for PROMPT)."""
    hf, path = make_hf_model(num_hidden_layers=2, use_parallel_residual=False, rotary_pct=0.5)
    with torch.inference_mode():
        logits = hf(torch.tensor([PROMPT])).logits[0]
    return hf, path, logits


@pytest.fixture
def checkpoint(reference) -> dict[str, torch.Tensor]:
    """The reference weights under their checkpoint names."""
    return load_file(reference[1] / "model.safetensors")


def _logits(model, runner_cls) -> torch.Tensor:
    return runner_cls(model, len(PROMPT)).step(PROMPT)


def _copy_dir_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(src / name, dst / name)
    return dst


def _write_sharded(directory: Path, tensors: dict, num_shards: int, fmt: str) -> None:
    names = sorted(tensors)
    weight_map = {}
    for i in range(num_shards):
        ext = "safetensors" if fmt == "safetensors" else "bin"
        prefix = "model" if fmt == "safetensors" else "pytorch_model"
        shard = f"{prefix}-{i + 1:05d}-of-{num_shards:05d}.{ext}"
        part = {n: tensors[n].contiguous() for n in names[i::num_shards]}
        if fmt == "safetensors":
            save_file(part, directory / shard)
        else:
            torch.save(part, directory / shard)
        weight_map.update({n: shard for n in part})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (directory / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _legacy_buffers(tensors: dict, num_layers: int, max_pos: int, rot: int) -> dict:
    extra = {}
    for i in range(num_layers):
        p = f"gpt_neox.layers.{i}.attention."
        extra[p + "bias"] = torch.tril(torch.ones(max_pos, max_pos, dtype=torch.bool)).view(1, 1, max_pos, max_pos)
        extra[p + "masked_bias"] = torch.tensor(-1e9)
        extra[p + "rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, rot, 2).float() / rot)
    return {**tensors, **extra}


def test_save_pretrained_safetensors(reference, runner_cls):
    _, path, ref = reference
    torch.testing.assert_close(_logits(load_model(path, dtype="float32").model, runner_cls), ref, atol=1e-4, rtol=0)


def test_save_pretrained_sharded_safetensors(reference, runner_cls, tmp_path):
    hf, path, ref = reference
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    shutil.copy(path / "tokenizer.json", tmp_path)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    torch.testing.assert_close(_logits(load_model(tmp_path, dtype="float32").model, runner_cls), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["bin", "bin-sharded", "bin-legacy-buffers", "safetensors-sharded-legacy"])
def test_other_weight_formats(fmt, reference, checkpoint, runner_cls, tmp_path):
    _, path, ref = reference
    d = _copy_dir_without_weights(path, tmp_path / "m")
    if fmt == "bin":
        torch.save(checkpoint, d / "pytorch_model.bin")
    elif fmt == "bin-sharded":
        _write_sharded(d, checkpoint, 3, "bin")
    elif fmt == "bin-legacy-buffers":
        torch.save(_legacy_buffers(checkpoint, 2, 512, 8), d / "pytorch_model.bin")
    else:
        _write_sharded(d, _legacy_buffers(checkpoint, 2, 64, 8), 2, "safetensors")
    torch.testing.assert_close(_logits(load_model(d, dtype="float32").model, runner_cls), ref, atol=1e-4, rtol=0)


def test_transformers4_config_keys(reference, runner_cls, tmp_path):
    """The published StableLM-Alpha style: rotary_pct / rotary_emb_base / torch_dtype, no rope_parameters."""
    _, path, ref = reference
    d = tmp_path / "m"
    shutil.copytree(path, d)
    config = json.loads((d / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.pop("dtype", None)
    config.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=rope["rope_theta"],
                  torch_dtype="float32", transformers_version="4.28.1")
    (d / "config.json").write_text(json.dumps(config))
    loaded = load_model(d, dtype="float32")
    assert loaded.config.rotary_pct == rope["partial_rotary_factor"]
    torch.testing.assert_close(_logits(loaded.model, runner_cls), ref, atol=1e-4, rtol=0)


def test_loaded_model_fields(reference):
    _, path, _ = reference
    loaded = load_model(path)
    assert loaded.path == path
    assert loaded.config.num_hidden_layers == 2
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("hello world")) == "hello world"
    assert not any(p.requires_grad for p in loaded.model.parameters())


@pytest.mark.parametrize("bf16_linears", [False, True], ids=["torch-bf16", "bf16-linears"])
def test_bfloat16_load(bf16_linears, reference, runner_cls, monkeypatch):
    """bfloat16 as PyTorch computes it (CPUs with bf16 units, CUDA; forced here) and as bf16 linears with float32
    arithmetic (CPUs without bf16 units, where the native kernels build: this machine's default for bfloat16)."""
    from neoxserve.model import dtype_policy
    if not bf16_linears:
        monkeypatch.setattr(dtype_policy, "uses_bf16_weight_kernel", lambda *a: False)
    elif not dtype_policy.uses_bf16_weight_kernel(torch.bfloat16, torch.device("cpu"), reference[0].config):
        pytest.skip("this CPU has bf16 units or no native kernels: bfloat16 runs PyTorch's own products here")
    _, path, ref = reference
    model = load_model(path, dtype="bfloat16").model
    for name, p in model.named_parameters():
        linear_weight = name.endswith("weight") and p.dim() >= 2 and "embed_in" not in name
        assert p.dtype == (torch.bfloat16 if linear_weight or not bf16_linears else torch.float32), name
        # the storage holds exactly this tensor: no fp32 buffer kept alive behind a view
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size(), name
    logits = runner_cls(model, len(PROMPT), dtype=model.cache_dtype()).step(PROMPT)
    assert logits.dtype == torch.float32
    # bf16 keeps ~3 significant digits; through a few layers the logits drift by a few percent of their scale
    assert (logits - ref).abs().max() < 0.05 * ref.abs().max()
    assert (logits.argmax(-1) == ref.argmax(-1)).float().mean() > 0.7


@pytest.mark.parametrize("flags,expected", [
    ("fpu sse avx2 fma avx512f", torch.float32),                       # AVX2 / AVX-512 without bf16 units
    ("fpu avx2 avx512f avx512_bf16", torch.bfloat16),
    ("fpu avx2 amx_bf16 amx_tile", torch.bfloat16),
])
def test_auto_dtype_on_cpu_is_bfloat16_only_with_bf16_units(flags, expected, reference, monkeypatch, tmp_path):
    from neoxserve.model import dtype_policy

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(cpuinfo if f == "/proc/cpuinfo" else f, *a, **k))
    dtype_policy.cpu_has_native_bf16.cache_clear()
    try:
        model = load_model(reference[1], dtype="auto").model
    finally:
        monkeypatch.undo()
        dtype_policy.cpu_has_native_bf16.cache_clear()
    assert {p.dtype for p in model.parameters()} == {expected}


# --- bad directories: each error names the file (and tensor) ---------------------------------------------------

def _broken(path: Path, tmp_path: Path) -> Path:
    d = tmp_path / "broken"
    shutil.copytree(path, d)
    return d


def _edit_config(d: Path, **changes) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config))


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match=f"model directory {tmp_path / 'nope'} does not exist"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_missing_config_or_tokenizer(name, reference, tmp_path):
    d = _broken(reference[1], tmp_path)
    (d / name).unlink()
    with pytest.raises(CheckpointError, match=f"{d / name} is missing"):
        load_model(d)


@pytest.mark.parametrize("arch,message", [
    ("StableLMAlphaForCausalLM", "StableLMAlphaForCausalLM (StableLM-Alpha v2) is not supported yet"),
    ("LlamaForCausalLM", "architecture 'LlamaForCausalLM' is not supported; expected GPTNeoXForCausalLM"),
])
def test_unsupported_architecture(arch, message, reference, tmp_path):
    d = _broken(reference[1], tmp_path)
    _edit_config(d, architectures=[arch])
    with pytest.raises(CheckpointError, match="config.json: " + message.replace("(", r"\(").replace(")", r"\)")):
        load_model(d)


def test_missing_tensor(reference, checkpoint, tmp_path):
    d = _broken(reference[1], tmp_path)
    del checkpoint["gpt_neox.layers.1.mlp.dense_4h_to_h.bias"]
    save_file(checkpoint, d / "model.safetensors")
    with pytest.raises(CheckpointError,
                       match=re.escape("tensor 'gpt_neox.layers.1.mlp.dense_4h_to_h.bias' is missing from "
                                       "model.safetensors")):
        load_model(d)


def test_unexpected_tensor(reference, checkpoint, tmp_path):
    d = _broken(reference[1], tmp_path)
    checkpoint["gpt_neox.layers.0.attention.extra.weight"] = torch.zeros(2)
    save_file(checkpoint, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=re.escape("model.safetensors: unexpected tensor "
                                                        "'gpt_neox.layers.0.attention.extra.weight'")):
        load_model(d)


def test_shape_mismatch_with_config(reference, checkpoint, tmp_path):
    d = _broken(reference[1], tmp_path)
    checkpoint["gpt_neox.layers.1.attention.dense.weight"] = torch.zeros(64, 32)
    save_file(checkpoint, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'gpt_neox.layers.1.attention.dense.weight' "
                                              r"has shape \[64, 32\], but config.json implies \[64, 64\]"):
        load_model(d)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_truncated_weight_file(fmt, reference, checkpoint, tmp_path):
    d = _copy_dir_without_weights(reference[1], tmp_path / "m")
    file = d / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    if fmt == "safetensors":
        save_file(checkpoint, file)
    else:
        torch.save(checkpoint, file)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{file.name}: cannot read"):
        load_model(d)


def test_corrupt_weight_file(reference, tmp_path):
    d = _broken(reference[1], tmp_path)
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=re.escape("model.safetensors: cannot read weight file")):
        load_model(d)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_index_names_missing_shard(fmt, reference, checkpoint, tmp_path):
    d = _copy_dir_without_weights(reference[1], tmp_path / "m")
    _write_sharded(d, checkpoint, 3, fmt)
    shard = sorted(d.glob("*-00002-of-00003.*"))[0]
    shard.unlink()
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    with pytest.raises(CheckpointError, match=f"{index}: names shard {shard.name}, which is missing"):
        load_model(d)


def test_no_weights_at_all(reference, tmp_path):
    d = _copy_dir_without_weights(reference[1], tmp_path / "m")
    with pytest.raises(CheckpointError, match="no weights found"):
        load_model(d)


_PEAK_RSS_SCRIPT = """
import json, sys, threading, time
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
from neoxserve.model.loader import load_model
from neoxserve.model.quant_format import QuantConfig
load_model(sys.argv[1], dtype="float32")  # warm up: one-time allocations of torch, tokenizers, safetensors
base, peak, done = anon(), [0], []
def poll():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.0005)
thread = threading.Thread(target=poll, daemon=True)
thread.start()
loaded = load_model(sys.argv[1], dtype=sys.argv[2], quantization=QuantConfig(sys.argv[3], 128))
done.append(1)
thread.join()
state = loaded.model.state_dict().values()
print(json.dumps({"peak_growth": peak[0] - base, "params": sum(t.numel() * t.element_size() for t in state)}))
"""


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("dtype,quantization", [("bfloat16", "none"), ("float32", "int8"), ("float32", "int4")])
def test_load_of_fp32_checkpoint_never_holds_a_fp32_copy(fmt, dtype, quantization, tmp_path, tokenizer_json):
    """Peak anonymous memory while loading stays near the loaded model (bf16, or int8 / int4 linears), far below
    it + a fp32 copy of the checkpoint."""
    import subprocess
    import sys

    from neoxserve.model.demo import demo_config, random_weights

    config = demo_config(1000) | {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 16}
    weights = random_weights(config, seed=0)
    fp32_bytes = sum(t.nbytes for t in weights.values())
    if fmt == "safetensors":
        save_file(weights, tmp_path / "model.safetensors")
    else:
        torch.save(weights, tmp_path / "pytorch_model.bin")
    del weights
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(tokenizer_json, tmp_path / "tokenizer.json")

    out = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, str(tmp_path), dtype, quantization],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    # of the fp32 bytes: bf16; int8; int4 plus a scale and a zero (4 bytes each) per group of 128
    loaded_fraction = {"none": 1 / 2, "int8": 1 / 4, "int4": 1 / 8 + 1 / 64}[quantization]
    assert result["params"] < fp32_bytes * loaded_fraction * 1.1
    assert result["peak_growth"] < result["params"] + fp32_bytes // 8, result


@pytest.mark.parametrize("fmt,dtype", [("safetensors", "float32"), ("bin", "float32"), ("safetensors", "bfloat16")])
def test_weights_are_in_memory_of_their_own_not_mapped_from_the_file(fmt, dtype, reference, checkpoint, tmp_path,
                                                                     runner_cls):
    """Mapped weights are paged in from disk on first use (the first request would pay for it) and can be
    dropped by the kernel later. Overwriting the file after loading must not change the model."""
    d = _copy_dir_without_weights(reference[1], tmp_path / "m")
    tensors = {k: v.to(getattr(torch, dtype)) for k, v in checkpoint.items()}
    file = d / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    save_file(tensors, file) if fmt == "safetensors" else torch.save(tensors, file)
    model = load_model(d, dtype=dtype).model
    before = runner_cls(model, len(PROMPT), dtype=getattr(torch, dtype)).step(PROMPT)
    size = file.stat().st_size
    with open(file, "r+b") as f:          # in place: the same inode, as a mapping would see it
        f.seek(size // 4)
        f.write(b"\x7f" * (size // 2))
    after = runner_cls(model, len(PROMPT), dtype=getattr(torch, dtype)).step(PROMPT)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
