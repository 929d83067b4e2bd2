"""Usage per day, app and service over a range of days, as JSON for the charts or as a CSV download."""
from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...config import Settings
from ...platform import Platform
from .guard import console_router, run

CSV_COLUMNS = ("day", "app_name", "api_name", "calls", "succeeded", "failed", "prompt_tokens", "completion_tokens",
               "total_tokens")


def router(platform: Platform, settings: Settings) -> APIRouter:
    r = console_router(platform, settings)

    def rows(since: str | None, until: str | None, app: str | None, service: str | None) -> list[dict[str, Any]]:
        return [row.to_dict() for row in platform.usage(app=app or None, service=service or None,
                                                        since=since or None, until=until or None)]

    @r.get("/usage", summary="usage rows (days in quota_timezone) from `since` to `until`, both included")
    async def usage(since: str | None = None, until: str | None = None, app: str | None = None,
                    service: str | None = None) -> dict[str, Any]:
        return {"rows": await run(rows, since, until, app, service), "today": await run(platform.today)}

    @r.get("/usage.csv", summary="the same rows as CSV", response_class=Response,
           responses={200: {"description": "a CSV download", "content": {"text/csv": {"schema": {"type": "string"}}}}})
    async def usage_csv(since: str | None = None, until: str | None = None, app: str | None = None,
                        service: str | None = None) -> Response:
        data = await run(rows, since, until, app, service)
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(data)
        name = f"neoxserve-usage-{since or 'start'}-{until or 'today'}.csv"
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return r
