"""The GPT-NeoX byte-level BPE tokenizer (a model directory's `tokenizer.json`), plus the tuned chat template.

Encoding goes through `encode_batch_fast`, which releases the GIL while it works (`encode` holds it throughout: a
1 MB prompt stalls every other thread of the process for about a second), and counts the tokens before building
the Python list of ids, so that a caller with a limit never pays for millions of ids it is going to refuse.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

ENDOFTEXT = "<|endoftext|>"
PADDING = "<|padding|>"
SYSTEM = "<|SYSTEM|>"
USER = "<|USER|>"
ASSISTANT = "<|ASSISTANT|>"

# The published StableLM Tuned (Alpha) system prompt, after `<|SYSTEM|>`. The trailing newline is part of it: the
# model card's prompt is `f"{system_prompt}<|USER|>..."` with a triple-quoted prompt ending in a newline.
DEFAULT_SYSTEM_PROMPT = (
    "# StableLM Tuned (Alpha version)\n"
    "- StableLM is a helpful and harmless open-source AI language model developed by StabilityAI.\n"
    "- StableLM is excited to be able to help the user, but will refuse to do anything that could be considered"
    " harmful to the user.\n"
    "- StableLM is more than just an information source, StableLM is also able to write poetry, short stories,"
    " and make jokes.\n"
    "- StableLM will refuse to participate in anything that could harm a human.\n"
)

# Unicode normalizers a tokenizer.json may name; NFC and NFKC compose up to 3 code points into one of 2 bytes
# (U+01D5 is U+0055 U+0308 U+0304), the most characters per UTF-8 byte any composition reaches
# (tests/model/test_tokenizer.py checks it over every code point).
_UNICODE_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD"})
MAX_CHARS_PER_NORMALIZED_BYTE = 1.5


class TooManyTokens(ValueError):
    """The text encodes to more tokens than the caller allows; `count` is how many."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} tokens, more than {limit}")
        self.count = count
        self.limit = limit


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode`: the printable character each byte is spelled as -> that byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class Tokenizer:
    def __init__(self, hf: HFTokenizer, eos_token_id: int | None = None) -> None:
        self._hf = hf
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.eos_token_id: int | None = eos_token_id if eos_token_id is not None else hf.token_to_id(ENDOFTEXT)
        self.is_chat: bool = hf.token_to_id(USER) is not None and hf.token_to_id(ASSISTANT) is not None
        if self.is_chat:
            found = (hf.token_to_id(t) for t in (USER, ASSISTANT, SYSTEM, PADDING, ENDOFTEXT))
            stop = [i for i in found if i is not None]
        else:
            stop = []
        if self.eos_token_id is not None and self.eos_token_id not in stop:
            stop.append(self.eos_token_id)
        self.stop_token_ids: tuple[int, ...] = tuple(stop)
        self._bytes, self._special = self._build_byte_table()
        self._plain = _plain_text_twin(hf)
        self.max_chars_per_token = self._max_chars_per_token()

    @classmethod
    def from_file(cls, path: str | Path, eos_token_id: int | None = None) -> Tokenizer:
        return cls(HFTokenizer.from_file(str(path)), eos_token_id)

    @classmethod
    def from_dir(cls, model_dir: str | Path, eos_token_id: int | None = None) -> Tokenizer:
        """`model_dir/tokenizer.json`; eos from the argument, else config.json's `eos_token_id`, else
        `<|endoftext|>`."""
        model_dir = Path(model_dir)
        if eos_token_id is None:
            eos_token_id = _config_eos(model_dir / "config.json")
        return cls.from_file(model_dir / "tokenizer.json", eos_token_id)

    def _build_byte_table(self) -> tuple[list[bytes], frozenset[int]]:
        table = [b""] * self.vocab_size
        inverse = byte_decoder()
        for token, i in self._hf.get_vocab(with_added_tokens=False).items():
            if 0 <= i < self.vocab_size:
                # a character outside the byte alphabet cannot occur in a byte-level vocab; keep it as UTF-8
                table[i] = b"".join(bytes([inverse[c]]) if c in inverse else c.encode() for c in token)
        special = set()
        for i, added in self._hf.get_added_tokens_decoder().items():
            if 0 <= i < self.vocab_size:
                table[i] = added.content.encode()
                if added.special:
                    special.add(i)
        return table, frozenset(special)

    def _max_chars_per_token(self) -> float | None:
        """An upper bound on the characters of text one token can stand for, so that a text of n characters has
        at least n / bound tokens; None when the tokenizer's normalizer could remove characters (then no bound
        is known). The longest token's bytes (vocabulary or added token), times the characters a byte of
        normalized text can come from (one without normalizer: every character is at least one UTF-8 byte)."""
        normalizer = json.loads(self._hf.to_str()).get("normalizer")
        kinds = [n.get("type") for n in (normalizer.get("normalizers", [normalizer]) if normalizer else [])]
        if any(kind not in _UNICODE_NORMALIZERS for kind in kinds):
            return None
        longest = max(max(map(len, self._bytes)),
                      *(len(t.content.encode()) for t in self._hf.get_added_tokens_decoder().values()))
        return longest * (MAX_CHARS_PER_NORMALIZED_BYTE if kinds else 1.0)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids of `text`, no BOS; special-token text such as `<|endoftext|>` becomes its id. Raises
        TooManyTokens if there are more than `max_tokens`."""
        return _ids(self._hf.encode_batch_fast([text], add_special_tokens=False), max_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes:
        """The raw bytes token `token_id` stands for (b"" for ids outside the tokenizer, e.g. padded
        embedding rows, and for special tokens when they are skipped)."""
        if not 0 <= token_id < self.vocab_size:
            return b""
        if skip_special_tokens and token_id in self._special:
            return b""
        return self._bytes[token_id]

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special

    def token_to_id(self, token: str) -> int | None:
        return self._hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._hf.id_to_token(token_id)

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of `text` with every added token's text (`<|USER|>`, `<|endoftext|>`, ...) read as plain
        text: for user-supplied content that must not smuggle control tokens into a prompt."""
        return _ids(self._plain.encode_batch_fast([text], add_special_tokens=False), None)

    def encode_chat(self, messages: Sequence[Mapping[str, str]], system: str | None = None,
                    max_tokens: int | None = None) -> list[int]:
        """The ids of `render_chat(messages, system)`, except that the control tokens come only from the
        template: text inside the system prompt or a message is encoded with `encode_plain`. Encoding the
        pieces separately gives the same ids as encoding the rendered string, since the tokenizer splits on
        added tokens before BPE. Raises TooManyTokens if there are more than `max_tokens`."""
        parts = _chat_parts(messages, system)
        controls, texts = parts[0::2], parts[1::2]   # [<|SYSTEM|>, <|USER|>, ..., <|ASSISTANT|>], the texts between
        control_ids: dict[str, list[int]] = {}
        for name in set(controls):   # a tokenizer without the chat tokens encodes their text like any other
            token_id = self.token_to_id(name)
            control_ids[name] = [token_id] if token_id is not None else self.encode(name)
        encodings = self._plain.encode_batch_fast(texts, add_special_tokens=False)
        count = sum(len(control_ids[c]) for c in controls) + sum(len(e) for e in encodings)
        if max_tokens is not None and count > max_tokens:
            raise TooManyTokens(count, max_tokens)
        ids: list[int] = []
        for i, name in enumerate(controls):
            ids.extend(control_ids[name])
            if i < len(encodings):
                ids.extend(encodings[i].ids)
        return ids

    def render_chat(self, messages: Sequence[Mapping[str, str]], system: str | None = None) -> str:
        """The tuned-model prompt: `<|SYSTEM|>{system}` then `<|USER|>{text}` / `<|ASSISTANT|>{text}` per message,
        then `<|ASSISTANT|>` for the reply. `system=None` uses the published default system prompt."""
        return "".join(_chat_parts(messages, system))


def _ids(encodings: list, max_tokens: int | None) -> list[int]:
    """The ids of a one-text batch; TooManyTokens (counted without building the list) past `max_tokens`."""
    encoding = encodings[0]
    if max_tokens is not None and len(encoding) > max_tokens:
        raise TooManyTokens(len(encoding), max_tokens)
    return encoding.ids


def _chat_parts(messages: Sequence[Mapping[str, str]], system: str | None) -> list[str]:
    """Alternating [control token, text, control token, text, ..., `<|ASSISTANT|>`]."""
    parts = [SYSTEM, DEFAULT_SYSTEM_PROMPT if system is None else system]
    for message in messages:
        role = message["role"]
        if role == "user":
            parts.append(USER)
        elif role == "assistant":
            parts.append(ASSISTANT)
        else:
            raise ValueError(f"unknown chat role {role!r}: expected 'user' or 'assistant'")
        parts.append(message["content"])
    parts.append(ASSISTANT)
    return parts


def _plain_text_twin(hf: HFTokenizer) -> HFTokenizer:
    """A copy of `hf` that reads added-token text as ordinary text: every added token is marked special (some
    tokenizer.json files leave chat tokens non-special) and special tokens are not split out while encoding."""
    spec = json.loads(hf.to_str())
    for added in spec.get("added_tokens", []):
        added["special"] = True
    twin = HFTokenizer.from_str(json.dumps(spec))
    twin.encode_special_tokens = True
    return twin


def _config_eos(config_path: Path) -> int | None:
    try:
        value = json.loads(config_path.read_text()).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None
