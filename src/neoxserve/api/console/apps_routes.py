"""Apps: list, create (keys in the answer, once), show, rotate (new keys, once), delete, limits, allowed services."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...config import Settings
from ...platform import App, Limits, Platform
from .guard import console_router, run
from .schemas import LimitsBody, NewApp


def router(platform: Platform, settings: Settings) -> APIRouter:
    r = console_router(platform, settings, "/apps")

    def described(app: App) -> dict[str, Any]:
        counters = platform.counters(app.name)
        return {**app.to_dict(), "today": counters.day, "requests_today": counters.day_count,
                "requests_total": counters.total_count, "requests_this_minute": counters.minute_requests,
                "tokens_this_minute": counters.minute_tokens}

    def show(name: str) -> dict[str, Any]:
        return described(platform.get_app(name))

    @r.get("", summary="every app with its keys (not secrets), limits, services and request counts")
    async def list_apps() -> dict[str, Any]:
        return {"apps": await run(lambda: [described(a) for a in platform.list_apps()])}

    @r.post("", status_code=201, summary="create an app; the answer holds its secrets, shown only this once")
    async def create(body: NewApp) -> dict[str, Any]:
        keys = await run(platform.create_app, body.name, body.services, Limits(**body.limits.model_dump()))
        return {"keys": keys.to_dict(), "app": await run(show, body.name)}

    @r.get("/{name}", summary="one app")
    async def get(name: str) -> dict[str, Any]:
        return await run(show, name)

    @r.delete("/{name}", status_code=204, summary="delete an app (its access tokens stop working)")
    async def delete(name: str) -> Response:
        await run(platform.delete_app, name)
        return Response(status_code=204)

    @r.post("/{name}/rotate", summary="new keys, shown only this once; old keys and access tokens stop working")
    async def rotate(name: str) -> dict[str, Any]:
        keys = await run(platform.rotate_app, name)
        return {"keys": keys.to_dict(), "app": await run(show, name)}

    @r.put("/{name}/limits", summary="set the app's limits (null removes one)")
    async def limits(name: str, body: LimitsBody) -> dict[str, Any]:
        await run(platform.set_limits, name, Limits(**body.model_dump()))
        return await run(show, name)

    @r.put("/{name}/services/{api_name}", summary="let the app call a service")
    async def allow(name: str, api_name: str) -> dict[str, Any]:
        await run(platform.allow, name, api_name)
        return await run(show, name)

    @r.delete("/{name}/services/{api_name}", summary="stop the app calling a service")
    async def disallow(name: str, api_name: str) -> dict[str, Any]:
        await run(platform.disallow, name, api_name)
        return await run(show, name)

    return r
