"""Request bodies of the console API. Only shapes and types live here: the rules (names, limit values, sampling
ranges) are the platform's, so the CLI and the console refuse the same input with the same message."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ...platform.records import SAMPLING_RULES, SERVICE_DEFAULT_FIELDS


class ErrorDetail(BaseModel):
    code: str = Field(description="bad_request, no_session, expired, wrong_key, cross_site, not_found, conflict or "
                                  "throttled")
    message: str = Field(description="what was wrong, in words")


class ErrorBody(BaseModel):
    """Every console API refusal."""

    error: ErrorDetail


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Login(Body):
    key: str = Field(max_length=256, description="the admin key printed by `serve` or `admin rotate-key`")


class LimitsBody(Body):
    """The fields of the platform's `Limits` (one each of `Limits.NAMES`); null (or absent) means no limit."""

    qps: int | None = Field(default=None, description="requests per second (error 18 beyond)")
    daily: int | None = Field(default=None, description="served requests per day (error 17 beyond)")
    total: int | None = Field(default=None, description="served requests in total (error 19 beyond)")
    rpm: int | None = Field(default=None, description="requests per minute (error 336501 beyond)")
    tpm: int | None = Field(default=None, description="prompt + completion tokens per minute (error 336502 beyond)")


class NewApp(Body):
    name: str
    services: list[str] = Field(default_factory=list, description="api_names the app may call")
    limits: LimitsBody = Field(default_factory=LimitsBody)


class ServiceName(Body):
    api_name: str
    model: str
    allow: list[str] = Field(default_factory=list, description="apps allowed to call it")


# A service's sampling defaults (SERVICE_DEFAULT_FIELDS, ruled by the platform's SAMPLING_RULES), each optional.
_SAMPLING_FIELDS: dict[str, Any] = {name: (int | None if SAMPLING_RULES[name].integer else float | None, None)
                                    for name in SERVICE_DEFAULT_FIELDS}
if TYPE_CHECKING:
    NewService = ServiceName   # what the code reads by name; the sampling fields are read with model_dump
else:
    NewService = create_model("NewService", __base__=ServiceName, **_SAMPLING_FIELDS)


class NewApiKeyBody(Body):
    expires_in: int | None = Field(default=None, description="lifetime in seconds; null: until revoked")


class PlaygroundToken(Body):
    app: str
