"""Access codes of the apps (`Authorization: ACCESSCODE <code>`, the qianfan SDK's private mode): list (ids only),
create (the code in the answer, once), revoke. The platform's `create_access_code` / `list_access_codes` /
`revoke_access_code`, as `neoxserve accesscodes` uses them."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...config import Settings
from ...platform import Platform
from .guard import console_router, run


def router(platform: Platform, settings: Settings) -> APIRouter:
    r = console_router(platform, settings)

    def listing(app: str | None) -> list[dict[str, Any]]:
        return [c.to_dict() for c in platform.list_access_codes(app)]

    @r.get("/accesscodes", summary="access codes (their ids, never the codes), of one app or of all")
    async def list_codes(app: str | None = None) -> dict[str, Any]:
        return {"codes": await run(listing, app or None)}

    @r.post("/apps/{name}/accesscodes", status_code=201,
            summary="a new access code for the app; the answer holds the code, shown only this once")
    async def create(name: str) -> dict[str, Any]:
        code = await run(platform.create_access_code, name)
        return {"code": code.to_dict()}

    @r.delete("/accesscodes/{code_id}", status_code=204, summary="revoke an access code by its id (ac-...): at once")
    async def revoke(code_id: str) -> Response:
        await run(platform.revoke_access_code, code_id)
        return Response(status_code=204)

    return r
