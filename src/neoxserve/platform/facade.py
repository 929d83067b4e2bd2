"""`Platform`: everything the API and the admin commands need, over a Store.

Sync: the API calls it from worker threads."""
from __future__ import annotations

import hmac
import logging
import math
import secrets as _random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import credentials as cred
from . import iam, tokens
from .errors import (API_NAME_NOT_EXIST, INVALID_PARAMETER, NO_PERMISSION, TOKEN_EXPIRED, TOKEN_INVALID,
                     AdminError, PlatformError, bad_client_secret, missing_parameter, unknown_client,
                     unsupported_grant)
from .records import (SAMPLING_RULES, Admission, App, Counters, Limits, NewKeys, Service, StoredSecrets, TokenRecord,
                     UsageRow)
from .names import check_api_name, check_app_name
from .store import Store, open_store

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("neoxserve.platform")

_KEY_CHECK = "neoxserve key check"
SCOPE = "public brain_all_scope ai_custom_wenxinworkshop"


class Platform:
    def __init__(self, store: Store, cipher: cred.Cipher, *, token_ttl_seconds: int = 2_592_000,
                 quota_timezone: str = "Asia/Shanghai", iam_clock_skew_seconds: int = 300,
                 clock: Callable[[], float] = time.time):
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
        self._check_key()

    @classmethod
    def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Platform:
        """Open the store named by settings (data_dir, store_url) with settings' key, token TTL, timezone, skew."""
        key = settings.secret_key or cred.load_or_create_key_file(settings.data_dir)
        store = open_store(settings.data_dir, settings.store_url)
        try:
            return cls(store, cred.Cipher(key), token_ttl_seconds=settings.token_ttl_seconds,
                       quota_timezone=settings.quota_timezone,
                       iam_clock_skew_seconds=settings.iam_clock_skew_seconds, clock=clock)
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
        now = int(self.clock())
        expires_at = now + self.token_ttl
        token = tokens.new_access_token(app.id, self.token_ttl, expires_at)
        self.store.put_token(cred.token_hash(token), TokenRecord(app.id, app.token_generation, expires_at),
                             now)
        return {"access_token": token, "expires_in": self.token_ttl,
                "refresh_token": tokens.new_refresh_token(self.token_ttl, expires_at), "scope": SCOPE,
                "session_key": _random.token_urlsafe(48), "session_secret": _random.token_hex(16)}

    def authenticate_token(self, token: str | None) -> App:
        """The app owning an access token; PlatformError 100 (missing/malformed), 110 (unknown/revoked), 111."""
        if not token:
            raise PlatformError(INVALID_PARAMETER, detail="access_token is missing")
        if not tokens.is_well_formed(token):
            raise PlatformError(INVALID_PARAMETER, detail="access_token is malformed")
        record = self.store.get_token(cred.token_hash(token))
        if record is None:
            raise PlatformError(TOKEN_INVALID, detail="access_token is unknown or revoked")
        app = self.store.get_app(record.app_id)
        if app is None or app.token_generation != record.generation:
            raise PlatformError(TOKEN_INVALID, detail="access_token was revoked")
        if self.clock() >= record.expires_at:
            raise PlatformError(TOKEN_EXPIRED, detail="access_token has expired")
        return app

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

    def check_permission(self, app: App, service: Service) -> None:
        if service.api_name not in app.services:
            raise PlatformError(NO_PERMISSION, f"app '{app.name}' (id {app.id}) has no permission to call "
                                               f"service '{service.api_name}'")

    def admit(self, app: App, service: Service) -> Admission:
        """Count one request against the app's quotas, or raise 19/17/18 without counting it."""
        now = self.clock()
        return self.store.admit(app.id, service.api_name, app.name, int(now), self.today(now))

    def record_usage(self, app: App, service: Service, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        self.store.record_usage(self.today(), app.id, app.name, service.api_name, int(prompt_tokens),
                                int(completion_tokens))

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
            raise AdminError(f"no app named {name!r}")
        return app

    def list_apps(self) -> list[App]:
        return self.store.list_apps()

    def rotate_app(self, name: str) -> NewKeys:
        """New keys; the old ones and every access token issued so far stop working."""
        app = self.get_app(name)
        api_key, secret_key, access_key, secret_access_key, stored = self._new_credentials()
        if not self.store.rotate_app(app.id, api_key, access_key, stored):
            raise AdminError(f"no app named {name!r}")
        log.info("rotated keys of app %r (id %d)", app.name, app.id)
        return NewKeys(app.id, app.name, api_key, secret_key, access_key, secret_access_key)

    def delete_app(self, name: str) -> None:
        app = self.get_app(name)
        if not self.store.delete_app(app.id):
            raise AdminError(f"no app named {name!r}")
        log.info("deleted app %r (id %d)", app.name, app.id)

    def set_limits(self, name: str, limits: Limits) -> App:
        _check_limits(limits)
        app = self.get_app(name)
        if not self.store.set_limits(app.id, limits):
            raise AdminError(f"no app named {name!r}")
        return self.get_app(name)

    def counters(self, name: str) -> Counters:
        return self.store.counters(self.get_app(name).id, self.today())

    def allow(self, app_name: str, api_name: str) -> None:
        self.store.grant(self.get_app(app_name).id, api_name)

    def disallow(self, app_name: str, api_name: str) -> bool:
        return self.store.revoke(self.get_app(app_name).id, api_name)

    def publish(self, api_name: str, model: str, *, temperature: float | None = None, top_p: float | None = None,
                top_k: int | None = None, penalty_score: float | None = None,
                max_output_tokens: int | None = None, allow: Iterable[str] = ()) -> Service:
        check_api_name(api_name)
        if not model:
            raise AdminError("a service needs a model name")
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
            raise AdminError(f"no published service named {api_name!r}")

    def list_services(self) -> list[Service]:
        return self.store.list_services()

    def usage(self, app: str | None = None, service: str | None = None, since: str | None = None) -> list[UsageRow]:
        if since is not None:
            try:
                since = datetime.strptime(since, "%Y-%m-%d").date().isoformat()
            except ValueError:
                raise AdminError(f"invalid date {since!r}: use YYYY-MM-DD") from None
        return self.store.usage(app, service, since)


def _check_limits(limits: Limits) -> None:
    for name in ("qps", "daily", "total"):
        value = getattr(limits, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise AdminError(f"invalid {name} limit {value!r}: use a positive integer, or none")


def _check_defaults(s: Service) -> None:
    for name, (integer, rule, ok) in SAMPLING_RULES.items():
        value = getattr(s, name)
        if value is None:
            continue
        typed = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
        if not (typed and ok(value)):
            raise AdminError(f"invalid {name} {value!r}: must be {rule}")
