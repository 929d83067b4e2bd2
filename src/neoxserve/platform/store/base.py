"""The storage contract. Every method is one atomic step, safe to call from many threads and processes."""
from __future__ import annotations

from abc import ABC, abstractmethod

from ..records import (AccessCode, AccessCodeRecord, Admission, ApiKey, ApiKeyRecord, App, Counters, Limits, Outcome,
                       Service, SessionRecord, StoredSecrets, TokenRecord, UsageRow)
from ..quota import Window

# An expired token is remembered this long, so that it is reported as expired (111) rather than unknown (110).
TOKEN_GRACE_SECONDS = 7 * 86400


class Store(ABC):
    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def claim_meta(self, key: str, value: str) -> str:
        """Set `key` to `value` unless it is already set; return the stored value (the first writer wins)."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    # apps
    @abstractmethod
    def create_app(self, name: str, api_key: str, access_key: str, secrets: StoredSecrets, limits: Limits,
                   services: list[str], created_at: float) -> App:
        """Raise Conflict if the name is taken, NotFound if a service is not published."""

    @abstractmethod
    def get_app(self, app_id: int) -> App | None: ...

    @abstractmethod
    def app_by_name(self, name: str) -> App | None: ...

    @abstractmethod
    def app_by_api_key(self, api_key: str) -> App | None: ...

    @abstractmethod
    def app_by_access_key(self, access_key: str) -> App | None: ...

    @abstractmethod
    def list_apps(self) -> list[App]: ...

    @abstractmethod
    def rotate_app(self, app_id: int, api_key: str, access_key: str, secrets: StoredSecrets) -> bool:
        """Replace the credentials and bump the token generation (revoking every access token issued so far)."""

    @abstractmethod
    def set_limits(self, app_id: int, limits: Limits) -> bool: ...

    @abstractmethod
    def delete_app(self, app_id: int) -> bool:
        """Delete the app, its permissions, tokens, API keys, access codes and quota counters (usage history is
        kept)."""

    @abstractmethod
    def grant(self, app_id: int, api_name: str) -> None:
        """Raise NotFound if the app or the service does not exist."""

    @abstractmethod
    def revoke(self, app_id: int, api_name: str) -> bool: ...

    # access tokens and bearer tokens, by hash
    @abstractmethod
    def put_token(self, token_hash: bytes, record: TokenRecord, now: int) -> None:
        """Store a token; the store may forget tokens that expired more than a week before `now`."""

    @abstractmethod
    def get_token(self, token_hash: bytes) -> TokenRecord | None: ...

    @abstractmethod
    def delete_token(self, token_hash: bytes) -> bool: ...

    # console sessions, by hash
    @abstractmethod
    def put_session(self, session_hash: bytes, record: SessionRecord, now: int) -> None:
        """Store a session; the store may forget sessions that expired before `now`."""

    @abstractmethod
    def get_session(self, session_hash: bytes) -> SessionRecord | None: ...

    @abstractmethod
    def delete_session(self, session_hash: bytes) -> bool: ...

    @abstractmethod
    def take_login_attempt(self, address: str, now: float, window: float, limit: int) -> float | None:
        """Count one console login attempt from `address`, atomically, unless `limit` attempts from it were
        counted in the `window` seconds before `now`. None when counted; else the time the oldest counted attempt
        leaves the window (nothing is counted then)."""

    # services
    @abstractmethod
    def create_service(self, service: Service) -> None:
        """Raise Conflict if the api_name is taken."""

    @abstractmethod
    def get_service(self, api_name: str) -> Service | None: ...

    @abstractmethod
    def list_services(self) -> list[Service]: ...

    @abstractmethod
    def delete_service(self, api_name: str) -> bool:
        """Unpublish: the service and every app's permission for it go."""

    # API keys, by hash
    @abstractmethod
    def create_api_key(self, key_hash: bytes, record: ApiKeyRecord, created_at: float) -> None:
        """Raise NotFound if the app does not exist."""

    @abstractmethod
    def get_api_key(self, key_hash: bytes) -> ApiKeyRecord | None: ...

    @abstractmethod
    def list_api_keys(self, app_id: int | None = None) -> list[ApiKey]:
        """Sorted by app name, then creation time."""

    @abstractmethod
    def delete_api_key(self, key_id: str) -> bool: ...

    # access codes, by id
    @abstractmethod
    def create_access_code(self, record: AccessCodeRecord, created_at: float) -> None:
        """Raise NotFound if the app does not exist."""

    @abstractmethod
    def get_access_code(self, code_id: str) -> AccessCodeRecord | None: ...

    @abstractmethod
    def list_access_codes(self, app_id: int | None = None) -> list[AccessCode]:
        """Sorted by app name, then creation time."""

    @abstractmethod
    def delete_access_code(self, code_id: str) -> bool: ...

    # quotas and usage
    @abstractmethod
    def admit(self, app_id: int, api_name: str, app_name: str, window: Window, reserve_tokens: int) -> Admission:
        """Check the app's limits (quota.check, with the limits read in the same step) and count one request
        against each window, reserving `reserve_tokens` in the minute's TPM budget, atomically; raise QuotaError
        without counting anything, or PlatformError 110 if the app was deleted."""

    @abstractmethod
    def settle(self, admission: Admission, outcome: Outcome, prompt_tokens: int, completion_tokens: int) -> None:
        """In one atomic step: for NOT_SERVED give back the daily (if still the same day) and total counts;
        replace the TPM reservation by the tokens used (none for NOT_SERVED) if the minute is still current;
        add the call and its tokens to the (admission.day, app, service) usage row."""

    @abstractmethod
    def record_failure(self, day: str, app_id: int, app_name: str, api_name: str) -> None:
        """Add one failed call with no tokens to the (day, app, service) usage row."""

    @abstractmethod
    def counters(self, app_id: int, day: str, minute: int) -> Counters: ...

    @abstractmethod
    def usage(self, app_name: str | None = None, api_name: str | None = None,
              since: str | None = None) -> list[UsageRow]:
        """Rows sorted by day, app name, api_name."""
