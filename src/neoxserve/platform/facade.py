"""`Platform`: everything the API and the admin commands need, over a Store.

Sync: the API calls it from worker threads."""
from __future__ import annotations

import hmac
import logging
import math
import secrets as _random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import access_codes, bearer_keys, iam, tokens
from . import credentials as cred
from .errors import (API_NAME_NOT_EXIST, IAM_FAILED, INVALID_PARAMETER, NO_PERMISSION, TOKEN_EXPIRED, TOKEN_INVALID,
                     AdminError, BceError, NotFound, PlatformError, bad_client_secret, missing_parameter,
                     unknown_client, unsupported_grant)
from .admin_access import AdminAccess
from .quota import Window
from .records import (SAMPLING_RULES, AccessCode, AccessCodeRecord, Admission, ApiKey, ApiKeyRecord, App, Counters,
                      Limits, NewAccessCode, NewApiKey, NewKeys, Outcome, Service, StoredSecrets, TokenRecord, UsageRow)
from .names import check_api_name, check_app_name, check_model_name
from .store import Store, open_store

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("neoxserve.platform")

_KEY_CHECK = "neoxserve key check"
SCOPE = "public brain_all_scope ai_custom_wenxinworkshop"
# Lifetimes of bearer tokens issued from IAM keys (GET /v1/BCE-BEARER/token?expireInSeconds=N), as on Baidu's IAM.
BEARER_TTL_DEFAULT = 1800
BEARER_TTL_RANGE = (300, 2_592_000)


class Platform:
    def __init__(self, store: Store, cipher: cred.Cipher, *, token_ttl_seconds: int = 2_592_000,
                 quota_timezone: str = "Asia/Shanghai", iam_clock_skew_seconds: int = 300,
                 console_session_ttl_seconds: int = 43_200, console_login_attempts_per_minute: int = 10,
                 admin_key: str = "", clock: Callable[[], float] = time.time):
        try:
            self.tz = ZoneInfo(quota_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise AdminError(f"unknown quota_timezone {quota_timezone!r}: use an IANA name such as "
                             "Asia/Shanghai or UTC") from None
        self.store = store
        self.cipher = cipher
        self.token_ttl = token_ttl_seconds
        self.skew = iam_clock_skew_seconds
        self.clock = clock
        self.admin = AdminAccess(store, clock, console_session_ttl_seconds, console_login_attempts_per_minute,
                                 admin_key)
        self._check_key()

    @classmethod
    def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Platform:
        """Open the store named by settings (data_dir, store_url) with settings' key, token TTL, timezone, skew."""
        key = settings.secret_key or cred.load_or_create_key_file(settings.data_dir)
        store = open_store(settings.data_dir, settings.store_url)
        try:
            return cls(store, cred.Cipher(key), token_ttl_seconds=settings.token_ttl_seconds,
                       quota_timezone=settings.quota_timezone,
                       iam_clock_skew_seconds=settings.iam_clock_skew_seconds,
                       console_session_ttl_seconds=settings.console_session_ttl_seconds,
                       console_login_attempts_per_minute=settings.console_login_attempts_per_minute,
                       admin_key=settings.admin_key, clock=clock)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_key(self) -> None:
        """The first process to open a store records a value encrypted with its key; later ones must decrypt it."""
        stored = self.store.claim_meta("key_check", self.cipher.encrypt(_KEY_CHECK).decode())
        if self.cipher.decrypt(stored.encode()) != _KEY_CHECK:
            raise AdminError("secret key mismatch: this store's IAM secrets were encrypted with another key "
                             "(set the same secret_key / data_dir/secret.key on every process using the store)")

    def today(self, now: float | None = None) -> str:
        """The day (YYYY-MM-DD in quota_timezone) of `now`, by default of the clock's current time."""
        return datetime.fromtimestamp(self.clock() if now is None else now, self.tz).date().isoformat()

    def window(self, now: float | None = None) -> Window:
        """The quota windows of `now` (by default the clock's current time)."""
        now = self.clock() if now is None else now
        local = datetime.fromtimestamp(now, self.tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), self.tz)
        return Window(now, local.date().isoformat(), midnight.timestamp())

    # ----- serving -----

    def issue_token(self, grant_type: str | None, client_id: str | None,
                    client_secret: str | None) -> dict[str, object]:
        """The /oauth/2.0/token success body, or OAuthError (docs/api.md#access-tokens)."""
        if not grant_type:
            raise missing_parameter("grant_type")
        if grant_type != "client_credentials":
            raise unsupported_grant()
        if not client_id:
            raise missing_parameter("client_id")
        if not client_secret:
            raise missing_parameter("client_secret")
        app = self.store.app_by_api_key(client_id)
        if app is None:
            raise unknown_client()
        if not cred.check_secret(client_secret, app.secrets.secret_key_salt, app.secrets.secret_key_hash):
            raise bad_client_secret()
        return self._new_token(app, self.token_ttl)

    def issue_token_for(self, app_name: str, ttl_seconds: int) -> dict[str, object]:
        """An access token for an app without its Secret Key, living at most `ttl_seconds` (an administrator's
        act: the console's playground calls the model routes with it). Revoked like any other on rotation."""
        return self._new_token(self.get_app(app_name), min(ttl_seconds, self.token_ttl))

    def _new_token(self, app: App, ttl: int) -> dict[str, object]:
        now = int(self.clock())
        expires_at = now + ttl
        token = tokens.new_access_token(app.id, ttl, expires_at)
        self.store.put_token(cred.token_hash(token), TokenRecord(app.id, app.token_generation, expires_at),
                             now)
        return {"access_token": token, "expires_in": ttl,
                "refresh_token": tokens.new_refresh_token(ttl, expires_at), "scope": SCOPE,
                "session_key": _random.token_urlsafe(48), "session_secret": _random.token_hex(16)}

    def authenticate_token(self, token: str | None) -> App:
        """The app owning an access token; PlatformError 100 (missing/malformed), 110 (unknown/revoked), 111."""
        if not token:
            raise PlatformError(INVALID_PARAMETER, detail="access_token is missing")
        if not tokens.is_well_formed(token):
            raise PlatformError(INVALID_PARAMETER, detail="access_token is malformed")
        return self._token_owner(self.store.get_token(cred.token_hash(token)), "access_token")

    def _token_owner(self, record: TokenRecord | None, what: str) -> App:
        """The app of a stored token (access token or bearer token), unless unknown, revoked or expired."""
        if record is None:
            raise PlatformError(TOKEN_INVALID, detail=f"{what} is unknown or revoked")
        app = self.store.get_app(record.app_id)
        if app is None or app.token_generation != record.generation:
            raise PlatformError(TOKEN_INVALID, detail=f"{what} was revoked")
        if self.clock() >= record.expires_at:
            raise PlatformError(TOKEN_EXPIRED, detail=f"{what} has expired")
        return app

    def authenticate_bearer(self, token: str | None) -> App:
        """The app owning a bearer credential (the value after `Authorization: Bearer `): an API key or a bearer
        token issued from IAM keys. PlatformError 100 (missing/malformed), 110 (unknown, revoked, or its app's keys
        were rotated since it was issued), 111 (expired)."""
        if not token:
            raise PlatformError(INVALID_PARAMETER, detail="bearer token is missing")
        if not bearer_keys.is_well_formed(token):
            raise PlatformError(INVALID_PARAMETER, detail="bearer token is malformed")
        digest = cred.token_hash(token)
        key = self.store.get_api_key(digest)
        if key is None:
            return self._token_owner(self.store.get_token(digest), "bearer token")
        if key.expires_at is not None and self.clock() >= key.expires_at:
            raise PlatformError(TOKEN_EXPIRED, detail=f"API key {key.id} has expired")
        app = self.store.get_app(key.app_id)
        if app is None:
            raise PlatformError(TOKEN_INVALID, detail=f"API key {key.id} belongs to a deleted app")
        return app

    def authenticate_access_code(self, code: str | None) -> App:
        """The app owning an access code (the value after `Authorization: ACCESSCODE `, the qianfan SDK's private
        mode). PlatformError 14 for a missing, malformed, unknown or revoked code, or one whose app was deleted
        (the SDK treats it like a failed IAM signature: no retry, no token refresh); the reason only in `detail`."""
        code_id = access_codes.code_id(code or "")
        if code_id is None:
            raise PlatformError(IAM_FAILED, detail="the access code is missing or malformed")
        record = self.store.get_access_code(code_id)
        if record is None:
            raise PlatformError(IAM_FAILED, detail=f"access code {code_id} is unknown or revoked")
        if not access_codes.matches(code or "", record.code_hash):
            raise PlatformError(IAM_FAILED, detail=f"wrong secret for access code {code_id}")
        app = self.store.get_app(record.app_id)
        if app is None:
            raise PlatformError(IAM_FAILED, detail=f"access code {code_id} belongs to a deleted app")
        return app

    def bearer_token_request(self, method: str, path: str, query, headers: Mapping[str, str]) -> dict:
        """GET /v1/BCE-BEARER/token as received: verify its IAM signature (authenticate_iam), then
        issue_bearer_token with its expireInSeconds. BceError 401 AccessDenied for any signature failure (the
        reason only in the log, as for error 14), 400 for a bad expireInSeconds."""
        try:
            app = self.authenticate_iam(method, path, query, headers)
        except PlatformError as e:
            log.info("bearer token refused: %s", e.detail)
            raise BceError(401, "AccessDenied", e.message) from None
        expire = next((v for k, v in iam.query_pairs(query) if k == "expireInSeconds"), None)
        return self.issue_bearer_token(app, expire)

    def issue_bearer_token(self, app: App, expire_in_seconds: str | None) -> dict:
        """The GET /v1/BCE-BEARER/token answer for an app whose IAM signature the caller verified
        (authenticate_iam): a bearer token living `expireInSeconds` (default 1800, 300 to 2592000), revoked with
        the app's keys. BceError 400 for a bad expireInSeconds."""
        ttl = BEARER_TTL_DEFAULT
        if expire_in_seconds not in (None, ""):
            low, high = BEARER_TTL_RANGE
            text = str(expire_in_seconds)
            if not (text.isascii() and text.isdigit() and len(text) <= 10 and low <= int(text) <= high):
                raise BceError(400, "InvalidParameterValue",
                               f"expireInSeconds is {text[:20]!r}: it must be an integer in [{low}, {high}]")
            ttl = int(text)
        now = int(self.clock())
        _, token = bearer_keys.new_bearer_key()
        self.store.put_token(cred.token_hash(token), TokenRecord(app.id, app.token_generation, now + ttl), now)
        log.info("issued a bearer token for app %r (id %d), %d s", app.name, app.id, ttl)
        return {"userId": str(app.id), "token": token, "status": "enable", "createTime": _iso(now),
                "expireTime": _iso(now + ttl)}

    def revoke_token(self, token: str) -> bool:
        return self.store.delete_token(cred.token_hash(token))

    def authenticate_iam(self, method: str, path: str, query, headers: Mapping[str, str]) -> App:
        """The app whose IAM key signed this request; PlatformError 14 otherwise. `path` is the decoded URL path;
        `query` is a list of (name, value) pairs, a mapping, or a multi-dict with multi_items()."""
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if not authorization:
            raise iam.fail("no Authorization header")
        auth = iam.parse_authorization(authorization)
        iam.check_window(iam.parse_timestamp(auth.timestamp), auth.expiration, self.clock(), self.skew)
        app = self.store.app_by_access_key(auth.access_key)
        if app is None:
            raise iam.fail("unknown access key")
        secret = self.cipher.decrypt(app.secrets.secret_access_key_enc)
        if secret is None:
            raise iam.fail(f"cannot decrypt the secret access key of app {app.name!r}: wrong secret key")
        canonical = iam.canonical_request(method, path, iam.query_pairs(query), headers, auth.signed_headers)
        expected = iam.signature_for(secret, auth, canonical)
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise iam.fail("signature mismatch")
        return app

    def get_service(self, api_name: str) -> Service:
        service = self.store.get_service(api_name)
        if service is None:
            raise PlatformError(API_NAME_NOT_EXIST, detail=f"no service named {api_name!r}")
        return service

    def find_service(self, app: App, name: str) -> Service:
        """The service `name` stands for: the published api_name, else a service with that model name (what
        Qianfan's SDK and docs call a model, `services publish NAME --model MODEL`) that the app may call (the first
        by api_name), else the first service of that model. PlatformError 336005 when no service has the name or
        the model; the caller checks the permission."""
        service = self.store.get_service(name)
        if service is not None:
            return service
        candidates = [s for s in self.store.list_services() if s.model == name]
        allowed = [s for s in candidates if s.api_name in app.services]
        if allowed or candidates:
            return (allowed or candidates)[0]
        raise PlatformError(API_NAME_NOT_EXIST, detail=f"no service named {name!r} and none of the model {name!r}")

    def check_permission(self, app: App, service: Service) -> None:
        if service.api_name not in app.services:
            raise PlatformError(NO_PERMISSION, f"app '{app.name}' (id {app.id}) has no permission to call "
                                               f"service '{service.api_name}'")

    def admit(self, app: App, service: Service, reserve_tokens: int = 0) -> Admission:
        """Count one request against the app's limits, reserving `reserve_tokens` (prompt + maximum output) of
        its TPM budget; or raise QuotaError (19, 17, 18, 336501, 336502) without counting anything. Every
        admission must be settled once."""
        if not isinstance(reserve_tokens, int) or reserve_tokens < 0:
            raise ValueError(f"reserve_tokens must be a non-negative int, not {reserve_tokens!r}")
        return self.store.admit(app.id, service.api_name, app.name, self.window(), reserve_tokens)

    def settle(self, admission: Admission, outcome: Outcome, prompt_tokens: int = 0,
               completion_tokens: int = 0) -> None:
        """Record how an admitted request ended (see Outcome): NOT_SERVED gives back its daily and total quota
        and its TPM reservation; otherwise TPM is charged prompt + completion tokens instead of the reservation.
        The call and its tokens go to the usage of the day it was admitted on."""
        if admission.settled:
            raise RuntimeError(f"admission of app {admission.app_id} settled twice")
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        admission.settled = True
        self.store.settle(admission, outcome, int(prompt_tokens), int(completion_tokens))

    def record_failure(self, app: App, service: Service) -> None:
        """A call of `app` to `service` that ended with an error before it was admitted (bad body, no permission,
        refused by a limit): one failed call in today's usage, no tokens, no quota."""
        self.store.record_failure(self.today(), app.id, app.name, service.api_name)

    def bootstrap(self, api_name: str, model_name: str) -> NewKeys | None:
        """On a fresh store: publish `api_name`, create app "default" allowed to call it, return its keys (once).
        On a store that has apps, services or was bootstrapped before: change nothing, return None."""
        if self.store.list_apps() or self.store.list_services():
            self.store.claim_meta("bootstrapped", "existing")
            return None
        nonce = _random.token_hex(8)
        if self.store.claim_meta("bootstrapped", nonce) != nonce:
            return None  # another process won the race
        self.publish(api_name, model_name)
        keys = self.create_app("default", services=[api_name])
        log.info("bootstrapped store: service %r, app 'default' (id %d)", api_name, keys.app_id)
        return keys

    # ----- administration -----

    def _new_credentials(self) -> tuple[str, str, str, str, StoredSecrets]:
        api_key, secret_key = cred.new_api_key(), cred.new_secret_key()
        access_key, secret_access_key = cred.new_access_key(), cred.new_secret_access_key()
        salt = cred.new_salt()
        stored = StoredSecrets(cred.hash_secret(secret_key, salt), salt, self.cipher.encrypt(secret_access_key))
        return api_key, secret_key, access_key, secret_access_key, stored

    def create_app(self, name: str, services: Iterable[str] = (), limits: Limits = Limits()) -> NewKeys:
        check_app_name(name)
        _check_limits(limits)
        api_key, secret_key, access_key, secret_access_key, stored = self._new_credentials()
        app = self.store.create_app(name, api_key, access_key, stored, limits, sorted(set(services)), self.clock())
        log.info("created app %r (id %d)", app.name, app.id)
        return NewKeys(app.id, app.name, api_key, secret_key, access_key, secret_access_key)

    def get_app(self, name: str) -> App:
        app = self.store.app_by_name(name)
        if app is None:
            raise NotFound(f"no app named {name!r}")
        return app

    def list_apps(self) -> list[App]:
        return self.store.list_apps()

    def rotate_app(self, name: str) -> NewKeys:
        """New keys; the old ones and every access token issued so far stop working."""
        app = self.get_app(name)
        api_key, secret_key, access_key, secret_access_key, stored = self._new_credentials()
        if not self.store.rotate_app(app.id, api_key, access_key, stored):
            raise NotFound(f"no app named {name!r}")
        log.info("rotated keys of app %r (id %d)", app.name, app.id)
        return NewKeys(app.id, app.name, api_key, secret_key, access_key, secret_access_key)

    def delete_app(self, name: str) -> None:
        app = self.get_app(name)
        if not self.store.delete_app(app.id):
            raise NotFound(f"no app named {name!r}")
        log.info("deleted app %r (id %d)", app.name, app.id)

    def set_limits(self, name: str, limits: Limits) -> App:
        _check_limits(limits)
        app = self.get_app(name)
        if not self.store.set_limits(app.id, limits):
            raise NotFound(f"no app named {name!r}")
        return self.get_app(name)

    def counters(self, name: str) -> Counters:
        """Requests today and in total, and this minute's requests and TPM tokens (reservations included)."""
        window = self.window()
        return self.store.counters(self.get_app(name).id, window.day, window.minute)

    def create_api_key(self, app_name: str, expires_in: int | None = None) -> NewApiKey:
        """A new bearer API key for the app, living `expires_in` seconds (None: until revoked). The key is in the
        result only: the store keeps its SHA-256."""
        if expires_in is not None and (not isinstance(expires_in, int) or expires_in <= 0):
            raise AdminError(f"invalid expiry {expires_in!r}: use a positive number of seconds")
        app = self.get_app(app_name)
        key_id, key = bearer_keys.new_bearer_key()
        now = self.clock()
        expires_at = None if expires_in is None else int(now) + expires_in
        self.store.create_api_key(cred.token_hash(key), ApiKeyRecord(key_id, app.id, expires_at), now)
        log.info("created API key %s for app %r (id %d)", key_id, app.name, app.id)
        return NewApiKey(key_id, key, app.id, app.name, now, expires_at)

    def list_api_keys(self, app_name: str | None = None) -> list[ApiKey]:
        return self.store.list_api_keys(None if app_name is None else self.get_app(app_name).id)

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke by id (the `ALTAK-...` part); the key stops working at once."""
        if not (bearer_keys.is_key_id(key_id) and self.store.delete_api_key(key_id)):
            raise NotFound(f"no API key with id {key_id!r}")
        log.info("revoked API key %s", key_id)

    def create_access_code(self, app_name: str) -> NewAccessCode:
        """A new access code for the app (`Authorization: ACCESSCODE <code>`). The code is in the result only: the
        store keeps its SHA-256 under its id."""
        app = self.get_app(app_name)
        code_id, code = access_codes.new_access_code()
        now = self.clock()
        self.store.create_access_code(AccessCodeRecord(code_id, app.id, access_codes.digest(code)), now)
        log.info("created access code %s for app %r (id %d)", code_id, app.name, app.id)
        return NewAccessCode(code_id, code, app.id, app.name, now)

    def list_access_codes(self, app_name: str | None = None) -> list[AccessCode]:
        return self.store.list_access_codes(None if app_name is None else self.get_app(app_name).id)

    def revoke_access_code(self, code_id: str) -> None:
        """Revoke by id (the `ac-...` part); the code stops working at once."""
        if not (access_codes.is_code_id(code_id) and self.store.delete_access_code(code_id)):
            raise NotFound(f"no access code with id {code_id!r}")
        log.info("revoked access code %s", code_id)

    def allow(self, app_name: str, api_name: str) -> None:
        self.store.grant(self.get_app(app_name).id, api_name)

    def disallow(self, app_name: str, api_name: str) -> bool:
        return self.store.revoke(self.get_app(app_name).id, api_name)

    def publish(self, api_name: str, model: str, *, temperature: float | None = None, top_p: float | None = None,
                top_k: int | None = None, penalty_score: float | None = None,
                max_output_tokens: int | None = None, allow: Iterable[str] = ()) -> Service:
        check_api_name(api_name)
        check_model_name(model)
        service = Service(api_name, model, temperature, top_p, top_k, penalty_score, max_output_tokens,
                          self.clock())
        _check_defaults(service)
        apps = [self.get_app(name) for name in allow]  # fail before publishing if an app is unknown
        self.store.create_service(service)
        for app in apps:
            self.store.grant(app.id, api_name)
        return service

    def unpublish(self, api_name: str) -> None:
        if not self.store.delete_service(api_name):
            raise NotFound(f"no published service named {api_name!r}")

    def list_services(self) -> list[Service]:
        return self.store.list_services()

    def allowed_apps(self) -> dict[str, list[str]]:
        """api_name -> the names of the apps allowed to call it, for every published service."""
        apps = self.list_apps()
        return {s.api_name: [a.name for a in apps if s.api_name in a.services] for s in self.list_services()}

    def usage(self, app: str | None = None, service: str | None = None, since: str | None = None,
              until: str | None = None) -> list[UsageRow]:
        """Rows from day `since` to day `until` (YYYY-MM-DD, both included; None: no bound)."""
        since, until = _day(since), _day(until)
        if since is not None and until is not None and until < since:
            raise AdminError(f"the range ends ({until}) before it starts ({since})")
        rows = self.store.usage(app, service, since)
        return rows if until is None else [r for r in rows if r.day <= until]


def _day(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date().isoformat()
    except (TypeError, ValueError):
        raise AdminError(f"invalid date {text!r}: use YYYY-MM-DD") from None


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_limits(limits: Limits) -> None:
    for name in Limits.NAMES:
        value = getattr(limits, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise AdminError(f"invalid {name} limit {value!r}: use a positive integer, or none")


def _check_defaults(s: Service) -> None:
    for name in (f.name for f in fields(s) if f.name in SAMPLING_RULES):   # the service's sampling defaults
        rule = SAMPLING_RULES[name]
        value = getattr(s, name)
        if value is None:
            continue
        typed = isinstance(value, int) if rule.integer else isinstance(value, (int, float)) and math.isfinite(value)
        if not (typed and rule.ok(value)):
            raise AdminError(f"invalid {name} {value!r}: must be {rule.message}")
