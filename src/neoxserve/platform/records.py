"""Plain records the platform hands out and its stores keep."""
from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar


@dataclass(frozen=True)
class Limits:
    """Per-app limits; None means no limit. qps, rpm and tpm count in fixed windows (the current second, the
    current minute); daily and total count served requests (see Outcome)."""

    qps: int | None = None
    daily: int | None = None
    total: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    NAMES: ClassVar[tuple[str, ...]] = ("qps", "daily", "total", "rpm", "tpm")

    @property
    def requests_per_minute(self) -> int | None:
        """The per-minute request figure of X-Ratelimit-Limit-Requests: the tighter of the RPM limit and QPS x 60
        (a QPS limit can never admit more than that in a minute); None when neither is set."""
        figures = [v for v in (self.rpm, None if self.qps is None else self.qps * 60) if v is not None]
        return min(figures) if figures else None

    @property
    def tokens_per_minute(self) -> int | None:
        """The figure of X-Ratelimit-Limit-Tokens."""
        return self.tpm

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.NAMES}


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
                "limits": self.limits.to_dict(), "services": list(self.services), "created_at": self.created_at}


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


@dataclass(frozen=True)
class SamplingRule:
    """The values one sampling field may take: a positive integer, or a number in an interval. `message` is the
    rule as error messages say it; the bounds are read from it once, so what is said and what is checked agree."""

    message: str            # "a positive integer", or an interval such as "in (0, 1.0]"
    integer: bool = field(init=False)
    low: float = field(init=False)
    high: float | None = field(init=False)      # None: no upper bound
    low_open: bool = field(init=False)
    high_open: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.message == "a positive integer":
            bounds: tuple[bool, float, float | None, bool, bool] = (True, 1, None, False, False)
        else:
            found = re.fullmatch(r"in ([(\[])(-?[\d.]+), (-?[\d.]+)([)\]])", self.message)
            if found is None:
                raise ValueError(f"a sampling rule is an interval or 'a positive integer', not {self.message!r}")
            bounds = (False, float(found[2]), float(found[3]), found[1] == "(", found[4] == ")")
        for name, value in zip(("integer", "low", "high", "low_open", "high_open"), bounds, strict=True):
            object.__setattr__(self, name, value)

    def ok(self, value: float) -> bool:
        """Whether a number of the right type keeps the rule."""
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


# The ranges of the sampling fields, shared by request validation (336003), the OpenAPI document's bounds and a
# service's defaults (publish; the Service fields named here).
SAMPLING_RULES: dict[str, SamplingRule] = {
    "temperature": SamplingRule("in (0, 1.0]"),
    "top_p": SamplingRule("in [0, 1.0]"),
    "top_k": SamplingRule("a positive integer"),
    "penalty_score": SamplingRule("in [1.0, 2.0]"),
    "presence_penalty": SamplingRule("in [-2.0, 2.0]"),    # OpenAI's and Qianfan v2's
    "frequency_penalty": SamplingRule("in [-2.0, 2.0]"),
    "max_output_tokens": SamplingRule("a positive integer"),
}

# The sampling defaults a published service can carry: its fields that have a rule above (the penalties of the
# OpenAI and v2 routes are per request only).
SERVICE_DEFAULT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Service) if f.name in SAMPLING_RULES)


@dataclass(frozen=True)
class TokenRecord:
    app_id: int
    generation: int
    expires_at: int


@dataclass(frozen=True)
class SessionRecord:
    """A console session as stored (under the hash of its token)."""

    key_id: str       # the admin key it was opened with: rotating the key ends every session
    expires_at: int


class Outcome(enum.Enum):
    """How an admitted request ended; `Platform.settle` records it.

    SUCCEEDED  answered in full: its daily/total quota stays used, TPM is charged its real tokens.
    FAILED     ended with an error after output was sent, or the client left: quota stays used (the work was
               done), TPM is charged the tokens actually processed; usage counts it as a failed call.
    NOT_SERVED failed before any output through no choice of the client (overload 336100, engine failure
               336000, an engine refusal): its daily/total quota is given back and its TPM reservation released;
               usage counts it as a failed call with no tokens.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_SERVED = "not_served"


@dataclass
class Admission:
    """An admitted request: what `settle` needs, and the counts including this request (for the rate headers).

    Not frozen: `settle` marks it settled, and a second settlement of the same admission is a bug (RuntimeError).
    """

    app_id: int
    app_name: str
    api_name: str
    day: str                 # the quota day the request was counted in
    minute: int              # the RPM/TPM window (unix time // 60) it was counted in
    reserved_tokens: int     # charged to the minute's TPM until settled
    limits: Limits           # the limits applied (read in the same atomic step)
    second_count: int
    day_count: int
    total_count: int
    minute_requests: int
    minute_tokens: int
    settled: bool = field(default=False, compare=False)

    @property
    def remaining_requests(self) -> int | None:
        """Requests the app may still make in this minute: requests_per_minute minus the minute's count."""
        return remaining(self.limits.requests_per_minute, self.minute_requests)

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens left in this minute's TPM budget, reservations of requests in flight included."""
        return remaining(self.limits.tpm, self.minute_tokens)

    def rate_limit_headers(self) -> dict[str, str]:
        return rate_limit_headers(self.limits, self.minute_requests, self.minute_tokens)


def remaining(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(0, limit - used)


def rate_limit_headers(limits: Limits, minute_requests: int, minute_tokens: int) -> dict[str, str]:
    """The X-Ratelimit-* headers of a model answer, from the current minute's counts: the requests pair when QPS
    or RPM is set, the tokens pair when TPM is set, none without such limits."""
    headers = {}
    if limits.requests_per_minute is not None:
        headers["X-Ratelimit-Limit-Requests"] = str(limits.requests_per_minute)
        headers["X-Ratelimit-Remaining-Requests"] = str(remaining(limits.requests_per_minute, minute_requests))
    if limits.tpm is not None:
        headers["X-Ratelimit-Limit-Tokens"] = str(limits.tpm)
        headers["X-Ratelimit-Remaining-Tokens"] = str(remaining(limits.tpm, minute_tokens))
    return headers


@dataclass(frozen=True)
class Counters:
    day: str
    day_count: int
    total_count: int
    minute_requests: int = 0
    minute_tokens: int = 0


@dataclass(frozen=True)
class UsageRow:
    """One (day, app, service) row of call statistics: Qianfan's console figures succeedCallTotal,
    failureCallTotal, inputTokensTotal and outputTokensTotal; callTotal is `calls`."""

    day: str  # YYYY-MM-DD in settings.quota_timezone
    app_id: int
    app_name: str
    api_name: str
    succeeded: int
    failed: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def calls(self) -> int:
        return self.succeeded + self.failed

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        return {"day": self.day, "app_id": self.app_id, "app_name": self.app_name, "api_name": self.api_name,
                "calls": self.calls, "succeeded": self.succeeded, "failed": self.failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class ApiKey:
    """A bearer API key as listed: never the key itself, only its public id (the `ALTAK-...` part)."""

    id: str
    app_id: int
    app_name: str
    created_at: float
    expires_at: int | None = None  # unix seconds; None: never

    def status(self, now: float) -> str:
        return "expired" if self.expires_at is not None and now >= self.expires_at else "active"

    def to_dict(self, now: float) -> dict:
        return {"id": self.id, "app_id": self.app_id, "app_name": self.app_name, "created_at": self.created_at,
                "expires_at": self.expires_at, "status": self.status(now)}


@dataclass(frozen=True)
class NewApiKey:
    """A new API key, shown to the operator once."""

    id: str
    key: str = field(repr=False)
    app_id: int = 0
    app_name: str = ""
    created_at: float = 0.0
    expires_at: int | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "key": self.key, "app_id": self.app_id, "app_name": self.app_name,
                "created_at": self.created_at, "expires_at": self.expires_at}


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the store keeps of an API key, looked up by the SHA-256 of the key."""

    id: str
    app_id: int
    expires_at: int | None


@dataclass(frozen=True)
class AccessCode:
    """An access code as listed: its public id (the `ac-...` part), never the code."""

    id: str
    app_id: int
    app_name: str
    created_at: float

    def to_dict(self) -> dict:
        return {"id": self.id, "app_id": self.app_id, "app_name": self.app_name, "created_at": self.created_at}


@dataclass(frozen=True)
class NewAccessCode:
    """A new access code, shown to the operator once."""

    id: str
    code: str = field(repr=False)
    app_id: int = 0
    app_name: str = ""
    created_at: float = 0.0

    def to_dict(self) -> dict:
        return {"id": self.id, "code": self.code, "app_id": self.app_id, "app_name": self.app_name,
                "created_at": self.created_at}


@dataclass(frozen=True)
class AccessCodeRecord:
    """What the store keeps of an access code, looked up by its id: the SHA-256 of the whole code."""

    id: str
    app_id: int
    code_hash: bytes = field(repr=False)
