"""The engine's per-token logprobs (engine/outputs.py:TokenLogprob) in OpenAI's two shapes (docs/api.md,
"Logprobs").

- chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}`
- completions: `{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}`, where each
  `top_logprobs` entry holds the k most likely tokens and the chosen one, and an echoed prompt's first token has
  null for both (nothing precedes it).

A token's text is its bytes as UTF-8, or `bytes:\\xNN...` when they are part of a character (OpenAI's way). A
logprob of -inf (a token the model gives no probability) is sent as -9999.0: JSON has no infinity.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ...engine.outputs import TokenLogprob

TokenBytes = Callable[[int], bytes]
NO_PROBABILITY = -9999.0


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else NO_PROBABILITY


def token_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def _chat_entry(token_bytes: TokenBytes, token_id: int, logprob: float) -> dict[str, Any]:
    raw = token_bytes(token_id)
    return {"token": token_text(raw), "logprob": _logprob(logprob), "bytes": list(raw)}


def chat_logprobs(token_bytes: TokenBytes, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [{**_chat_entry(token_bytes, e.token_id, e.logprob),
                         "top_logprobs": [_chat_entry(token_bytes, t, lp) for t, lp in e.top]} for e in entries]}


class CompletionLogprobs:
    """One choice's completions logprobs, built as its tokens arrive; `text_offset` counts characters of the
    choice's text from its start (the echoed prompt included)."""

    def __init__(self, token_bytes: TokenBytes) -> None:
        self.token_bytes = token_bytes
        self.offset = 0

    def render(self, entries: Sequence[TokenLogprob | None], token_ids: Sequence[int]) -> dict[str, Any]:
        """`entries[i]` belongs to `token_ids[i]`; None is a token with nothing before it (the prompt's first)."""
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for entry, token_id in zip(entries, token_ids, strict=True):
            text = token_text(self.token_bytes(token_id))
            out["tokens"].append(text)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
            if entry is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            out["token_logprobs"].append(_logprob(entry.logprob))
            top = {token_text(self.token_bytes(t)): _logprob(lp) for t, lp in entry.top}
            top.setdefault(text, _logprob(entry.logprob))
            out["top_logprobs"].append(top)
        return out
