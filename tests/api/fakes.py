"""A small stand-in with the engine client's interface, for failures the real engine cannot produce on demand.

mypy checks FakeEngine against engine.client.EngineClient (see `_is_an_engine_client`), so the fake cannot drift
from the interface the API is written against.
"""
from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path

from neoxserve.engine.client import EngineClient, TooManyTokens
from neoxserve.engine.errors import EngineInternalError
from neoxserve.engine.outputs import Delta, TokenLogprob
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

    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes:
        return chr(token_id).encode()

    vocab_size = 0x110000

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(map(chr, ids))

    def id_to_token(self, token_id: int) -> str | None:
        return chr(token_id)


def fake_logprob(token_id: int, position: int, k: int) -> TokenLogprob:
    """A made-up but well-formed entry: the token is the most likely, alternatives follow in order."""
    logprob = -0.25 * (position % 4)
    return TokenLogprob(token_id, logprob, tuple((token_id + j, logprob - j) for j in range(k)))


@functools.cache
def tokenizer_dir() -> str:
    """A directory holding the demo model's tokenizer.json: where the HTTP side's grammar compiler
    (api/structured.py) reads the model's vocabulary from."""
    from neoxserve.model.demo import build_tokenizer

    path = Path(tempfile.mkdtemp(prefix="fake-model-"))
    build_tokenizer().save(str(path / "tokenizer.json"))
    return str(path)


class FakeEngine:
    def __init__(self, text: str = "Hello world. 你好！ end", delay: float = 0.0, fail: Exception | None = None,
                 fail_after: int | None = None, close_delay: float = 0.0) -> None:
        self.tokenizer = CharTokenizer()
        self.model_info = ModelInfo(name="fake", path=tokenizer_dir(), max_context=64, is_chat=True)
        self.text = text
        self.delay = delay
        self.fail = fail
        self.fail_after = fail_after
        self.close_delay = close_delay   # closing a generation waits this long (the real client's abort round trip)
        self.running = 0
        self.calls: list[tuple[str, list[int], SamplingParams]] = []
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive

    def readiness(self) -> Readiness:
        return Readiness(EngineState.READY) if self.alive else Readiness(EngineState.FAILED, "the fake is down")

    def stats(self) -> Mapping[str, object]:
        return {"running": self.running, "generation_tokens_total": 3}

    def sample_text(self, index: int) -> str:
        """What sample `index` of a request says: the text rotated by `index` characters, so samples differ."""
        return self.text[index:] + self.text[:index]

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams) -> AsyncGenerator[Delta, None]:
        """Like the engine: the n samples' deltas interleaved (tagged with their index), logprobs when asked."""
        self.calls.append((request_id, list(prompt_token_ids), params))
        if self.fail is not None:
            raise self.fail
        self.running += 1
        prompt_logprobs = None
        if params.prompt_logprobs is not None:
            prompt_logprobs = [None, *(fake_logprob(t, p, params.prompt_logprobs)
                                       for p, t in enumerate(prompt_token_ids[1:], 1))]
        try:
            texts = [self.sample_text(j)[: params.max_new_tokens] for j in range(params.n)]
            for i in range(len(texts[0])):
                if i == self.fail_after:
                    raise EngineInternalError("the step failed")
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = i == len(texts[0]) - 1
                for j, text in enumerate(texts):
                    t = ord(text[i])
                    yield Delta(request_id, text[i], [t], len(prompt_token_ids), i + 1, finished=last,
                                finish_reason="length" if last else None, index=j,
                                logprobs=None if params.logprobs is None else [fake_logprob(t, i, params.logprobs)],
                                prompt_logprobs=prompt_logprobs if i == 0 and j == 0 else None)
        finally:
            self.running -= 1
            if self.close_delay:
                await asyncio.sleep(self.close_delay)


def _is_an_engine_client(engine: FakeEngine) -> EngineClient:
    return engine
