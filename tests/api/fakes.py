"""A small stand-in with the engine client's interface, for failures the real engine cannot produce on demand."""
from __future__ import annotations

import asyncio
from neoxserve.engine.errors import EngineInternalError
from neoxserve.engine.outputs import Delta
from neoxserve.engine.protocol import ModelInfo


class CharTokenizer:
    """One token per character."""

    stop_token_ids = (0,)
    is_chat = True

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True) -> str:
        return "".join(chr(i) for i in ids)

    def render_chat(self, messages, system=None) -> str:
        out = "<S>" + (system or "")
        for m in messages:
            out += ("<U>" if m["role"] == "user" else "<A>") + m["content"]
        return out + "<A>"

    def encode_chat(self, messages, system=None) -> list[int]:
        return self.encode(self.render_chat(messages, system))


class FakeEngine:
    def __init__(self, text: str = "Hello world. 你好！ end", delay: float = 0.0, fail: Exception | None = None,
                 fail_after: int | None = None):
        self.tokenizer = CharTokenizer()
        self.model_info = ModelInfo(name="fake", path="", max_context=64, is_chat=True)
        self.text = text
        self.delay = delay
        self.fail = fail
        self.fail_after = fail_after
        self.running = 0
        self.calls: list = []
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive

    def stats(self) -> dict:
        return {"running": self.running, "generation_tokens_total": 3}

    async def generate(self, request_id, prompt_token_ids, params):
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
