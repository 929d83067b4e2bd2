"""Access to the web console: the admin key, login sessions, and the limit on login attempts.

Everything lives in the store (the admin key's hash under the meta key `admin_key`, sessions under the hash of
their token, login attempts by client address), so several replicas on one Redis share logins and limits. The
admin key (40 base62 characters, ~238 bits) and session tokens (256 bits) are random, so a salted HMAC-SHA256 and
a plain SHA-256 are enough (credentials.py says why no slow KDF); they are compared in constant time and never
logged.
"""
from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass, field
from collections.abc import Callable

from . import credentials as cred
from .errors import AdminAuthError, AdminError
from .records import SessionRecord
from .store import Store

log = logging.getLogger("neoxserve.platform")

ADMIN_KEY = "admin_key"           # meta key holding "<key id>:<salt hex>:<HMAC hex>"
KEY_PREFIX = "nxa-"               # makes a leaked admin key recognisable (and greppable by secret scanners)
LOGIN_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Session:
    """A new console session: the token goes into the cookie, only its hash into the store."""

    token: str = field(repr=False)
    expires_at: int


@dataclass(frozen=True)
class _KeyRecord:
    key_id: str
    salt: bytes
    digest: bytes

    @classmethod
    def new(cls, key: str) -> _KeyRecord:
        salt = cred.new_salt()
        return cls(secrets.token_hex(8), salt, cred.hash_secret(key, salt))

    @classmethod
    def parse(cls, text: str) -> _KeyRecord:
        key_id, salt, digest = text.split(":")
        return cls(key_id, bytes.fromhex(salt), bytes.fromhex(digest))

    def dump(self) -> str:
        return f"{self.key_id}:{self.salt.hex()}:{self.digest.hex()}"


def _session_hash(token: str) -> bytes:
    return cred.token_hash(token)


class AdminAccess:
    def __init__(self, store: Store, clock: Callable[[], float], session_ttl_seconds: int,
                 login_attempts_per_minute: int, configured_key: str = "") -> None:
        self.store = store
        self._configured = configured_key   # settings.admin_key: '' = the store's own, made at random
        self.clock = clock
        self.session_ttl = session_ttl_seconds
        self.login_attempts = login_attempts_per_minute

    def _current(self) -> _KeyRecord | None:
        text = self.store.get_meta(ADMIN_KEY)
        return None if text is None else _KeyRecord.parse(text)

    def create_key(self) -> str | None:
        """On a store without an admin key: create one and return it (to be shown once). Otherwise None (also
        when another process created it first)."""
        key = KEY_PREFIX + cred.random_base62(40)
        record = _KeyRecord.new(key).dump()
        if self.store.claim_meta(ADMIN_KEY, record) != record:
            return None
        log.info("created the console admin key")
        return key

    def apply_configured_key(self) -> bool:
        """With an admin key in the settings: make it the store's unless it already is (True when it changed, which
        ends every console session). Every replica does this at start, so the one in the settings always wins."""
        current = self._current()
        if not self._configured or (current is not None
                                    and cred.check_secret(self._configured, current.salt, current.digest)):
            return False
        self.store.set_meta(ADMIN_KEY, _KeyRecord.new(self._configured).dump())
        log.info("set the console admin key from the settings (admin_key): every console session ended")
        return True

    def rotate_key(self) -> str:
        """A new admin key (returned once); the old one stops working and every console session ends. Refused when
        the settings name the key (the next start would put that one back)."""
        if self._configured:
            raise AdminError("the admin key comes from the settings (admin_key, NEOXSERVE_ADMIN_KEY): change it "
                             "there (e.g. the Kubernetes Secret) and restart the replicas")
        key = KEY_PREFIX + cred.random_base62(40)
        self.store.set_meta(ADMIN_KEY, _KeyRecord.new(key).dump())
        log.info("rotated the console admin key: every console session ended")
        return key

    def login(self, key: str, address: str) -> Session:
        """Check the admin key and open a session. Every attempt counts against the address's limit (at most
        `login_attempts_per_minute` in any 60 s), a refused one too; AdminAuthError wrong_key or throttled."""
        now = self.clock()
        retry_at = self.store.take_login_attempt(address, now, LOGIN_WINDOW_SECONDS, self.login_attempts)
        if retry_at is not None:
            wait = max(1, math.ceil(retry_at - now))
            log.warning("console login from %s refused: more than %d attempts in %d s", address,
                        self.login_attempts, LOGIN_WINDOW_SECONDS)
            raise AdminAuthError("throttled", f"too many login attempts: try again in {wait} s", retry_after=wait)
        current = self._current()
        if current is None or not cred.check_secret(key, current.salt, current.digest):
            log.warning("console login from %s refused: wrong admin key", address)
            raise AdminAuthError("wrong_key", "wrong admin key")
        token = secrets.token_urlsafe(32)
        expires_at = int(now) + self.session_ttl
        self.store.put_session(_session_hash(token), SessionRecord(current.key_id, expires_at), int(now))
        log.info("console login from %s", address)
        return Session(token, expires_at)

    def check_session(self, token: str | None) -> SessionRecord:
        """The live session of a cookie's token; AdminAuthError no_session or expired otherwise."""
        record = self.store.get_session(_session_hash(token)) if token else None
        current = self._current()
        if record is None or current is None or record.key_id != current.key_id:
            raise AdminAuthError("no_session", "not logged in")
        if self.clock() >= record.expires_at:
            raise AdminAuthError("expired", "the session expired: log in again")
        return record

    def logout(self, token: str) -> bool:
        return self.store.delete_session(_session_hash(token))
