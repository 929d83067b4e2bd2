"""The demo model: a small GPT-NeoX directory with random weights, so the service runs without a download.

Its text is noise. The tokenizer is a real byte-level BPE (trained here on a few paragraphs), with the tuned chat
special tokens, so every route (including chat) works end to end. Writing is deterministic: the same seed gives
the same bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from neoxserve.model.arith import cdiv

# `--model demo-random`; not "demo-model": that name held the random model when it was `demo`
DEMO_DIR_NAME = "demo-random-model"
# the trained demo model as committed (tools/train_demo.py; model card: demo_trained/README.md): its own rows for the
# ids it saw often, one shared row for every other id; write_trained_demo_model expands it to a standard checkpoint
TRAINED_PACKAGE_DIR = Path(__file__).resolve().parent / "demo_trained"
BPE_VOCAB_SIZE = 1000          # specials + 256 bytes + merges
CHAT_TOKENS = ["<|USER|>", "<|ASSISTANT|>", "<|SYSTEM|>"]
INIT_STD = 0.2                 # large enough that logits are peaked, not near-uniform as with the usual 0.02

DEMO_CONFIG = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "max_position_embeddings": 4096,
    "layer_norm_eps": 1e-5,
    "use_parallel_residual": True,
    "hidden_act": "gelu",
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "torch_dtype": "float32",
}

CORPUS = [
    "The city of Beijing is the capital of China. It is home to the Forbidden City, the Temple of Heaven and "
    "many parks, and its history goes back more than three thousand years. Visitors walk along the old hutongs, "
    "eat roast duck and climb the Great Wall in the mountains north of the city.",
    "A language model reads a sequence of tokens and predicts the next one. It is trained on a large amount of "
    "text, and when it is asked a question it writes an answer one token at a time. This demo model was never "
    "trained: its weights are random numbers, so the text it writes is noise.",
    "Please introduce yourself. What is the weather like today? I would like to know how to cook rice, how to "
    "write a short story, and where to find a good book about the history of science and mathematics.",
    "北京是中国的首都，有着三千多年的历史。故宫、天坛和颐和园都是著名的名胜古迹。很多游客喜欢在胡同里散步，"
    "品尝北京烤鸭，或者去北边的山里爬长城。",
    "语言模型读取一串词元，然后预测下一个词元。这个演示模型没有经过训练，它的权重是随机数，所以它写出的文字"
    "没有意义。请介绍一下你自己。今天天气怎么样？我想知道怎么做米饭。",
    "Numbers and code: 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14; def main(): return print('hello, world') # done",
]

README = """# neoxserve demo model

A small GPT-NeoX model (hidden 256, 4 layers) written by neoxserve (`neoxserve demo write DIR`, or on first use
of `--model demo-random`). **Its weights are random: the text it generates is noise.** It exists so the service, the API
and the CLI can be tried without downloading a real model. The byte-level BPE tokenizer was trained on a few
embedded paragraphs of English and Chinese and includes the tuned chat tokens `<|USER|>`, `<|ASSISTANT|>` and
`<|SYSTEM|>`.
"""


def build_tokenizer() -> Tokenizer:
    """Byte-level BPE: 0 `<|endoftext|>`, 1 `<|padding|>`, the 256 byte tokens, merges, then the chat tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_TOKENS])
    return tok


def demo_config(vocab_size: int) -> dict:
    return {**DEMO_CONFIG, "vocab_size": cdiv(vocab_size, 64) * 64}


def random_weights(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Checkpoint-named fp32 tensors drawn from a seeded generator (normal(0, INIT_STD); norms at 1, biases 0)."""
    g = torch.Generator().manual_seed(seed)
    H, F, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]   # F: the MLP's width

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * INIT_STD

    w = {"gpt_neox.embed_in.weight": normal(V, H)}
    for i in range(config["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            w[p + norm + ".weight"], w[p + norm + ".bias"] = torch.ones(H), torch.zeros(H)
        for name, (out, inp) in {"attention.query_key_value": (3 * H, H), "attention.dense": (H, H),
                                 "mlp.dense_h_to_4h": (F, H), "mlp.dense_4h_to_h": (H, F)}.items():
            w[p + name + ".weight"], w[p + name + ".bias"] = normal(out, inp), torch.zeros(out)
    w["gpt_neox.final_layer_norm.weight"], w["gpt_neox.final_layer_norm.bias"] = torch.ones(H), torch.zeros(H)
    w["embed_out.weight"] = normal(V, H)
    return w


def write_demo_model(path: str | Path, seed: int = 0) -> Path:
    """Write the demo model directory at `path` (created if needed; files overwritten)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config = demo_config(tok.get_vocab_size(with_added_tokens=True))
    (path / "tokenizer.json").write_text(tok.to_str(pretty=True), encoding="utf-8")
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(random_weights(config, seed), str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "README.md").write_text(README, encoding="utf-8")
    return path


def ensure_demo_model(data_dir: str | Path) -> Path:
    """data_dir/demo-random-model, written once (to a temporary directory renamed into place, so never half-written)."""
    return _ensure(Path(data_dir), DEMO_DIR_NAME, write_demo_model)


def _ensure(data_dir: Path, name: str, write: Callable[[Path], Path]) -> Path:
    target = data_dir / name
    if (target / "model.safetensors").is_file():
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=data_dir))
    os.chmod(tmp, 0o755)
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_trained_demo_model(path: str | Path) -> Path:
    """Expand the committed trained demo model into a standard GPT-NeoX directory at `path` (full 50432-row
    embedding and output head: each unused id gets the shared row it was trained with; bfloat16 weights)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    src = TRAINED_PACKAGE_DIR
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    compact = load_file(str(src / "model.safetensors"))
    used = compact.pop("used_ids").long()
    V = config["vocab_size"]
    weights: dict[str, torch.Tensor] = {}
    for name in ("gpt_neox.embed_in", "embed_out"):
        full = compact.pop(name + ".shared").expand(V, -1).clone()
        full[used] = compact.pop(name + ".used")
        weights[name + ".weight"] = full
    weights.update(compact)
    with gzip.open(src / "tokenizer.json.gz", "rb") as f:
        (path / "tokenizer.json").write_bytes(f.read())
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(src / "README.md", path / "README.md")
    return path


def trained_dir_name() -> str:
    """The expanded trained model's directory name, from the committed weights' digest: a data directory kept
    across an upgrade that retrained the model gets the new weights, not the ones expanded before."""
    digest = hashlib.sha256((TRAINED_PACKAGE_DIR / "model.safetensors").read_bytes()).hexdigest()
    return f"demo-trained-model-{digest[:12]}"


def ensure_trained_demo_model(data_dir: str | Path) -> Path:
    """data_dir/demo-trained-model-<digest> (`--model demo`, the default), expanded once (like ensure_demo_model)."""
    return _ensure(Path(data_dir), trained_dir_name(), write_trained_demo_model)
