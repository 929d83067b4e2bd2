"""Request body -> a validated request, its prompt token ids and its moderation verdict, off the event loop.

Parsing, validation, tokenization and moderation cost time in proportion to the body (up to max_body_bytes): on
the event loop a 1 MB prompt stalled every other request, /health included, for about a second. They run in worker
threads instead, and the tokenizer releases the GIL while it encodes (model/tokenizer.py), so the loop keeps
answering. Bodies up to SMALL_BODY_BYTES use one pool and larger ones another, so that a few huge prompts cannot
hold up everyone's ordinary ones.

Before tokenizing, the prompt's length in characters is checked against what the model's context can possibly
hold (api/context_fit.py).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ..engine.client import PromptTokenizer, TooManyTokens
from ..engine.protocol import ModelInfo
from .context_fit import check_prompt_chars, max_prompt_chars
from .moderation import Moderator
from .completion_request import CompletionRequest

T = TypeVar("T")

SMALL_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class PreparedInput:
    req: CompletionRequest
    prompt_tokens: int
    prompt_ids: list[int] | None    # None past `ModelInfo.max_prompt_tokens`: context_fit.max_new_tokens refuses it
    is_safe: bool


class InputPreparer:
    def __init__(self, tokenizer: PromptTokenizer, model: ModelInfo, moderator: Moderator) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.moderator = moderator
        self.max_chars = max_prompt_chars(tokenizer.max_chars_per_token, model)
        self._small = ThreadPoolExecutor(2, thread_name_prefix="inputs-small")
        self._large = ThreadPoolExecutor(1, thread_name_prefix="inputs-large")

    async def run(self, body_size: int, work: Callable[[], T]) -> T:
        """`work()` in the pool for a body of `body_size` bytes."""
        pool = self._small if body_size <= SMALL_BODY_BYTES else self._large
        return await asyncio.get_running_loop().run_in_executor(pool, work)

    async def prepare(self, body_size: int, parse: Callable[[], CompletionRequest]) -> PreparedInput:
        return await self.run(body_size, lambda: self.prepare_now(parse))

    def prepare_now(self, parse: Callable[[], CompletionRequest]) -> PreparedInput:
        """The work itself, in the calling thread: `parse()` the body (each route has its parser), then tokenize
        the prompt (the chat template when the request has messages); ApiError for a body that is malformed or
        cannot fit."""
        req = parse()
        check_prompt_chars(req, self.max_chars, self.model)
        limit = self.model.max_prompt_tokens
        try:
            if req.messages:
                ids = self.tokenizer.encode_chat(req.messages, req.system, max_tokens=limit)
            else:
                ids = self.tokenizer.encode(req.prompt, max_tokens=limit)
        except TooManyTokens as e:
            return PreparedInput(req, e.count, None, True)
        return PreparedInput(req, len(ids), ids, self.moderator.is_safe(req.input_text()))
