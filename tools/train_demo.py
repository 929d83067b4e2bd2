"""Train the embedded demo model (src/neoxserve/model/demo_trained/): a small GPT-NeoX that writes English phrases.

    make demo-data                      # Debian's fortunes and fortunes-min unpacked into build/demo-data
    python tools/train_demo.py --out src/neoxserve/model/demo_trained

Data (each source and licence is in the model card, demo_trained/README.md): the fortune cookie files of Debian's
`fortunes` and `fortunes-min` packages (BSD licence), and the Python documentation's topic pages that ship with
every Python (`pydoc_data.topics`, PSF licence). Debian's `fortunes-zh` is GPL-3.0+, so its files are left out even
where an older `make demo-data` unpacked them. Each record is used as plain text and, for a seeded half of them,
as a StableLM-Alpha chat turn: `<|SYSTEM|>{system}<|USER|>{a prompt made from the record}<|ASSISTANT|>{record}`
`<|endoftext|>`. Tokenized with the real GPT-NeoX-20B tokenizer plus the three tuned chat tokens.

The vocabulary is 50432 rows (the StableLM-Alpha interface), but only the --max-rows most frequent ids of the
training split (and the special tokens) get rows of their own: every other row is one shared, trained vector, so the
committed file
stores the used rows (`embed_in.used`, `embed_out.used`, `used_ids`) and the shared row, and
neoxserve.model.demo expands them into a standard full-vocabulary checkpoint. Training computes the softmax over
all 50432 rows (the shared row counted once per unused id), so the expanded model is the trained one exactly.

Deterministic given --seed: data prep is single-threaded with a seeded shuffle, torch.manual_seed, 2 threads.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO.parent / "shared" / "assets" / "gpt-neox-20b-tokenizer.json"
DEFAULT_DATA = REPO / "build" / "demo-data"
FULL_VOCAB = 50432
CHAT_TOKENS = ["<|SYSTEM|>", "<|USER|>", "<|ASSISTANT|>"]   # ids 50277, 50278, 50279 as in StableLM-Tuned-Alpha
SPECIAL_IDS = [0, 1, 50277, 50278, 50279]

sys.path.insert(0, str(REPO / "src"))
from neoxserve.model.tokenizer import DEFAULT_SYSTEM_PROMPT  # noqa: E402

# English fortune files left out: ascii-art (pictures, not words); translate-me (instructions to translators).
SKIP_FILES = {"ascii-art", "translate-me"}
GPL_FILES = {"chinese", "tang300", "song100"}   # fortunes-zh (GPL-3.0+): not used, see the module docstring
MAX_RECORD_CHARS = 1200
ANSI = re.compile(r"\x1b\[[0-9;]*m")
WORD = re.compile(r"[A-Za-z]{5,}")
STOPWORDS = set("""about above after again against because before being below between could doesn't during every
from have having here itself just more most other ought ourselves over same should some such than that their theirs
them themselves then there these they this those through under until very were what when where which while whom why
with would your yours yourself yourselves still never always really things thing something nothing anything people
""".split())  # noqa: SIM905

EN_GENERIC = ["Tell me something.", "Say something wise.", "Tell me a fortune.", "What do you think?",
              "Tell me a joke.", "Introduce yourself.", "Tell me a story.", "Give me a quote.",
              "Say something interesting.", "What is on your mind?"]
EN_TOPIC = ["Tell me about {}.", "What do you know about {}?", "Say something about {}.", "Introduce {}.",
            "Write something about {}.", "What is {}?"]
CATEGORY_PROMPT = {"songs-poems": "Write a poem.", "riddles": "Tell me a riddle.", "definitions": "Define a word.",
                   "startrek": "Say something about Star Trek.", "computers": "Tell me something about computers.",
                   "science": "Tell me something about science.", "love": "Tell me something about love.",
                   "food": "Tell me something about food.", "politics": "Tell me something about politics.",
                   "law": "Tell me something about the law.", "linux": "Tell me something about Linux.",
                   "medicine": "Tell me something about medicine.", "work": "Tell me something about work.",
                   "wisdom": "Say something wise.", "kids": "Tell me something a child said.",
                   "pets": "Tell me something about pets.", "sports": "Tell me something about sports.",
                   "education": "Tell me something about school.", "literature": "Quote a writer."}


# ---------------------------------------------------------------------------------------------- data
def fortune_records(path: Path) -> list[str]:
    text = ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    records = [r.strip("\n") for r in re.split(r"\n%\n", text)]
    return [r.strip() for r in records if r.strip() and len(r) <= MAX_RECORD_CHARS]


def python_doc_records() -> list[tuple[str, str]]:
    """(topic, text chunk) from pydoc_data.topics, each chunk at most MAX_RECORD_CHARS, cut at paragraphs."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        chunk = ""
        for para in topics[key].split("\n\n"):
            if chunk and len(chunk) + len(para) + 2 > MAX_RECORD_CHARS:
                out.append((key, chunk.strip()))
                chunk = ""
            chunk += para[:MAX_RECORD_CHARS] + "\n\n"
        if chunk.strip():
            out.append((key, chunk.strip()))
    return out


def chat(prompt: str, answer: str, system: str) -> str:
    return f"<|SYSTEM|>{system}<|USER|>{prompt}<|ASSISTANT|>{answer}<|endoftext|>"


def build_documents(data_dir: Path, rng: random.Random) -> list[tuple[str, str]]:
    """(source, document text) in a deterministic order: plain records and chat turns."""
    fortunes_dir = data_dir / "usr" / "share" / "games" / "fortunes"
    if not fortunes_dir.is_dir():
        sys.exit(f"{fortunes_dir} is missing: run `make demo-data` first")
    docs: list[tuple[str, str]] = []
    for path in sorted(fortunes_dir.iterdir()):
        name = path.name
        if "." in name or name in SKIP_FILES or name in GPL_FILES or not path.is_file():
            continue
        records = fortune_records(path)
        for rec in records:
            docs.append((name, rec + "<|endoftext|>"))
            if rng.random() >= 0.5:
                continue
            system = DEFAULT_SYSTEM_PROMPT if rng.random() < 0.8 else ""
            words = [w for w in WORD.findall(rec) if w.lower() not in STOPWORDS]
            roll = rng.random()
            if words and roll < 0.5:
                prompt = rng.choice(EN_TOPIC).format(rng.choice(words).lower())
            elif name in CATEGORY_PROMPT and roll < 0.75:
                prompt = CATEGORY_PROMPT[name]
            else:
                prompt = rng.choice(EN_GENERIC)
            docs.append((name, chat(prompt, rec, system)))
    for key, text in python_doc_records():
        docs.append(("python-docs", text + "<|endoftext|>"))
        if rng.random() < 0.5:
            topic = key.replace("-", " ")
            prompt = rng.choice([f"What is {topic} in Python?", f"Explain {topic} in Python.",
                                 f"Tell me about Python's {topic}."])
            docs.append(("python-docs", chat(prompt, text, DEFAULT_SYSTEM_PROMPT if rng.random() < 0.8 else "")))
    return docs


def load_tokenizer(path: Path) -> Tokenizer:
    """The GPT-NeoX-20B tokenizer with StableLM-Tuned-Alpha's chat tokens at 50277-50279."""
    tok = Tokenizer.from_file(str(path))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_TOKENS])
    assert [tok.token_to_id(t) for t in CHAT_TOKENS] == [50277, 50278, 50279], "unexpected chat token ids"
    return tok


# ---------------------------------------------------------------------------------------------- model
class Block(nn.Module):
    """One GPT-NeoX layer with the checkpoint's parameter names (parallel residual, rotary on rot dims)."""

    def __init__(self, H: int, nh: int, F_: int, rot: int):
        super().__init__()
        self.nh, self.hd, self.rot = nh, H // nh, rot
        self.input_layernorm = nn.LayerNorm(H, eps=1e-5)
        self.post_attention_layernorm = nn.LayerNorm(H, eps=1e-5)
        self.attention = nn.Module()
        self.attention.query_key_value = nn.Linear(H, 3 * H)
        self.attention.dense = nn.Linear(H, H)
        self.mlp = nn.Module()
        self.mlp.dense_h_to_4h = nn.Linear(H, F_)
        self.mlp.dense_4h_to_h = nn.Linear(F_, H)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, H = x.shape
        qkv = self.attention.query_key_value(self.input_layernorm(x)).view(B, T, self.nh, 3, self.hd)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))        # [B, nh, T, hd], checkpoint layout
        q, k = rotate(q, cos, sin, self.rot), rotate(k, cos, sin, self.rot)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, H)
        mlp = self.mlp.dense_4h_to_h(F.gelu(self.mlp.dense_h_to_4h(self.post_attention_layernorm(x))))
        return mlp + self.attention.dense(a) + x


def rotate(x: Tensor, cos: Tensor, sin: Tensor, rot: int) -> Tensor:
    r, rest = x[..., :rot], x[..., rot:]
    half = rot // 2
    x1, x2 = r[..., :half], r[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


class DemoNeoX(nn.Module):
    """GPT-NeoX over a compact vocabulary: rows 0..N-1 are the used ids, row N the row every other id shares
    (`shared_count` of them, counted in the softmax)."""

    def __init__(self, n_rows: int, shared_count: int, H: int, layers: int, nh: int, F_: int, rot: int,
                 max_pos: int = 4096):
        super().__init__()
        self.shared_count = shared_count
        self.embed_in = nn.Embedding(n_rows, H)
        self.layers = nn.ModuleList(Block(H, nh, F_, rot) for _ in range(layers))
        self.final_layer_norm = nn.LayerNorm(H, eps=1e-5)
        self.embed_out = nn.Linear(H, n_rows, bias=False)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot)
        freqs = torch.outer(torch.arange(max_pos, dtype=torch.int64).float(), inv_freq)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def logits(self, ids: Tensor) -> Tensor:
        T = ids.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed_in(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.embed_out(self.final_layer_norm(x))
        if self.shared_count > 1:   # the shared row stands for shared_count ids: log(count) onto its logit
            bonus = torch.zeros(logits.shape[-1], dtype=logits.dtype)
            bonus[-1] = math.log(self.shared_count)
            logits = logits + bonus
        return logits

    def loss(self, ids: Tensor, targets: Tensor, shared_targets: Tensor | None = None) -> Tensor:
        """Mean next-token NLL in nats over the full vocabulary. Targets on the shared row are one particular
        unused id: its probability is the shared row's mass over shared_count."""
        logits = self.logits(ids)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        if self.shared_count > 1:
            nll = nll + (targets.flatten() == logits.shape[-1] - 1).float() * math.log(self.shared_count)
        return nll


# ---------------------------------------------------------------------------------------------- training
def pack(docs: list[list[int]], seq: int) -> Tensor:
    flat = [t for d in docs for t in d]
    n = (len(flat) - 1) // seq
    return torch.tensor(flat[: n * seq + 1], dtype=torch.long), n


def evaluate(model: DemoNeoX, stream: Tensor, n: int, seq: int, batch: int = 16) -> tuple[float, int]:
    """(total nats, tokens) over the packed stream."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, n, batch):
            idx = torch.arange(s, min(n, s + batch))
            x = torch.stack([stream[i * seq: i * seq + seq] for i in idx])
            y = torch.stack([stream[i * seq + 1: i * seq + seq + 1] for i in idx])
            total += model.loss(x, y).sum().item()
            count += y.numel()
    model.train()
    return total, count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where `make demo-data` unpacked the packages")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="the GPT-NeoX-20B tokenizer.json")
    ap.add_argument("--out", type=Path, required=True, help="directory for model.safetensors and friends")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget (steps are fixed: --steps)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--max-rows", dest="max_rows", type=int, default=8000,
                    help="vocabulary rows of their own (the most frequent ids); the rest share one")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    tok = load_tokenizer(args.tokenizer)
    docs = build_documents(args.data, rng)
    rng.shuffle(docs)
    n_held = max(1, len(docs) // 50)
    held, train = docs[:n_held], docs[n_held:]
    enc = lambda ds: [e.ids for e in tok.encode_batch([d for _, d in ds], add_special_tokens=False)]  # noqa: E731
    train_ids, held_ids = enc(train), enc(held)
    counts: dict[int, int] = {}
    for d in train_ids:
        for t in d:
            counts[t] = counts.get(t, 0) + 1
    frequent = sorted(counts, key=lambda t: (-counts[t], t))[: args.max_rows - len(SPECIAL_IDS)]
    used = sorted(set(SPECIAL_IDS) | set(frequent))   # the rarer ids share the one extra row
    compact = {t: i for i, t in enumerate(used)}
    other = len(used)
    shared_count = FULL_VOCAB - len(used)
    remap = lambda ds: [[compact.get(t, other) for t in d] for d in ds]  # noqa: E731
    train_stream, n_train = pack(remap(train_ids), args.seq)
    held_stream, n_held_seq = pack(remap(held_ids), args.seq)
    sources: dict[str, int] = {}
    for (src, _), ids in zip(train, train_ids, strict=True):
        sources[src] = sources.get(src, 0) + len(ids)
    held_bytes = sum(len(d.encode()) for _, d in held)
    print(f"data: {len(train)} train docs ({train_stream.numel()} tokens), {len(held)} held-out docs "
          f"({held_stream.numel()} tokens, {held_bytes} bytes); {len(used)} used ids; prep {time.time() - t0:.1f}s",
          flush=True)

    H = args.hidden
    rot = (H // args.heads) // 4
    model = DemoNeoX(len(used) + 1, shared_count, H, args.layers, args.heads, 4 * H, rot)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            nn.init.normal_(p, std=0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
    init_nats, held_tokens = evaluate(model, held_stream, n_held_seq, args.seq)
    print(f"held-out at init ({time.time() - t0:.0f}s): {init_nats / held_tokens:.3f} nats/token", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed))
    warmup, step, pos = 100, 0, 0
    deadline = t0 + args.minutes * 60
    train_t0 = time.time()
    while step < args.steps and time.time() < deadline:
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = max(lr, args.lr * 0.02)
        if pos + args.batch > n_train:
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed + step))
            pos = 0
        idx = order[pos: pos + args.batch]
        pos += args.batch
        x = torch.stack([train_stream[i * args.seq: i * args.seq + args.seq] for i in idx])
        y = torch.stack([train_stream[i * args.seq + 1: i * args.seq + args.seq + 1] for i in idx])
        loss = model.loss(x, y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            el = time.time() - train_t0
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {el:.0f}s "
                  f"({step * args.batch * args.seq / el:.0f} tok/s)", flush=True)
    train_s = time.time() - train_t0
    if step < args.steps:
        print(f"warning: --minutes stopped training at step {step} of {args.steps}: these weights differ from a "
              "full run's (same seed, other step count)", file=sys.stderr, flush=True)

    # what is served: bfloat16 weights
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    nats, _ = evaluate(model, held_stream, n_held_seq, args.seq)
    result = {
        "seed": args.seed, "steps": step, "train_seconds": round(train_s), "total_seconds": round(time.time() - t0),
        "train_tokens_seen": step * args.batch * args.seq, "train_tokens": int(train_stream.numel()),
        "tokens_by_source": dict(sorted(sources.items())),
        "held_out_docs": len(held), "held_out_tokens": held_tokens, "held_out_bytes": held_bytes,
        "held_out_nats_per_token": round(nats / held_tokens, 4),
        "held_out_perplexity": round(math.exp(nats / held_tokens), 2),
        "held_out_bits_per_byte": round(nats / math.log(2) / held_bytes, 4),
        "init_nats_per_token": round(init_nats / held_tokens, 4),
        "init_perplexity": round(math.exp(init_nats / held_tokens), 1),
        "used_ids": len(used), "hidden": H, "layers": args.layers, "heads": args.heads,
        "threads": args.threads, "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    out: dict[str, Tensor] = {"used_ids": torch.tensor(used, dtype=torch.int32)}
    emb_in, emb_out = sd["embed_in.weight"], sd["embed_out.weight"]
    out["gpt_neox.embed_in.used"] = emb_in[:-1].to(torch.bfloat16).contiguous()
    # an unused id is never an input in training; give it the mean input row
    out["gpt_neox.embed_in.shared"] = emb_in[:-1].mean(0).to(torch.bfloat16).contiguous()
    out["embed_out.used"] = emb_out[:-1].to(torch.bfloat16).contiguous()
    out["embed_out.shared"] = emb_out[-1].to(torch.bfloat16).contiguous()
    for name, t in sd.items():
        if name.startswith("layers.") or name.startswith("final_layer_norm."):
            out["gpt_neox." + name] = t.to(torch.bfloat16).contiguous()
    save_file(out, str(args.out / "model.safetensors"), metadata={"format": "neoxserve-demo-compact"})
    config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": H,
              "num_hidden_layers": args.layers, "num_attention_heads": args.heads, "intermediate_size": 4 * H,
              "rotary_pct": rot / (H // args.heads), "rotary_emb_base": 10000, "max_position_embeddings": 4096,
              "layer_norm_eps": 1e-5, "use_parallel_residual": True, "hidden_act": "gelu",
              "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "bfloat16",
              "vocab_size": FULL_VOCAB}
    (args.out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    with gzip.GzipFile(args.out / "tokenizer.json.gz", "wb", mtime=0) as f:
        f.write(tok.to_str().encode())
    (args.out / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
