"""Response helpers that notice a client leaving, so the generation behind the response is aborted at once.

Starlette's StreamingResponse only learns of a disconnect when a write fails (ASGI spec >= 2.4), which for a
slow generation may be many tokens later, and it does not close the body iterator; these race the work against
the `http.disconnect` message and always close what they started.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the response was ready."""


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(work: Awaitable[T], receive: Receive) -> T:
    """Run `work`; cancel it and raise ClientGone if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise ClientGone()
    return task.result()


class StreamResponse(StreamingResponse):
    """Writes the byte frames of `frames` as they come; stops and closes `frames` when the client leaves.

    `on_sent` is called after each frame has been handed to the server, which is how the caller knows what the
    client was sent: the generator behind `frames` is not resumed after its last frame when the client leaves
    right then (and a generator that never started does not run its `finally`). `on_close` is awaited once,
    however the response ends, shielded from cancellation so that what it records is recorded."""

    def __init__(self, frames: AsyncGenerator[bytes, None], media_type: str = "text/event-stream",
                 headers: dict[str, str] | None = None,
                 on_sent: Callable[[], None] | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(frames, media_type=media_type, headers=headers)
        self.frames = frames
        self.on_sent = on_sent
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for data in self.frames:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if self.on_sent is not None:
                    self.on_sent()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await unless_disconnected(pump(), receive)
        except (ClientGone, OSError):
            pass
        finally:
            await self.frames.aclose()
            if self.on_close is not None:
                await asyncio.shield(self.on_close())
