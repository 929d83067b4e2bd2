"""Login, logout and the current session: an HttpOnly, SameSite=Strict cookie holding a random token whose hash
the platform keeps (so every replica sharing the store knows the session)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...config import Settings
from ...platform import Platform
from .guard import COOKIE, COOKIE_PATH, console_router, run
from .schemas import Login


def routers(platform: Platform, settings: Settings) -> list[APIRouter]:
    public = console_router(platform, settings, needs_session=False)
    private = console_router(platform, settings)

    @public.post("/login", summary="log in with the admin key (sets the session cookie)")
    async def login(request: Request, body: Login) -> Response:
        address = request.client.host if request.client else "unknown"
        session = await run(platform.admin.login, body.key, address)
        response = JSONResponse({"expires_at": session.expires_at})
        response.set_cookie(COOKIE, session.token, max_age=settings.console_session_ttl_seconds, path=COOKIE_PATH,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @private.post("/logout", status_code=204, summary="end this session (deletes it from the store)")
    async def logout(request: Request) -> Response:
        await run(platform.admin.logout, request.cookies.get(COOKIE, ""))
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    @private.get("/session", summary="the current session")
    async def current(request: Request) -> dict[str, Any]:
        record = await run(platform.admin.check_session, request.cookies.get(COOKIE))
        return {"expires_at": record.expires_at}

    return [public, private]
