"""Bearer API keys of the apps (for the v2 and OpenAI routes): list (ids only), create (the key in the answer, once),
revoke. The platform's `create_api_key` / `list_api_keys` / `revoke_api_key`, as `neoxserve apikeys` uses them."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...config import Settings
from ...platform import Platform
from .guard import console_router, run
from .schemas import NewApiKeyBody


def router(platform: Platform, settings: Settings) -> APIRouter:
    r = console_router(platform, settings)

    def listing(app: str | None) -> list[dict[str, Any]]:
        now = platform.clock()
        return [k.to_dict(now) for k in platform.list_api_keys(app)]

    @r.get("/apikeys", summary="API keys (their ids, never the keys), of one app or of all")
    async def list_keys(app: str | None = None) -> dict[str, Any]:
        return {"keys": await run(listing, app or None)}

    @r.post("/apps/{name}/apikeys", status_code=201,
            summary="a new API key for the app; the answer holds the key, shown only this once")
    async def create(name: str, body: NewApiKeyBody) -> dict[str, Any]:
        key = await run(platform.create_api_key, name, body.expires_in)
        return {"key": key.to_dict()}

    @r.delete("/apikeys/{key_id}", status_code=204, summary="revoke an API key by its id (ALTAK-...): at once")
    async def revoke(key_id: str) -> Response:
        await run(platform.revoke_api_key, key_id)
        return Response(status_code=204)

    return r
