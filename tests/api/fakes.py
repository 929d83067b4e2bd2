"""A small stand-in with the engine client's interface, for failures the real engine cannot produce on demand.

mypy checks FakeEngine against engine.client.EngineClient (see `_is_an_engine_client`), so the fake cannot drift
from the interface the API is written against.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence

from neoxserve.engine.client import EngineClient, TooManyTokens
from neoxserve.engine.errors import EngineInternalError
from neoxserve.engine.outputs import Delta
from neoxserve.engine.protocol import ModelInfo
from neoxserve.engine.readiness import EngineState, Readiness
from neoxserve.engine.sampling_params import SamplingParams


class CharTokenizer:
    """One token per character."""

    max_chars_per_token = 1.0

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        if max_tokens is not None and len(text) > max_tokens:
            raise TooManyTokens(len(text), max_tokens)
        return [ord(c) for c in text]

    def encode_chat(self, messages: Sequence[Mapping[str, str]], system: str | None = None,
                    max_tokens: int | None = None) -> list[int]:
        out = "<S>" + (system or "")
        for m in messages:
            out += ("<U>" if m["role"] == "user" else "<A>") + m["content"]
        return self.encode(out + "<A>", max_tokens)


class FakeEngine:
    def __init__(self, text: str = "Hello world. 你好！ end", delay: float = 0.0, fail: Exception | None = None,
                 fail_after: int | None = None) -> None:
        self.tokenizer = CharTokenizer()
        self.model_info = ModelInfo(name="fake", path="", max_context=64, is_chat=True)
        self.text = text
        self.delay = delay
        self.fail = fail
        self.fail_after = fail_after
        self.running = 0
        self.calls: list[tuple[str, list[int], SamplingParams]] = []
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive

    def readiness(self) -> Readiness:
        return Readiness(EngineState.READY) if self.alive else Readiness(EngineState.FAILED, "the fake is down")

    def stats(self) -> Mapping[str, object]:
        return {"running": self.running, "generation_tokens_total": 3}

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams) -> AsyncGenerator[Delta, None]:
        self.calls.append((request_id, list(prompt_token_ids), params))
        if self.fail is not None:
            raise self.fail
        self.running += 1
        try:
            text = self.text[: params.max_new_tokens]
            for i, c in enumerate(text):
                if i == self.fail_after:
                    raise EngineInternalError("the step failed")
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = i == len(text) - 1
                yield Delta(request_id, c, [ord(c)], len(prompt_token_ids), i + 1, finished=last,
                            finish_reason="length" if last else None)
        finally:
            self.running -= 1


def _is_an_engine_client(engine: FakeEngine) -> EngineClient:
    return engine
