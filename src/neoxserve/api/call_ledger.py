"""How a model call ends, recorded once in the platform's quotas and usage, whichever route it came through.

A route tells the ledger what it learns as it goes (the app and the service, then the admission) and how the call
ends; the ledger picks the platform call (`docs/operations.md`, "Quotas and rate limits" and "Usage"):

- admitted and answered in full:               settle SUCCEEDED with the tokens
- admitted, output sent, then an error or the client left (or the client left before any output):
                                               settle FAILED with the tokens processed
- admitted, failed before any output reached the client (336100, 336000, an engine refusal):
                                               settle NOT_SERVED (quota given back)
- app and service known, failed before admission (bad body, 336004, refused by a limit):
                                               record_failure
- no app or no service (authentication failed, unknown api_name): nothing
"""
from __future__ import annotations

import logging
from typing import Any
from collections.abc import Callable

from ..platform import Platform
from ..platform.records import Admission, App, Outcome, Service
from .platform_calls import platform_call

log = logging.getLogger("neoxserve.api")


class CallLedger:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.app: App | None = None
        self.service: Service | None = None
        self.admission: Admission | None = None
        self.prompt_tokens = 0
        self.closed = False

    def identified(self, app: App, service: Service) -> None:
        """The calling app and the service it addressed are known: from now on every ending is recorded."""
        self.app, self.service = app, service

    def admitted(self, admission: Admission, prompt_tokens: int) -> None:
        self.admission, self.prompt_tokens = admission, prompt_tokens

    async def succeeded(self, completion_tokens: int) -> None:
        await self._settle(Outcome.SUCCEEDED, completion_tokens)

    async def ended_early(self, completion_tokens: int) -> None:
        """An error after output was sent, or the client left: the work done counts."""
        await self._settle(Outcome.FAILED, completion_tokens)

    async def failed(self) -> None:
        """An error before any output reached the client. Does nothing if the call was already recorded."""
        if self.closed:
            return
        if self.admission is not None:
            await self._settle(Outcome.NOT_SERVED, 0)
        elif self.app is not None and self.service is not None:
            self.closed = True
            await self._record(self.platform.record_failure, self.app, self.service)

    async def _settle(self, outcome: Outcome, completion_tokens: int) -> None:
        if self.closed:
            raise RuntimeError("a call was recorded twice")
        if self.admission is None:
            raise RuntimeError("settling a call that was not admitted")
        self.closed = True
        await self._record(self.platform.settle, self.admission, outcome, self.prompt_tokens, completion_tokens)

    @staticmethod
    async def _record(fn: Callable[..., Any], *args: Any) -> None:
        # The answer is already decided; a store failure here must not turn it into an error for the client.
        try:
            await platform_call(fn, *args)
        except Exception:
            log.exception("recording the call failed")
