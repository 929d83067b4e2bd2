"""Engine deltas -> answers in OpenAI's shape (docs/api.md, "OpenAI routes and Qianfan v2"): whole, or as
`data: {json}` frames ending with `data: [DONE]`.

The Qianfan v2 chat answer is OpenAI's chat answer plus `flag` and `ban_round` on each choice. With `n` > 1 the
engine's deltas of the samples arrive interleaved, each tagged with its choice `index`; usage counts the prompt
once and the output of every sample. Logprobs, when asked, are rendered by api/openai_v2/logprobs.py.
"""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from ...engine.client import DeltaStream
from ...engine.outputs import TokenLogprob
from ..errors import compact
from .logprobs import CompletionLogprobs, TokenBytes, chat_logprobs

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"


@dataclass
class Piece:
    """One delta of one choice: what a stream sends as one frame."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int   # of all choices, cumulative: what the client has once this piece is sent
    is_end: bool             # the last piece of the answer (every choice finished)
    prompt_logprobs: list[TokenLogprob | None] | None = None


async def pieces(deltas: DeltaStream, n: int) -> AsyncGenerator[Piece, None]:
    """The deltas of `n` samples as pieces; the last one has is_end. Closing this closes the engine's stream,
    which aborts the request there."""
    produced = [0] * n
    finished = 0
    async with aclosing(deltas):
        async for delta in deltas:
            produced[delta.index] = delta.completion_tokens
            finished += delta.finished
            yield Piece(delta.index, delta.text, delta.token_ids, delta.logprobs,
                        delta.finish_reason if delta.finished else None, delta.prompt_tokens, sum(produced),
                        finished == n, delta.prompt_logprobs)
            if finished == n:
                return


@dataclass
class Choice:
    text: str = ""
    finish_reason: str | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Answer:
    """A whole answer: every choice's text, tokens and why it ended, and the usage."""

    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None


async def whole_answer(deltas: DeltaStream, n: int) -> Answer:
    answer = Answer([Choice() for _ in range(n)])
    parts: list[list[str]] = [[] for _ in range(n)]
    async for piece in pieces(deltas, n):
        choice = answer.choices[piece.index]
        parts[piece.index].append(piece.text)
        choice.token_ids.extend(piece.token_ids)
        choice.logprobs.extend(piece.logprobs or ())
        if piece.finish_reason is not None:
            choice.finish_reason = piece.finish_reason
        if piece.prompt_logprobs is not None:
            answer.prompt_logprobs = piece.prompt_logprobs
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
    `echo` is the prompt text a completion with `echo: true` starts with (and `prompt_ids` its tokens, for echoed
    logprobs); `logprobs` says whether they were asked for, `token_bytes` shows a token."""

    kind: Kind
    id: str
    model: str
    token_bytes: TokenBytes
    include_usage: bool = False
    choice_extra: dict[str, Any] = field(default_factory=dict)
    echo: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    logprobs: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    _started: set[int] = field(default_factory=set)                          # choices with a frame sent
    _completion: dict[int, CompletionLogprobs] = field(default_factory=dict)  # per choice: text offsets so far
    _prompt_logprobs: list[TokenLogprob | None] | None = None

    def _head(self, object_: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    def _completion_logprobs(self, index: int, token_ids: list[int], entries: list[TokenLogprob],
                             first: bool) -> dict[str, Any] | None:
        """A completion choice's logprobs for these tokens; the first of a choice starts with the echoed
        prompt's."""
        if not self.logprobs:
            return None
        if first:
            self._completion[index] = CompletionLogprobs(self.token_bytes)
            if self.echo and self._prompt_logprobs is not None:
                with_prompt: list[TokenLogprob | None] = [*self._prompt_logprobs, *entries]
                return self._completion[index].render(with_prompt, [*self.prompt_ids, *token_ids])
        return self._completion[index].render(entries, token_ids)

    def whole(self, answer: Answer) -> dict[str, Any]:
        self._prompt_logprobs = answer.prompt_logprobs
        choices = []
        for i, c in enumerate(answer.choices):
            if self.kind == "chat":
                logprobs = chat_logprobs(self.token_bytes, c.logprobs) if self.logprobs else None
                choice = {"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": logprobs,
                          "finish_reason": c.finish_reason}
            else:
                choice = {"index": i, "text": self.echo + c.text,
                          "logprobs": self._completion_logprobs(i, c.token_ids, c.logprobs, first=True),
                          "finish_reason": c.finish_reason}
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
        if piece.prompt_logprobs is not None:
            self._prompt_logprobs = piece.prompt_logprobs
        first = piece.index not in self._started
        self._started.add(piece.index)
        if self.kind == "chat":
            if first:
                out += frame(self._chunk([self._choice(piece.index, {"role": "assistant", "content": ""}, None,
                                                       None)]))
            logprobs = chat_logprobs(self.token_bytes, piece.logprobs or []) if self.logprobs else None
            out += frame(self._chunk([self._choice(piece.index, {"content": piece.text} if piece.text else {},
                                                   logprobs, piece.finish_reason)]))
        else:
            logprobs = self._completion_logprobs(piece.index, piece.token_ids, piece.logprobs or [], first)
            text = (self.echo if first else "") + piece.text
            out += frame(self._chunk([self._choice(piece.index, text, logprobs, piece.finish_reason)]))
        if piece.is_end:
            if self.include_usage:
                out += frame({**self._chunk([]), "usage": usage(piece.prompt_tokens, piece.completion_tokens)})
            out += DONE
        return out

    def _choice(self, index: int, content: dict[str, str] | str, logprobs: dict[str, Any] | None,
                finish_reason: str | None) -> dict[str, Any]:
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": index, "delta": content, "logprobs": logprobs,
                                      "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": content, "logprobs": logprobs, "finish_reason": finish_reason}
        return {**choice, **self.choice_extra}


def error_frames(body: dict[str, Any]) -> bytes:
    """An error after the stream started: one frame with the route's error body, then [DONE]."""
    return frame(body) + DONE
