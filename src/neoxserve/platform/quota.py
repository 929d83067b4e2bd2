"""The quota rules: the windows requests are counted in, the order limits are checked in, and how long a refused
client should wait. The SQLite store applies `check` in a transaction; the Redis store's ADMIT script restates
the same order in Lua and turns its refusal code into the same error with `refusal`.

Windows are fixed: the current second (QPS), the current minute of unix time (RPM, TPM: an exhausted minute
refreshes within 0-60 s, as on Qianfan), the current day in quota_timezone (daily), and forever (total).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import DAILY_LIMIT, QPS_LIMIT, RPM_LIMIT, TOTAL_LIMIT, TPM_LIMIT, QuotaError
from .records import Limits, rate_limit_headers


@dataclass(frozen=True)
class Window:
    """The moment a request is admitted, and the windows it falls in."""

    now: float
    day: str          # YYYY-MM-DD in quota_timezone
    day_end: float    # unix time when that day ends

    @property
    def second(self) -> int:
        return int(self.now)

    @property
    def minute(self) -> int:
        return int(self.now // 60)

    def seconds_until(self, t: float) -> int:
        """Whole seconds until `t`, at least 1 (what a Retry-After header can say)."""
        return max(1, math.ceil(t - self.now))


@dataclass(frozen=True)
class Usage:
    """What an app has used in each window before this request (0 for windows that have moved on)."""

    total: int
    day: int
    second: int
    minute_requests: int
    minute_tokens: int


def check(limits: Limits, window: Window, used: Usage, reserve_tokens: int) -> None:
    """Raise QuotaError for the first limit this request would exceed. Non-retryable limits first (the SDK
    retries 18, 336501 and 336502, but retrying 19 or 17 is pointless), then the shortest window."""
    if limits.total is not None and used.total >= limits.total:
        raise refusal(TOTAL_LIMIT, limits, window, used, reserve_tokens)
    if limits.daily is not None and used.day >= limits.daily:
        raise refusal(DAILY_LIMIT, limits, window, used, reserve_tokens)
    if limits.qps is not None and used.second >= limits.qps:
        raise refusal(QPS_LIMIT, limits, window, used, reserve_tokens)
    if limits.rpm is not None and used.minute_requests >= limits.rpm:
        raise refusal(RPM_LIMIT, limits, window, used, reserve_tokens)
    if limits.tpm is not None and used.minute_tokens + reserve_tokens > limits.tpm:
        raise refusal(TPM_LIMIT, limits, window, used, reserve_tokens)


def refusal(code: int, limits: Limits, window: Window, used: Usage, reserve_tokens: int) -> QuotaError:
    """The error for a refusal by limit `code`, with the seconds until its window frees and the rate headers."""
    headers = rate_limit_headers(limits, used.minute_requests, used.minute_tokens)
    next_minute = (window.minute + 1) * 60
    retry_after: int | None
    if code == TOTAL_LIMIT:
        retry_after, detail = None, f"total limit {limits.total} reached"
    elif code == DAILY_LIMIT:
        retry_after, detail = window.seconds_until(window.day_end), f"daily limit {limits.daily} reached"
    elif code == QPS_LIMIT:
        retry_after, detail = window.seconds_until(window.second + 1), f"qps limit {limits.qps} reached"
    elif code == RPM_LIMIT:
        retry_after, detail = window.seconds_until(next_minute), f"rpm limit {limits.rpm} reached"
    elif code == TPM_LIMIT and limits.tpm is not None and reserve_tokens > limits.tpm:
        retry_after, detail = None, (f"the request needs {reserve_tokens} tokens (prompt + maximum output), more "
                                     f"than the tpm limit {limits.tpm}")
    elif code == TPM_LIMIT:
        retry_after, detail = window.seconds_until(next_minute), (f"tpm limit {limits.tpm} reached: "
                                                                  f"{reserve_tokens} tokens requested")
    else:
        raise ValueError(f"not a quota code: {code}")
    return QuotaError(code, retry_after, detail, headers)
