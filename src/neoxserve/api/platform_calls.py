"""Calling the platform from request handlers: off the event loop, PlatformError -> ApiError."""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from fastapi import Request

from ..platform.errors import PlatformError
from .errors import ApiError


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Await `fn(*args)`; a sync `fn` (the Platform's store calls: SQLite may wait up to its busy timeout for the
    write lock, Redis for the network) runs in a worker thread, so it never stalls other requests' streams."""
    try:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        result = await asyncio.to_thread(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except PlatformError as e:
        raise ApiError(e.code, e.message) from e


async def authenticate(platform: Any, request: Request) -> Any:
    """The calling app: from an IAM signature (`Authorization: bce-auth-v1/...`) or `?access_token=`."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bce-auth-v1/"):
        return await call(platform.authenticate_iam, request.method, request.url.path,
                          request.query_params, request.headers)
    # the platform answers a missing or malformed token with 100
    return await call(platform.authenticate_token, request.query_params.get("access_token"))
