"""The OpenAPI document served at /openapi.json: the pieces every route family's documentation uses, the probes, and
`install`, which finishes FastAPI's generated document.

The handlers keep their own validation (the error codes depend on it): the pydantic models of the documentation
only describe bodies, they never parse one; their ranges are read from the rules validation applies
(`rule_field`). Each route's decorator takes its documentation from a function of its family's module
(api/qianfan_v1/openapi.py, api/openai_v2/openapi.py) or here (`probe`), and `install` finishes the document: it
adds the request body schemas (registered with `json_body` and `component`), drops the 422 answers FastAPI assumes
for its own validation (never used here), adds the 413 answer of the body limit (api/limits.py) to the routes
outside the v1 family that do not document their own, and the `X-Baidu-Request-Id` header every answer carries.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..engine.readiness import EngineState
from ..platform.records import SAMPLING_RULES
from .fields import MAX_STOP_CHARS
from .route_table import Family, family_of

REF = "#/components/schemas/{model}"


def bound(value: float) -> int | float:
    """A bound as the document writes it: 1, not 1.0."""
    return int(value) if float(value).is_integer() else value


def rule_field(name: str, description: str | None = None) -> Any:
    """An optional body field with the bounds of SAMPLING_RULES[name]: what validation refuses, the document shows."""
    rule = SAMPLING_RULES[name]
    low = bound(rule.low)
    high = None if rule.high is None else bound(rule.high)
    return Field(None, gt=low if rule.low_open else None, ge=None if rule.low_open else low,
                 lt=high if rule.high_open else None, le=None if rule.high_open else high, description=description)


Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """The answer of /ready (docs/api.md, "Readiness")."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "not ready"]
    model_loaded: bool
    engine_alive: bool = Field(description="an engine process runs (serving, or loading the model)")
    engine: EngineState = Field(description="what the engine does: match on this, not on `reason`")
    reason: str | None = Field(None, description="why the engine is not ready (present with every 503), for "
                               "people and logs")


_json_bodies: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """openapi_extra for a JSON request body described by `model` (which `install` adds to the components)."""
    _json_bodies[model.__name__] = model
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}}


def component(model: type[BaseModel]) -> dict[str, str]:
    """A reference to `model`, which `install` adds to the components (for schemas FastAPI does not see, such as a
    stream event's data)."""
    _json_bodies[model.__name__] = model
    return {"$ref": REF.format(model=model.__name__)}


_RATE_HEADERS = {
    "X-Ratelimit-Limit-Requests": "requests per minute the app may make (the smaller of RPM and QPS x 60); only "
                                  "for apps with an RPM or QPS limit",
    "X-Ratelimit-Remaining-Requests": "requests left in this minute (this one counted)",
    "X-Ratelimit-Limit-Tokens": "tokens per minute (TPM) the app may use; only for apps with a TPM limit",
    "X-Ratelimit-Remaining-Tokens": "tokens left in this minute, after this request's reservation (prompt + "
                                    "maximum output)",
}
RATE_HEADERS = {name: {"description": what, "schema": {"type": "integer", "minimum": 0}}
                for name, what in _RATE_HEADERS.items()}
_PROBES: dict[str, tuple[str, type[BaseModel] | None]] = {
    "health": ("200 while the process runs", Health),
    "ready": ("200 when the model is loaded and the engine process alive, else 503 with the reason", Readiness),
    "metrics": ("Prometheus text exposition", None),
    "openapi": ("this document (OpenAPI 3.1)", None),
}


def probe(name: str, method: str, media_type: str = "application/json") -> dict[str, Any]:
    what, model = _PROBES[name]
    ok: dict[str, Any] = {"description": what}
    if model is not None:
        ok["model"] = model
    else:
        ok["content"] = {media_type: {"schema": {"type": "object" if name == "openapi" else "string"}}}
    responses: dict[int, dict[str, Any]] = {200: ok}
    if name == "ready":
        responses[503] = {"description": "not ready (the engine restarts, loads, failed or stops): take the replica "
                                         "out of rotation", "model": Readiness}
    return {"summary": what, "operation_id": f"{name}_{method.lower()}", "responses": responses}


TOO_LARGE = {"description": "the body is larger than max_body_bytes (refused unread)",
             "content": {"application/json": {"schema": {"$ref": REF.format(model="OAuthError")}}}}
REQUEST_ID = {"required": True, "description": "the request's Request_id header, or a new id",
              "schema": {"type": "string", "minLength": 1}}


def install(app: FastAPI, always: Sequence[type[BaseModel]]) -> None:
    """Make `app.openapi()` return the finished document (built once); `always` are models it lists whatever the
    routes refer to (a stream event's data, the 413 answer's body)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(always, get_openapi(
                title="neoxserve", version=__version__, routes=app.routes,
                description="Baidu Qianfan v1 completions protocol (docs/api.md)."))
        return app.openapi_schema

    app.openapi = openapi   # type: ignore[method-assign]


def _finish(always: Sequence[type[BaseModel]], doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [*_json_bodies.values(), *always]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas.update(defs.get("$defs", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in doc["paths"].items():
        for operation in item.values():
            # a parameter given in openapi_extra replaces the one FastAPI derived from the signature
            by_key = {(p["name"], p["in"]): p for p in operation.get("parameters", [])}
            operation["parameters"] = list(by_key.values())
            responses = operation["responses"]
            responses.pop("422", None)
            if family_of(path) is not Family.V1:   # v1 answers a body too large at HTTP 200
                responses.setdefault("413", TOO_LARGE)
            for answer in responses.values():
                answer["headers"] = {"X-Baidu-Request-Id": REQUEST_ID, **answer.get("headers", {})}
    return doc
