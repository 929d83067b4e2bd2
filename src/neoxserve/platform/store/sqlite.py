"""The SQLite store: one file in WAL mode, shared by the server and admin commands in other processes.

Writers take the database lock up front (BEGIN IMMEDIATE), so read-check-write sequences such as quota admission
are serialized across threads and processes. synchronous=NORMAL: a committed transaction survives a process crash
(the WAL is on disk); a power cut may lose the last few, which costs at most a few quota counts.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from .. import quota
from ..errors import TOKEN_INVALID, AdminError, Conflict, NotFound, PlatformError
from ..records import (AccessCode, AccessCodeRecord, Admission, ApiKey, ApiKeyRecord, App, Counters, Limits, Outcome,
                       Service, SessionRecord, StoredSecrets, TokenRecord, UsageRow)
from .base import TOKEN_GRACE_SECONDS, Store

SCHEMA_VERSION = 4  # PRAGMA user_version

# The web console's sessions (under the SHA-256 of their token) and login attempts per client address.
_CONSOLE = """
CREATE TABLE console_sessions (hash BLOB PRIMARY KEY, key_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
CREATE TABLE login_attempts (address TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX login_attempts_by_address ON login_attempts (address, at);
"""

# Access codes (`Authorization: ACCESSCODE ...`), by their public id, with the SHA-256 of the whole code.
_ACCESS_CODES = """
CREATE TABLE access_codes (
    id TEXT PRIMARY KEY, hash BLOB NOT NULL, app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at REAL NOT NULL);
"""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE apps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a deleted app's id is never reused
    name TEXT NOT NULL UNIQUE, api_key TEXT NOT NULL UNIQUE, access_key TEXT NOT NULL UNIQUE,
    sk_hash BLOB NOT NULL, sk_salt BLOB NOT NULL, sak_enc BLOB NOT NULL, generation INTEGER NOT NULL DEFAULT 0,
    qps_limit INTEGER, daily_limit INTEGER, total_limit INTEGER, created_at REAL NOT NULL,
    rpm_limit INTEGER, tpm_limit INTEGER);
CREATE TABLE services (
    api_name TEXT PRIMARY KEY, model TEXT NOT NULL, temperature REAL, top_p REAL, top_k INTEGER,
    penalty_score REAL, max_output_tokens INTEGER, created_at REAL NOT NULL);
CREATE TABLE permissions (
    app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    api_name TEXT NOT NULL REFERENCES services(api_name) ON DELETE CASCADE,
    PRIMARY KEY (app_id, api_name));
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY, app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX tokens_expiry ON tokens (expires_at);
CREATE TABLE counters (
    app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    total INTEGER NOT NULL, day TEXT NOT NULL, day_count INTEGER NOT NULL,
    second INTEGER NOT NULL, second_count INTEGER NOT NULL,
    minute INTEGER NOT NULL DEFAULT 0, minute_count INTEGER NOT NULL DEFAULT 0,
    minute_tokens INTEGER NOT NULL DEFAULT 0);
CREATE TABLE usage (
    day TEXT NOT NULL, app_id INTEGER NOT NULL, app_name TEXT NOT NULL, api_name TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, app_id, api_name));
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at REAL NOT NULL, expires_at INTEGER);
""" + _CONSOLE + _ACCESS_CODES

# MIGRATIONS[v] = (the version it brings a store of version v to, its script); a store runs them in turn up to
# SCHEMA_VERSION, all in one transaction.
# 0 -> 2, from the first release: RPM/TPM limits and their minute counters; usage split into succeeded and failed
# calls. Old rows counted admitted requests without telling failures apart: they become succeeded calls.
# 2 -> 3: the web console's tables (no existing row changes).
# 3 -> 4: access codes (no existing row changes).
MIGRATIONS: dict[int, tuple[int, str]] = {0: (2, """
ALTER TABLE apps ADD COLUMN rpm_limit INTEGER;
ALTER TABLE apps ADD COLUMN tpm_limit INTEGER;
ALTER TABLE counters ADD COLUMN minute INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN minute_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN minute_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN succeeded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
UPDATE usage SET succeeded = requests;
ALTER TABLE usage DROP COLUMN requests;
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at REAL NOT NULL, expires_at INTEGER);
"""), 2: (3, _CONSOLE), 3: (4, _ACCESS_CODES)}

_APP = ("SELECT id, name, api_key, access_key, sk_hash, sk_salt, sak_enc, generation, qps_limit, daily_limit, "
        "total_limit, created_at, rpm_limit, tpm_limit FROM apps")
_SERVICE = ("SELECT api_name, model, temperature, top_p, top_k, penalty_score, max_output_tokens, created_at "
            "FROM services")
_ACCESS_CODE = ("SELECT c.id, c.app_id, a.name, c.created_at FROM access_codes c JOIN apps a ON a.id = c.app_id")
_API_KEY = ("SELECT k.id, k.app_id, a.name, k.created_at, k.expires_at FROM api_keys k "
            "JOIN apps a ON a.id = k.app_id")


class SQLiteStore(Store):
    def __init__(self, path: Path, busy_timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            self._create_or_migrate(conn)
        except BaseException:
            self.close()
            raise

    def _create_or_migrate(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new file, or bring an older one up to SCHEMA_VERSION, in one transaction (a
        second process opening the file at the same time waits, then finds it done)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise AdminError(f"the store {self.path} has schema version {version}, newer than this neoxserve "
                                 f"understands ({SCHEMA_VERSION}): upgrade neoxserve")
            if version < SCHEMA_VERSION:
                empty = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'apps'").fetchone()[0] == 0
                for script in [SCHEMA] if empty else _migrations_from(version):
                    for statement in _statements(script):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # connections: one per thread (sqlite3 connections must not be shared between threads)
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self):
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def claim_meta(self, key: str, value: str) -> str:
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # apps
    def _app(self, c: sqlite3.Connection, row) -> App | None:
        if row is None:
            return None
        services = tuple(r[0] for r in c.execute(
            "SELECT api_name FROM permissions WHERE app_id = ? ORDER BY api_name", (row[0],)))
        return App(id=row[0], name=row[1], api_key=row[2], access_key=row[3],
                   limits=Limits(qps=row[8], daily=row[9], total=row[10], rpm=row[12], tpm=row[13]),
                   services=services,
                   created_at=row[11], token_generation=row[7],
                   secrets=StoredSecrets(bytes(row[4]), bytes(row[5]), bytes(row[6])))

    def _app_where(self, clause: str, value) -> App | None:
        c = self._conn()
        return self._app(c, c.execute(f"{_APP} WHERE {clause} = ?", (value,)).fetchone())

    def create_app(self, name, api_key, access_key, secrets, limits, services, created_at) -> App:
        with self._tx() as c:
            if c.execute("SELECT 1 FROM apps WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"an app named {name!r} already exists")
            for api_name in services:
                if not c.execute("SELECT 1 FROM services WHERE api_name = ?", (api_name,)).fetchone():
                    raise NotFound(f"no published service named {api_name!r}")
            cur = c.execute(
                "INSERT INTO apps (name, api_key, access_key, sk_hash, sk_salt, sak_enc, qps_limit, daily_limit, "
                "total_limit, rpm_limit, tpm_limit, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, api_key, access_key, secrets.secret_key_hash, secrets.secret_key_salt,
                 secrets.secret_access_key_enc, limits.qps, limits.daily, limits.total, limits.rpm, limits.tpm,
                 created_at))
            app_id = cur.lastrowid
            c.executemany("INSERT OR IGNORE INTO permissions (app_id, api_name) VALUES (?, ?)",
                          [(app_id, s) for s in services])
            app = self._app(c, c.execute(f"{_APP} WHERE id = ?", (app_id,)).fetchone())
            assert app is not None   # inserted just now, in this transaction
            return app

    def get_app(self, app_id):
        return self._app_where("id", app_id)

    def app_by_name(self, name):
        return self._app_where("name", name)

    def app_by_api_key(self, api_key):
        return self._app_where("api_key", api_key)

    def app_by_access_key(self, access_key):
        return self._app_where("access_key", access_key)

    def list_apps(self):
        c = self._conn()
        return [self._app(c, row) for row in c.execute(f"{_APP} ORDER BY name").fetchall()]

    def rotate_app(self, app_id, api_key, access_key, secrets) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "UPDATE apps SET api_key = ?, access_key = ?, sk_hash = ?, sk_salt = ?, sak_enc = ?, "
                "generation = generation + 1 WHERE id = ?",
                (api_key, access_key, secrets.secret_key_hash, secrets.secret_key_salt,
                 secrets.secret_access_key_enc, app_id))
            c.execute("DELETE FROM tokens WHERE app_id = ?", (app_id,))
            return cur.rowcount == 1

    def set_limits(self, app_id, limits) -> bool:
        with self._tx() as c:
            cur = c.execute("UPDATE apps SET qps_limit = ?, daily_limit = ?, total_limit = ?, rpm_limit = ?, "
                            "tpm_limit = ? WHERE id = ?",
                            (limits.qps, limits.daily, limits.total, limits.rpm, limits.tpm, app_id))
            return cur.rowcount == 1

    def delete_app(self, app_id) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount == 1

    def grant(self, app_id, api_name) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)).fetchone():
                raise NotFound(f"no app with id {app_id}")
            if not c.execute("SELECT 1 FROM services WHERE api_name = ?", (api_name,)).fetchone():
                raise NotFound(f"no published service named {api_name!r}")
            c.execute("INSERT OR IGNORE INTO permissions (app_id, api_name) VALUES (?, ?)", (app_id, api_name))

    def revoke(self, app_id, api_name) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM permissions WHERE app_id = ? AND api_name = ?",
                             (app_id, api_name)).rowcount == 1

    # tokens
    def put_token(self, token_hash, record, now) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO tokens (hash, app_id, generation, expires_at) VALUES (?, ?, ?, ?)",
                      (token_hash, record.app_id, record.generation, record.expires_at))
            c.execute("DELETE FROM tokens WHERE expires_at < ?", (now - TOKEN_GRACE_SECONDS,))

    def get_token(self, token_hash):
        row = self._conn().execute("SELECT app_id, generation, expires_at FROM tokens WHERE hash = ?",
                                   (token_hash,)).fetchone()
        return None if row is None else TokenRecord(*row)

    def delete_token(self, token_hash) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,)).rowcount == 1

    # console sessions
    def put_session(self, session_hash, record, now) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO console_sessions (hash, key_id, expires_at) VALUES (?, ?, ?)",
                      (session_hash, record.key_id, record.expires_at))
            c.execute("DELETE FROM console_sessions WHERE expires_at < ?", (now,))

    def get_session(self, session_hash):
        row = self._conn().execute("SELECT key_id, expires_at FROM console_sessions WHERE hash = ?",
                                   (session_hash,)).fetchone()
        return None if row is None else SessionRecord(*row)

    def delete_session(self, session_hash) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM console_sessions WHERE hash = ?", (session_hash,)).rowcount == 1

    def take_login_attempt(self, address, now, window, limit):
        with self._tx() as c:
            c.execute("DELETE FROM login_attempts WHERE at <= ?", (now - window,))
            count, oldest = c.execute("SELECT COUNT(*), MIN(at) FROM login_attempts WHERE address = ?",
                                      (address,)).fetchone()
            if count >= limit:
                return oldest + window
            c.execute("INSERT INTO login_attempts (address, at) VALUES (?, ?)", (address, now))
            return None

    # services
    def create_service(self, service) -> None:
        with self._tx() as c:
            if c.execute("SELECT 1 FROM services WHERE api_name = ?", (service.api_name,)).fetchone():
                raise Conflict(f"a service named {service.api_name!r} is already published")
            c.execute("INSERT INTO services (api_name, model, temperature, top_p, top_k, penalty_score, "
                      "max_output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (service.api_name, service.model, service.temperature, service.top_p, service.top_k,
                       service.penalty_score, service.max_output_tokens, service.created_at))

    def get_service(self, api_name):
        row = self._conn().execute(f"{_SERVICE} WHERE api_name = ?", (api_name,)).fetchone()
        return None if row is None else Service(*row)

    def list_services(self):
        return [Service(*row) for row in self._conn().execute(f"{_SERVICE} ORDER BY api_name").fetchall()]

    def delete_service(self, api_name) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM services WHERE api_name = ?", (api_name,)).rowcount == 1

    # API keys
    def create_api_key(self, key_hash, record, created_at) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM apps WHERE id = ?", (record.app_id,)).fetchone():
                raise NotFound(f"no app with id {record.app_id}")
            c.execute("INSERT INTO api_keys (id, hash, app_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                      (record.id, key_hash, record.app_id, created_at, record.expires_at))

    def get_api_key(self, key_hash):
        row = self._conn().execute("SELECT id, app_id, expires_at FROM api_keys WHERE hash = ?",
                                   (key_hash,)).fetchone()
        return None if row is None else ApiKeyRecord(*row)

    def list_api_keys(self, app_id=None):
        rows = self._conn().execute(f"{_API_KEY} WHERE ?1 IS NULL OR k.app_id = ?1 ORDER BY a.name, k.created_at",
                                    (app_id,)).fetchall()
        return [ApiKey(*row) for row in rows]

    def delete_api_key(self, key_id) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount == 1

    # access codes
    def create_access_code(self, record, created_at) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM apps WHERE id = ?", (record.app_id,)).fetchone():
                raise NotFound(f"no app with id {record.app_id}")
            c.execute("INSERT INTO access_codes (id, hash, app_id, created_at) VALUES (?, ?, ?, ?)",
                      (record.id, record.code_hash, record.app_id, created_at))

    def get_access_code(self, code_id):
        row = self._conn().execute("SELECT id, app_id, hash FROM access_codes WHERE id = ?", (code_id,)).fetchone()
        return None if row is None else AccessCodeRecord(row[0], row[1], bytes(row[2]))

    def list_access_codes(self, app_id=None):
        rows = self._conn().execute(f"{_ACCESS_CODE} WHERE ?1 IS NULL OR c.app_id = ?1 ORDER BY a.name, c.created_at",
                                    (app_id,)).fetchall()
        return [AccessCode(*row) for row in rows]

    def delete_access_code(self, code_id) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM access_codes WHERE id = ?", (code_id,)).rowcount == 1

    # quotas and usage
    def admit(self, app_id, api_name, app_name, window, reserve_tokens) -> Admission:
        with self._tx() as c:
            row = c.execute(
                "SELECT a.qps_limit, a.daily_limit, a.total_limit, a.rpm_limit, a.tpm_limit, c.total, c.day, "
                "c.day_count, c.second, c.second_count, c.minute, c.minute_count, c.minute_tokens "
                "FROM apps a LEFT JOIN counters c ON c.app_id = a.id WHERE a.id = ?", (app_id,)).fetchone()
            if row is None:
                raise PlatformError(TOKEN_INVALID, detail=f"app {app_id} was deleted")
            limits = Limits(*row[:5])
            same_minute = row[10] == window.minute
            used = quota.Usage(total=row[5] or 0, day=row[7] if row[6] == window.day else 0,
                               second=row[9] if row[8] == window.second else 0,
                               minute_requests=row[11] if same_minute else 0,
                               minute_tokens=row[12] if same_minute else 0)
            quota.check(limits, window, used, reserve_tokens)
            admission = Admission(app_id, app_name, api_name, window.day, window.minute, reserve_tokens, limits,
                                  used.second + 1, used.day + 1, used.total + 1, used.minute_requests + 1,
                                  used.minute_tokens + reserve_tokens)
            c.execute("INSERT INTO counters (app_id, total, day, day_count, second, second_count, minute, "
                      "minute_count, minute_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app_id) DO "
                      "UPDATE SET total = excluded.total, day = excluded.day, day_count = excluded.day_count, "
                      "second = excluded.second, second_count = excluded.second_count, minute = excluded.minute, "
                      "minute_count = excluded.minute_count, minute_tokens = excluded.minute_tokens",
                      (app_id, admission.total_count, window.day, admission.day_count, window.second,
                       admission.second_count, window.minute, admission.minute_requests, admission.minute_tokens))
            return admission

    def settle(self, admission, outcome, prompt_tokens, completion_tokens) -> None:
        served = outcome is not Outcome.NOT_SERVED
        used = prompt_tokens + completion_tokens if served else 0
        a = admission
        with self._tx() as c:
            if not served:
                c.execute("UPDATE counters SET total = total - 1, day_count = day_count - (day = ?) "
                          "WHERE app_id = ?", (a.day, a.app_id))
            c.execute("UPDATE counters SET minute_tokens = max(0, minute_tokens + ?) WHERE app_id = ? AND minute = ?",
                      (used - a.reserved_tokens, a.app_id, a.minute))
            self._add_usage(c, a.day, a.app_id, a.app_name, a.api_name, outcome is Outcome.SUCCEEDED,
                            prompt_tokens if served else 0, completion_tokens if served else 0)

    def record_failure(self, day, app_id, app_name, api_name) -> None:
        with self._tx() as c:
            self._add_usage(c, day, app_id, app_name, api_name, False, 0, 0)

    @staticmethod
    def _add_usage(c: sqlite3.Connection, day: str, app_id: int, app_name: str, api_name: str, succeeded: bool,
                   prompt_tokens: int, completion_tokens: int) -> None:
        c.execute("INSERT INTO usage (day, app_id, app_name, api_name, succeeded, failed, prompt_tokens, "
                  "completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, app_id, api_name) DO UPDATE "
                  "SET succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed, "
                  "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                  "completion_tokens = completion_tokens + excluded.completion_tokens",
                  (day, app_id, app_name, api_name, int(succeeded), int(not succeeded), prompt_tokens,
                   completion_tokens))

    def counters(self, app_id, day, minute) -> Counters:
        row = self._conn().execute("SELECT total, day, day_count, minute, minute_count, minute_tokens FROM counters "
                                   "WHERE app_id = ?", (app_id,)).fetchone()
        if row is None:
            return Counters(day, 0, 0)
        same_minute = row[3] == minute
        return Counters(day, row[2] if row[1] == day else 0, row[0], row[4] if same_minute else 0,
                        row[5] if same_minute else 0)

    def usage(self, app_name=None, api_name=None, since=None):
        rows = self._conn().execute(
            "SELECT day, app_id, app_name, api_name, succeeded, failed, prompt_tokens, completion_tokens FROM usage "
            "WHERE (?1 IS NULL OR app_name = ?1) AND (?2 IS NULL OR api_name = ?2) AND (?3 IS NULL OR day >= ?3) "
            "ORDER BY day, app_name, api_name", (app_name, api_name, since)).fetchall()
        return [UsageRow(*r) for r in rows]


def _migrations_from(version: int) -> list[str]:
    """The scripts that bring a store of `version` to SCHEMA_VERSION, in order."""
    scripts = []
    while version < SCHEMA_VERSION:
        version, script = MIGRATIONS[version]
        scripts.append(script)
    return scripts


def _statements(script: str) -> list[str]:
    """The statements of a script, run one by one so they share the caller's transaction (executescript would
    commit it first)."""
    return [s.strip() for s in script.split(";") if s.strip()]
