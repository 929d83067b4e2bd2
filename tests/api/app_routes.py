"""The routes an app serves, flattened: FastAPI >= 0.160 keeps included routers (the console's) as such in
`app.routes`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI


def flat_routes(app: FastAPI) -> Sequence[Any]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return app.routes
    return list(iter_route_contexts(app.routes))
