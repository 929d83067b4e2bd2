"""The overview (model, device, dtype, engine gauges and counters, readiness) and the playground's access token."""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from ...config import Settings
from ...engine.client import EngineClient
from ...platform import Platform
from .guard import console_router, run
from .schemas import PlaygroundToken

PLAYGROUND_TOKEN_TTL = 3600


def _scalars(stats: Mapping[str, object]) -> dict[str, object]:
    """The engine's gauges and counters; histograms (dicts with buckets) stay on /metrics."""
    return {k: v for k, v in stats.items() if not (isinstance(v, dict) and "buckets" in v)}


def router(platform: Platform, settings: Settings, engine: EngineClient) -> APIRouter:
    r = console_router(platform, settings)

    @r.get("/overview", summary="model, engine state and counters (tokens/s comes from two readings' difference)")
    async def overview() -> dict[str, Any]:
        info = getattr(engine, "model_info", None)
        alive = engine.is_alive()
        stats = engine.stats() or {}
        apps, services = await run(lambda: (len(platform.list_apps()), len(platform.list_services())))
        return {
            "time": time.time(),
            "model": asdict(info) if info is not None else None,
            "ready": info is not None and alive,
            "engine_alive": alive,
            "restarts": stats.get("restarts"),   # set by engine supervision; null without it
            "stats": _scalars(stats),
            "apps": apps,
            "services": services,
            "default_max_output_tokens": settings.default_max_output_tokens,
        }

    @r.post("/playground/token", summary="a short-lived access token for an app, for the playground")
    async def playground_token(body: PlaygroundToken) -> dict[str, Any]:
        issued = await run(platform.issue_token_for, body.app, PLAYGROUND_TOKEN_TTL)
        return {"access_token": issued["access_token"], "expires_in": issued["expires_in"]}

    return r
