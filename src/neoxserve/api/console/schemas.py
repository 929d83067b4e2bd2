"""Request bodies of the console API. Only shapes and types live here: the rules (names, limit values, sampling
ranges) are the platform's, so the CLI and the console refuse the same input with the same message."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model

from ...platform.models import SAMPLING_RULES


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Login(Body):
    key: str = Field(max_length=256, description="the admin key printed by `serve` or `admin rotate-key`")


class LimitsBody(Body):
    """Requests per second, per day, in total; null (or absent) means no limit."""

    qps: int | None = None
    daily: int | None = None
    total: int | None = None


class NewApp(Body):
    name: str
    services: list[str] = Field(default_factory=list, description="api_names the app may call")
    limits: LimitsBody = Field(default_factory=LimitsBody)


# A service's sampling defaults are the fields of the platform's SAMPLING_RULES, each optional.
NewService = create_model(
    "NewService", __base__=Body,
    api_name=(str, ...), model=(str, ...),
    allow=(list[str], Field(default_factory=list, description="apps allowed to call it")),
    **{name: (int | None if integer else float | None, None) for name, (integer, _, _) in SAMPLING_RULES.items()},
)


class PlaygroundToken(Body):
    app: str
