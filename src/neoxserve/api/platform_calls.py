"""Calling the platform from request handlers: off the event loop, PlatformError -> ApiError."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from fastapi import Request

from ..platform import App, Platform
from ..platform.errors import PlatformError, QuotaError
from .errors import ApiError

P = ParamSpec("P")
T = TypeVar("T")


async def call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args)` in a worker thread: the Platform's store calls block (SQLite may wait up to its busy timeout for
    the write lock, Redis for the network), and must never stall other requests' streams. PlatformError becomes
    the ApiError of the same code and message (with the Retry-After and X-Ratelimit-* of a QuotaError)."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except QuotaError as e:
        raise ApiError(e.code, e.message, retry_after=e.retry_after, headers=e.headers) from e
    except PlatformError as e:
        raise ApiError(e.code, e.message) from e


async def authenticate(platform: Platform, request: Request) -> App:
    """The calling app: from an IAM signature (`Authorization: bce-auth-v1/...`) or `?access_token=`."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bce-auth-v1/"):
        return await call(platform.authenticate_iam, request.method, request.url.path,
                          request.query_params, request.headers)
    # the platform answers a missing or malformed token with 100
    return await call(platform.authenticate_token, request.query_params.get("access_token"))
