"""Small stand-ins with the engine client's and the platform's interfaces, for handler unit tests."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from neoxserve.engine.errors import EngineDead, EngineOverloaded, RequestRejected
from neoxserve.engine.outputs import Delta
from neoxserve.platform.errors import PlatformError
from neoxserve.platform.models import Admission, App, Limits, Service


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


@dataclass
class Info:
    name: str = "fake"
    path: str = ""
    max_context: int = 64
    is_chat: bool = True


class FakeEngine:
    def __init__(self, text: str = "Hello world. 你好！ end", delay: float = 0.0, fail: Exception | None = None):
        self.tokenizer = CharTokenizer()
        self.model_info = Info()
        self.text = text
        self.delay = delay
        self.fail = fail
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
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = i == len(text) - 1
                yield Delta(request_id, c, [ord(c)], len(prompt_token_ids), i + 1, finished=last,
                            finish_reason="length" if last else None)
        finally:
            self.running -= 1


@dataclass
class FakePlatform:
    qps: int | None = None
    tokens: dict = field(default_factory=lambda: {"good": "ok", "old": "expired"})
    usage: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def app(self) -> App:
        return App(1, "default", "ak", "iamak", Limits(qps=self.qps), ("svc",), 0.0)

    def issue_token(self, grant_type, client_id, client_secret):
        from neoxserve.platform.errors import bad_client_secret, unknown_client
        if client_id != "ak":
            raise unknown_client()
        if client_secret != "sk":
            raise bad_client_secret()
        return {"access_token": "good", "expires_in": 2592000}

    def authenticate_token(self, token):
        state = self.tokens.get(token)
        if state is None:
            raise PlatformError(110)
        if state == "expired":
            raise PlatformError(111)
        return self.app()

    def authenticate_iam(self, method, path, query, headers):
        raise PlatformError(14)

    def get_service(self, api_name):
        if api_name not in ("svc", "denied"):
            raise PlatformError(336005)
        return Service(api_name, "fake", max_output_tokens=32)

    def check_permission(self, app, service):
        if service.api_name not in app.services:
            raise PlatformError(336004, f"app default may not call service {service.api_name}")

    def admit(self, app, service):
        second = int(time.time())
        n = self.seconds.get(second, 0) + 1
        self.seconds[second] = n
        if self.qps is not None and n > self.qps:
            raise PlatformError(18)
        return Admission(app.limits, n, n, n)

    def record_usage(self, app, service, prompt_tokens, completion_tokens):
        self.usage.append((prompt_tokens, completion_tokens))
