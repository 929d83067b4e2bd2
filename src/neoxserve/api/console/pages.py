"""The console page and its static files (all shipped in the package: no CDN, works offline).

The page is built with DOM calls (textContent, never innerHTML), and the Content-Security-Policy allows scripts
and styles only from this server, so text from the store (names, model names, error messages) can only ever show
as text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class ConsoleStatic(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"   # revalidate (ETag): an upgrade shows at once
        return response


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/console")
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @r.get("/console/")
    async def slash() -> Response:
        return RedirectResponse("/console", status_code=308)

    return r


def static_files() -> StaticFiles:
    return ConsoleStatic(directory=STATIC)
