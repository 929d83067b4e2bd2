"""Plain records the platform hands out and its stores keep."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from collections.abc import Callable


@dataclass(frozen=True)
class Limits:
    """Per-app request quotas; None means no limit."""

    qps: int | None = None
    daily: int | None = None
    total: int | None = None

    @property
    def requests_per_minute(self) -> int | None:
        """The QPS limit as the per-minute figure of X-Ratelimit-Limit-Requests; None when there is no QPS limit."""
        return None if self.qps is None else self.qps * 60


@dataclass(frozen=True)
class StoredSecrets:
    """What the store keeps instead of the secrets: never printed, never logged."""

    secret_key_hash: bytes = field(repr=False)
    secret_key_salt: bytes = field(repr=False)
    secret_access_key_enc: bytes = field(repr=False)


@dataclass(frozen=True)
class App:
    id: int
    name: str
    api_key: str
    access_key: str
    limits: Limits
    services: tuple[str, ...]  # api_names this app may call, sorted
    created_at: float
    secrets: StoredSecrets = field(repr=False, compare=False)
    token_generation: int = field(default=0, repr=False)  # bumped on rotate: older access tokens stop working

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "api_key": self.api_key, "access_key": self.access_key,
                "limits": asdict(self.limits), "services": list(self.services), "created_at": self.created_at}


@dataclass(frozen=True)
class NewKeys:
    """Credentials of a new or rotated app, shown to the operator once."""

    app_id: int
    name: str
    api_key: str
    secret_key: str = field(repr=False)
    access_key: str = ""
    secret_access_key: str = field(default="", repr=False)

    def to_dict(self) -> dict:
        return {"app_id": self.app_id, "name": self.name, "api_key": self.api_key, "secret_key": self.secret_key,
                "access_key": self.access_key, "secret_access_key": self.secret_access_key}


@dataclass(frozen=True)
class Service:
    """A published service: the api_name clients put in the URL, the model behind it, its sampling defaults."""

    api_name: str
    model: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    penalty_score: float | None = None
    max_output_tokens: int | None = None
    created_at: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# The ranges of the sampling fields, shared by request validation (336003) and a service's defaults (publish):
# name -> (integer?, the rule as the error messages say it, the check on a number of the right type).
SAMPLING_RULES: dict[str, tuple[bool, str, Callable[[float], bool]]] = {
    "temperature": (False, "in (0, 1.0]", lambda v: 0 < v <= 1),
    "top_p": (False, "in [0, 1.0]", lambda v: 0 <= v <= 1),
    "top_k": (True, "a positive integer", lambda v: v > 0),
    "penalty_score": (False, "in [1.0, 2.0]", lambda v: 1 <= v <= 2),
    "max_output_tokens": (True, "a positive integer", lambda v: v > 0),
}


@dataclass(frozen=True)
class TokenRecord:
    app_id: int
    generation: int
    expires_at: int


@dataclass(frozen=True)
class Admission:
    """An admitted request: the app's limits and the counts including this request."""

    limits: Limits
    second_count: int
    day_count: int
    total_count: int


@dataclass(frozen=True)
class Counters:
    day: str
    day_count: int
    total_count: int


@dataclass(frozen=True)
class UsageRow:
    day: str  # YYYY-MM-DD in settings.quota_timezone
    app_id: int
    app_name: str
    api_name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "total_tokens": self.total_tokens}
