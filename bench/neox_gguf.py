"""A neoxserve model directory (GPT-NeoX, safetensors) as GGUF files for llama.cpp: f16, then Q8_0 / Q4_0.

The f16 file is written with the `gguf` package, tensor by tensor (memory stays near one tensor), with the
GPT-NeoX metadata llama.cpp reads (`gptneox` architecture) and the model's byte-level BPE tokenizer (`gpt2`
model, GPT-NeoX-20B's pre-tokenizer). Tensor names come from gguf's own name map; the fused QKV weight and bias
are reordered from the checkpoint's per-head interleave ([heads, 3, head_dim]) to llama.cpp's [q | k | v] blocks.
One-dimensional tensors (norms, biases) stay float32, as llama.cpp's converter writes them. The quantized files
are made by llama.cpp's own quantizer (`llama_model_quantize`) with its default parameters, so the tensor types
(which may differ per tensor, e.g. the output head of a Q4_0 file) are llama.cpp's choice.
"""
from __future__ import annotations

import ctypes
import json
from collections import Counter
from pathlib import Path

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

QUANT_TYPES = {"Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
PRE_TOKENIZER = "olmo"   # llama.cpp's name for the GPT-NeoX-20B pre-tokenizer (OLMo uses that tokenizer)


def _tensor_sources(model_dir: Path) -> dict[str, Path]:
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())["weight_map"]
    return {name: model_dir / shard for name, shard in index.items()}


def _vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Token strings, token types and merges, padded with unused tokens to the embedding's row count."""
    import gguf

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    types = {}
    for i, added in tok.get_added_tokens_decoder().items():
        by_id[i] = added.content
        types[i] = gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            toktypes.append(types.get(i, gguf.TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, toktypes, merges


def _to_gguf_layout(name: str, t, heads: int):
    """The checkpoint tensor as llama.cpp's converter stores it (numpy, f16 for matrices, f32 for vectors)."""
    if ".attention.query_key_value." in name:
        hd = t.shape[0] // (3 * heads)
        t = t.reshape(heads, 3, hd, -1).transpose(0, 1).reshape(t.shape)
    return t.float().numpy() if t.dim() == 1 else t.half().numpy()


def write_f16(model_dir: Path, out: Path) -> Path:
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    heads, layers = config["num_attention_heads"], config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPTNEOX, layers)
    sources = _tensor_sources(model_dir)

    tmp = out.with_suffix(".partial")
    w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPTNEOX])
    w.add_name("neoxserve benchmark (random weights)")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(layers)
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_rope_dimension_count(int(config["rotary_pct"] * (config["hidden_size"] // heads)))
    w.add_rope_freq_base(float(config["rotary_emb_base"]))
    w.add_head_count(heads)
    w.add_parallel_residual(config["use_parallel_residual"])
    w.add_layer_norm_eps(config["layer_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    tokens, toktypes, merges = _vocab(model_dir, config["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    w.add_token_merges(merges)
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_add_bos_token(False)

    # Header and tensor infos first, then the data one tensor at a time.
    plan = []
    for ckpt_name, file in sources.items():
        gguf_name = names.get_name(ckpt_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{file}: no GGUF name for tensor {ckpt_name!r}")
        with safe_open(str(file), framework="pt") as f:
            shape = f.get_slice(ckpt_name).get_shape()
        dtype = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor_info(gguf_name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
        plan.append((ckpt_name, file))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for ckpt_name, file in plan:
        with safe_open(str(file), framework="pt") as f:
            w.write_tensor_data(_to_gguf_layout(ckpt_name, f.get_tensor(ckpt_name), heads))
    w.close()
    tmp.rename(out)
    return out


def quantize(f16: Path, out: Path, kind: str, threads: int) -> Path:
    """llama.cpp's quantizer, default parameters except the file type and thread count."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[kind])
    params.nthread = threads
    tmp = out.with_suffix(".partial")
    rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({f16} -> {kind}) returned {rc}")
    tmp.rename(out)
    return out


def tensor_types(path: Path) -> str:
    """What the file holds, e.g. 'Q4_0 x 73, F32 x 98, Q6_K x 1' (counted over tensors)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    counts = Counter(t.tensor_type.name for t in reader.tensors)
    return ", ".join(f"{k} x {n}" for k, n in counts.most_common())


def tensor_type_of(path: Path, name: str) -> str:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return next(t.tensor_type.name for t in reader.tensors if t.name == name)
