"""Engine deltas -> answers in OpenAI's shape (docs/api.md, "OpenAI routes" and "Qianfan v2"): whole, or as
`data: {json}` frames ending with `data: [DONE]`.

The Qianfan v2 chat answer is OpenAI's chat answer plus `flag` and `ban_round` on each choice. With `n` > 1 the
engine's deltas of the samples arrive interleaved, each tagged with its choice `index`; usage counts the prompt
once and the output of every sample.
"""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engine.client import DeltaStream
from .errors import compact

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"


@dataclass
class Piece:
    """One delta of one choice: what a stream sends as one frame."""

    index: int
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int   # of all choices, cumulative: what the client has once this piece is sent
    is_end: bool             # the last piece of the answer (every choice finished)


async def pieces(deltas: DeltaStream, n: int) -> AsyncGenerator[Piece, None]:
    """The deltas of `n` samples as pieces; the last one has is_end. Closing this closes the engine's stream,
    which aborts the request there."""
    produced = [0] * n
    finished = 0
    async with aclosing(deltas):
        async for delta in deltas:
            index = 0   # one sample until the engine has n (issue 10b): then delta.index
            produced[index] = delta.completion_tokens
            finished += delta.finished
            yield Piece(index, delta.text, delta.finish_reason if delta.finished else None,
                        delta.prompt_tokens, sum(produced), finished == n)
            if finished == n:
                return


@dataclass
class Choice:
    text: str = ""
    finish_reason: str | None = None


@dataclass
class Answer:
    """A whole answer: every choice's text and why it ended, and the usage."""

    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def collect(deltas: DeltaStream, n: int) -> Answer:
    answer = Answer([Choice() for _ in range(n)])
    parts: list[list[str]] = [[] for _ in range(n)]
    async for piece in pieces(deltas, n):
        parts[piece.index].append(piece.text)
        if piece.finish_reason is not None:
            answer.choices[piece.index].finish_reason = piece.finish_reason
        answer.prompt_tokens, answer.completion_tokens = piece.prompt_tokens, piece.completion_tokens
    for choice, texts in zip(answer.choices, parts, strict=True):
        choice.text = "".join(texts)
    return answer


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def frame(body: dict[str, Any]) -> bytes:
    return f"data: {compact(body)}\n\n".encode()


@dataclass
class Renderer:
    """One answer's shape. `choice_extra` are fields every choice carries (Qianfan v2's flag and ban_round);
    `echo` is the prompt text a completion with `echo: true` starts with."""

    kind: Kind
    id: str
    model: str
    include_usage: bool = False
    choice_extra: dict[str, Any] = field(default_factory=dict)
    echo: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    _started: set[int] = field(default_factory=set)

    def _head(self, object_: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    def whole(self, answer: Answer) -> dict[str, Any]:
        choices = []
        for i, c in enumerate(answer.choices):
            if self.kind == "chat":
                choice = {"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                          "finish_reason": c.finish_reason}
            else:
                choice = {"index": i, "text": self.echo + c.text, "logprobs": None, "finish_reason": c.finish_reason}
            choices.append({**choice, **self.choice_extra})
        object_ = "chat.completion" if self.kind == "chat" else "text_completion"
        return {**self._head(object_), "choices": choices,
                "usage": usage(answer.prompt_tokens, answer.completion_tokens)}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        body = {**self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion"),
                "choices": choices}
        if self.include_usage:
            body["usage"] = None
        return body

    def frames(self, piece: Piece) -> bytes:
        """A piece's frame; a choice's first piece is preceded by its opening frame (chat: the assistant role;
        completions with echo: the prompt), and the answer's last by the usage frame (when asked) and [DONE]."""
        out = b""
        first = piece.index not in self._started
        self._started.add(piece.index)
        if self.kind == "chat":
            if first:
                out += frame(self._chunk([self._choice(piece.index, {"role": "assistant", "content": ""}, None)]))
            out += frame(self._chunk([self._choice(piece.index, {"content": piece.text} if piece.text else {},
                                                   piece.finish_reason)]))
        else:
            text = (self.echo if first else "") + piece.text
            out += frame(self._chunk([self._choice(piece.index, text, piece.finish_reason)]))
        if piece.is_end:
            if self.include_usage:
                out += frame({**self._chunk([]), "usage": usage(piece.prompt_tokens, piece.completion_tokens)})
            out += DONE
        return out

    def _choice(self, index: int, content: dict[str, str] | str, finish_reason: str | None) -> dict[str, Any]:
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": index, "delta": content, "logprobs": None,
                                      "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": content, "logprobs": None, "finish_reason": finish_reason}
        return {**choice, **self.choice_extra}


def error_frames(body: dict[str, Any]) -> bytes:
    """An error after the stream started: one frame with the route's error body, then [DONE]."""
    return frame(body) + DONE
