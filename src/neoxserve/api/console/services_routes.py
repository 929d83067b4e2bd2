"""Services: list (with the apps allowed to call each), publish (with sampling defaults and maximum output),
unpublish."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...platform.records import SAMPLING_RULES, SERVICE_DEFAULT_FIELDS
from ...config import Settings
from ...platform import Platform
from .guard import console_router, run
from .schemas import NewService


def router(platform: Platform, settings: Settings) -> APIRouter:
    r = console_router(platform, settings, "/services")

    def listing() -> list[dict[str, Any]]:
        allowed = platform.allowed_apps()
        return [{**s.to_dict(), "allowed_apps": allowed.get(s.api_name, [])} for s in platform.list_services()]

    @r.get("", summary="every published service, its sampling defaults and the apps allowed to call it; the rules "
                       "of the sampling defaults")
    async def list_services() -> dict[str, Any]:
        rules = {name: SAMPLING_RULES[name].message for name in SERVICE_DEFAULT_FIELDS}
        return {"services": await run(listing), "rules": rules,
                "default_max_output_tokens": settings.default_max_output_tokens}

    @r.post("", status_code=201, summary="publish a service")
    async def publish(body: NewService) -> dict[str, Any]:
        fields = body.model_dump(exclude={"api_name", "model", "allow"})
        service = await run(platform.publish, body.api_name, body.model, allow=body.allow, **fields)
        return {**service.to_dict(), "allowed_apps": body.allow}

    @r.delete("/{api_name}", status_code=204, summary="unpublish a service (apps lose their permission for it)")
    async def unpublish(api_name: str) -> Response:
        await run(platform.unpublish, api_name)
        return Response(status_code=204)

    return r
