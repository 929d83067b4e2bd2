"""Engine deltas -> response chunks, and the stream frame format (docs/api.md#responses).

A chunk closes when its text ends a sentence (. ! ? 。 ！ ？ or a newline) or holds `max_tokens` tokens,
whichever comes first; the last chunk is the one carrying the finished delta.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ...engine.client import DeltaStream
from ..errors import compact

SENTENCE_END = frozenset(".!?。！？\n")


@dataclass
class Chunk:
    text: str
    tokens: int              # completion tokens in this chunk
    completion_tokens: int   # cumulative
    prompt_tokens: int
    is_end: bool


def ends_sentence(text: str) -> bool:
    stripped = text.rstrip(" \t")
    return bool(stripped) and stripped[-1] in SENTENCE_END


async def chunks(deltas: DeltaStream, max_tokens: int) -> AsyncGenerator[Chunk, None]:
    text, emitted, prompt_tokens, completion_tokens = "", 0, 0, 0
    # closing the engine's iterator is what aborts the request there, so never leave it to the GC
    async with aclosing(deltas):
        async for delta in deltas:
            text += delta.text
            prompt_tokens, completion_tokens = delta.prompt_tokens, delta.completion_tokens
            if delta.finished:
                break
            if completion_tokens - emitted >= max_tokens or ends_sentence(text):
                yield Chunk(text, completion_tokens - emitted, completion_tokens, prompt_tokens, False)
                text, emitted = "", completion_tokens
    yield Chunk(text, completion_tokens - emitted, completion_tokens, prompt_tokens, True)


async def whole_chunk(deltas: DeltaStream) -> Chunk:
    """The whole generation as one chunk (non-stream responses)."""
    parts, prompt_tokens, completion_tokens = [], 0, 0
    async with aclosing(deltas):
        async for delta in deltas:
            parts.append(delta.text)
            prompt_tokens, completion_tokens = delta.prompt_tokens, delta.completion_tokens
            if delta.finished:
                break
    return Chunk("".join(parts), completion_tokens, completion_tokens, prompt_tokens, True)


def frame(body: dict[str, Any]) -> bytes:
    """`data: <compact JSON>` and a blank line: nothing else, the SDK's parser breaks on comments or events."""
    return f"data: {compact(body)}\n\n".encode()
