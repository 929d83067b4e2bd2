"""The web console: a page at /console and the admin JSON API under /console/api/ that it uses (docs/console.md).

Served by the API's own app (no extra process). Every /console/api/ route needs a session except login, and every
state change must come from this server's own origin (guard.py).
"""
from __future__ import annotations

from fastapi import FastAPI

from ...config import Settings
from ...engine.client import EngineClient
from ...platform import Platform

from . import (accesscodes_routes, apikeys_routes, apps_routes, overview_routes, pages, services_routes, session_routes,
               usage_routes)


def mount_console(app: FastAPI, settings: Settings, engine: EngineClient, platform: Platform) -> None:
    if not settings.console:
        return
    for r in (*session_routes.routers(platform, settings), apps_routes.router(platform, settings),
              apikeys_routes.router(platform, settings), accesscodes_routes.router(platform, settings),
              services_routes.router(platform, settings), usage_routes.router(platform, settings),
              overview_routes.router(platform, settings, engine), pages.router()):
        app.include_router(r)
    app.mount("/console/static", pages.static_files(), name="console-static")
