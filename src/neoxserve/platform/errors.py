"""Errors the platform raises, carrying Qianfan's codes and exact messages (docs/api.md#errors).

`message` is what goes on the wire. `detail` says what was actually wrong, for logs only: it never contains a
secret, and it is not sent to clients where the spec fixes the message (a signature failure must not tell an
attacker which part was wrong).
"""
from __future__ import annotations

# Codes the platform raises, with their exact Qianfan messages. 336004 has a cause-specific message.
IAM_FAILED = 14
DAILY_LIMIT = 17
QPS_LIMIT = 18
TOTAL_LIMIT = 19
INVALID_PARAMETER = 100
TOKEN_INVALID = 110
TOKEN_EXPIRED = 111
NO_PERMISSION = 336004
API_NAME_NOT_EXIST = 336005
RPM_LIMIT = 336501
TPM_LIMIT = 336502

MESSAGES = {
    IAM_FAILED: "IAM Certification failed",
    DAILY_LIMIT: "Open api daily request limit reached",
    QPS_LIMIT: "Open api qps request limit reached",
    TOTAL_LIMIT: "Open api total request limit reached",
    INVALID_PARAMETER: "Invalid parameter",
    TOKEN_INVALID: "Access token invalid or no longer valid",
    TOKEN_EXPIRED: "Access token expired",
    API_NAME_NOT_EXIST: "API name not exist",
    RPM_LIMIT: "Rate limit reached for RPM",
    TPM_LIMIT: "Rate limit reached for TPM",
}


class PlatformError(Exception):
    """A Qianfan business error: the API answers HTTP 200 with {"error_code": code, "error_msg": message}."""

    def __init__(self, code: int, message: str | None = None, detail: str = ""):
        self.code = code
        self.message = message if message is not None else MESSAGES[code]
        self.detail = detail or self.message
        super().__init__(f"{code}: {self.message}" + (f" ({detail})" if detail else ""))


class QuotaError(PlatformError):
    """A request refused by one of the app's limits: 19 total, 17 daily, 18 QPS, 336501 RPM, 336502 TPM.

    `retry_after` is the number of seconds until the window that refused it frees (what an HTTP 429 sends as
    Retry-After), or None when waiting does not help: the total limit, or a request that needs more tokens than
    the TPM limit allows in any minute. `headers` are the X-Ratelimit-* headers for the answer.
    """

    def __init__(self, code: int, retry_after: int | None, detail: str = "",
                 headers: dict[str, str] | None = None):
        super().__init__(code, detail=detail)
        self.retry_after = retry_after
        self.headers = headers or {}  # the X-Ratelimit-* headers of the refused answer (this request not counted)


class OAuthError(Exception):
    """A token endpoint error: the API answers `status` with {"error": error, "error_description": description}."""

    def __init__(self, status: int, error: str, description: str):
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{status} {error}: {description}")

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class BceError(Exception):
    """An error of a Baidu Cloud (BCE) style endpoint, GET /v1/BCE-BEARER/token: the API answers `status` with
    {"requestId", "code", "message"} and the X-Bce-Error-Code / X-Bce-Error-Message headers."""

    def __init__(self, status: int, code: str, message: str):
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")


class AdminError(Exception):
    """Bad input to an administrative operation (unknown app, duplicate name, invalid value): the CLI exits 2."""


class NotFound(AdminError):
    """The app or service named does not exist (the console API answers 404)."""


class Conflict(AdminError):
    """The name is taken (the console API answers 409)."""


class AdminAuthError(Exception):
    """A refused console login or session. `reason` is one of REASONS; `retry_after` (seconds) when throttled.

    The message never contains the key or the session token."""

    REASONS = ("wrong_key", "throttled", "no_session", "expired")

    def __init__(self, reason: str, message: str, retry_after: int = 0):
        assert reason in self.REASONS, reason
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        super().__init__(message)


def unknown_client() -> OAuthError:
    return OAuthError(401, "invalid_client", "unknown client id")


def bad_client_secret() -> OAuthError:
    return OAuthError(401, "invalid_client", "Client authentication failed")


def unsupported_grant() -> OAuthError:
    return OAuthError(400, "unsupported_grant_type", "The authorization grant type is not supported")


def missing_parameter(name: str) -> OAuthError:
    return OAuthError(400, "invalid_request", f"missing required parameter: {name}")
