"""Calling the platform from request handlers: off the event loop, PlatformError -> ApiError."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from fastapi import Request

from ..platform import App, Platform
from ..platform.access_codes import SCHEME as ACCESS_CODE_SCHEME
from ..platform.errors import (IAM_FAILED, INVALID_PARAMETER, MESSAGES, TOKEN_EXPIRED, TOKEN_INVALID, PlatformError,
                               QuotaError)
from .errors import ApiError

P = ParamSpec("P")
T = TypeVar("T")


def _api_error(e: PlatformError) -> ApiError:
    """The ApiError of the same code and message (with the Retry-After and X-Ratelimit-* of a QuotaError)."""
    if isinstance(e, QuotaError):
        return ApiError(e.code, e.message, retry_after=e.retry_after, headers=e.headers)
    return ApiError(e.code, e.message)


async def platform_call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args)` in a worker thread: the Platform's store calls block (SQLite may wait up to its busy timeout for
    the write lock, Redis for the network), and must never stall other requests' streams. PlatformError becomes
    the ApiError of the same code and message."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except PlatformError as e:
        raise _api_error(e) from e


def platform_check(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args)` on the event loop, for a platform check that reads no store (a thread hop would cost more than
    the check); PlatformError becomes the ApiError of the same code and message."""
    try:
        return fn(*args, **kwargs)
    except PlatformError as e:
        raise _api_error(e) from e


def access_code(request: Request) -> str | None:
    """The code of `Authorization: ACCESSCODE <code>` (the qianfan SDK's private mode), else None."""
    scheme, _, code = request.headers.get("authorization", "").partition(" ")
    return code.strip() if scheme.upper() == ACCESS_CODE_SCHEME else None


async def authenticate(platform: Platform, request: Request) -> App:
    """The calling app: from an access code (`Authorization: ACCESSCODE <code>`), an IAM signature
    (`Authorization: bce-auth-v1/...`) or `?access_token=`."""
    code = access_code(request)
    if code is not None:
        return await platform_call(platform.authenticate_access_code, code)
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bce-auth-v1/"):
        return await platform_call(platform.authenticate_iam, request.method, request.url.path,
                                   request.query_params, request.headers)
    # the platform answers a missing or malformed token with 100
    return await platform_call(platform.authenticate_token, request.query_params.get("access_token"))


# What the HTTP-status routes say about a refused bearer credential or access code (v1 sends Qianfan's fixed text).
BEARER_REFUSALS = {
    IAM_FAILED: "the access code is unknown, revoked or malformed",
    INVALID_PARAMETER: "the bearer token is malformed: expected an API key (bce-v3/ALTAK-...)",
    TOKEN_INVALID: "the API key or bearer token is unknown or revoked",
    TOKEN_EXPIRED: "the API key or bearer token has expired",
}


async def authenticate_bearer(platform: Platform, request: Request) -> App:
    """The calling app of the OpenAI and v2 routes: `Authorization: Bearer <API key or bearer token>`, or
    `Authorization: ACCESSCODE <code>`. A key belongs to one app; an `appid` header (Qianfan v2: the app that usage
    goes to) must name that app."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    code = access_code(request)
    if code is None and (scheme.lower() != "bearer" or not token.strip()):
        raise ApiError(INVALID_PARAMETER, MESSAGES[INVALID_PARAMETER],
                       detail="the Authorization header must be 'Bearer <API key>' or 'ACCESSCODE <code>'")
    try:
        if code is not None:
            app = await platform_call(platform.authenticate_access_code, code)
        else:
            app = await platform_call(platform.authenticate_bearer, token.strip())
    except ApiError as e:
        e.detail = BEARER_REFUSALS.get(e.code, e.detail)
        raise
    appid = request.headers.get("appid")
    if appid is not None and appid.strip() != str(app.id):
        raise ApiError(TOKEN_INVALID, MESSAGES[TOKEN_INVALID],
                       detail=f"the appid header is {appid.strip()[:32]!r}, but the credential belongs to the app "
                              f"with id {app.id}")
    return app
