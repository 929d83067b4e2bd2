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

from ..errors import DAILY_LIMIT, QPS_LIMIT, TOKEN_INVALID, TOTAL_LIMIT, AdminError, PlatformError
from ..records import Admission, App, Counters, Limits, Service, StoredSecrets, TokenRecord, UsageRow
from .base import TOKEN_GRACE_SECONDS, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a deleted app's id is never reused
    name TEXT NOT NULL UNIQUE, api_key TEXT NOT NULL UNIQUE, access_key TEXT NOT NULL UNIQUE,
    sk_hash BLOB NOT NULL, sk_salt BLOB NOT NULL, sak_enc BLOB NOT NULL, generation INTEGER NOT NULL DEFAULT 0,
    qps_limit INTEGER, daily_limit INTEGER, total_limit INTEGER, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    api_name TEXT PRIMARY KEY, model TEXT NOT NULL, temperature REAL, top_p REAL, top_k INTEGER,
    penalty_score REAL, max_output_tokens INTEGER, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS permissions (
    app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    api_name TEXT NOT NULL REFERENCES services(api_name) ON DELETE CASCADE,
    PRIMARY KEY (app_id, api_name));
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY, app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);
CREATE TABLE IF NOT EXISTS counters (
    app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    total INTEGER NOT NULL, day TEXT NOT NULL, day_count INTEGER NOT NULL,
    second INTEGER NOT NULL, second_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, app_id INTEGER NOT NULL, app_name TEXT NOT NULL, api_name TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, app_id, api_name));
"""

_APP = ("SELECT id, name, api_key, access_key, sk_hash, sk_salt, sak_enc, generation, qps_limit, daily_limit, "
        "total_limit, created_at FROM apps")
_SERVICE = ("SELECT api_name, model, temperature, top_p, top_k, penalty_score, max_output_tokens, created_at "
            "FROM services")


class SQLiteStore(Store):
    def __init__(self, path: Path, busy_timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")

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

    # apps
    def _app(self, c: sqlite3.Connection, row) -> App | None:
        if row is None:
            return None
        services = tuple(r[0] for r in c.execute(
            "SELECT api_name FROM permissions WHERE app_id = ? ORDER BY api_name", (row[0],)))
        return App(id=row[0], name=row[1], api_key=row[2], access_key=row[3],
                   limits=Limits(qps=row[8], daily=row[9], total=row[10]), services=services,
                   created_at=row[11], token_generation=row[7],
                   secrets=StoredSecrets(bytes(row[4]), bytes(row[5]), bytes(row[6])))

    def _app_where(self, clause: str, value) -> App | None:
        c = self._conn()
        return self._app(c, c.execute(f"{_APP} WHERE {clause} = ?", (value,)).fetchone())

    def create_app(self, name, api_key, access_key, secrets, limits, services, created_at) -> App:
        with self._tx() as c:
            if c.execute("SELECT 1 FROM apps WHERE name = ?", (name,)).fetchone():
                raise AdminError(f"an app named {name!r} already exists")
            for api_name in services:
                if not c.execute("SELECT 1 FROM services WHERE api_name = ?", (api_name,)).fetchone():
                    raise AdminError(f"no published service named {api_name!r}")
            cur = c.execute(
                "INSERT INTO apps (name, api_key, access_key, sk_hash, sk_salt, sak_enc, qps_limit, daily_limit, "
                "total_limit, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, api_key, access_key, secrets.secret_key_hash, secrets.secret_key_salt,
                 secrets.secret_access_key_enc, limits.qps, limits.daily, limits.total, created_at))
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
            cur = c.execute("UPDATE apps SET qps_limit = ?, daily_limit = ?, total_limit = ? WHERE id = ?",
                            (limits.qps, limits.daily, limits.total, app_id))
            return cur.rowcount == 1

    def delete_app(self, app_id) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount == 1

    def grant(self, app_id, api_name) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)).fetchone():
                raise AdminError(f"no app with id {app_id}")
            if not c.execute("SELECT 1 FROM services WHERE api_name = ?", (api_name,)).fetchone():
                raise AdminError(f"no published service named {api_name!r}")
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

    # services
    def create_service(self, service) -> None:
        with self._tx() as c:
            if c.execute("SELECT 1 FROM services WHERE api_name = ?", (service.api_name,)).fetchone():
                raise AdminError(f"a service named {service.api_name!r} is already published")
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

    # quotas and usage
    def admit(self, app_id, api_name, app_name, second, day) -> Admission:
        with self._tx() as c:
            row = c.execute(
                "SELECT a.qps_limit, a.daily_limit, a.total_limit, c.total, c.day, c.day_count, c.second, "
                "c.second_count FROM apps a LEFT JOIN counters c ON c.app_id = a.id WHERE a.id = ?",
                (app_id,)).fetchone()
            if row is None:
                raise PlatformError(TOKEN_INVALID, detail=f"app {app_id} was deleted")
            limits = Limits(qps=row[0], daily=row[1], total=row[2])
            total = row[3] or 0
            day_count = row[5] if row[4] == day else 0
            second_count = row[7] if row[6] == second else 0
            check_limits(limits, total, day_count, second_count)
            c.execute("INSERT INTO counters (app_id, total, day, day_count, second, second_count) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app_id) DO UPDATE SET total = excluded.total, "
                      "day = excluded.day, day_count = excluded.day_count, second = excluded.second, "
                      "second_count = excluded.second_count",
                      (app_id, total + 1, day, day_count + 1, second, second_count + 1))
            c.execute("INSERT INTO usage (day, app_id, app_name, api_name, requests) VALUES (?, ?, ?, ?, 1) "
                      "ON CONFLICT (day, app_id, api_name) DO UPDATE SET requests = requests + 1",
                      (day, app_id, app_name, api_name))
            return Admission(limits, second_count + 1, day_count + 1, total + 1)

    def record_usage(self, day, app_id, app_name, api_name, prompt_tokens, completion_tokens) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO usage (day, app_id, app_name, api_name, prompt_tokens, completion_tokens) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, app_id, api_name) DO UPDATE SET "
                      "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                      "completion_tokens = completion_tokens + excluded.completion_tokens",
                      (day, app_id, app_name, api_name, prompt_tokens, completion_tokens))

    def counters(self, app_id, day) -> Counters:
        row = self._conn().execute("SELECT total, day, day_count FROM counters WHERE app_id = ?",
                                   (app_id,)).fetchone()
        if row is None:
            return Counters(day, 0, 0)
        return Counters(day, row[2] if row[1] == day else 0, row[0])

    def usage(self, app_name=None, api_name=None, since=None):
        rows = self._conn().execute(
            "SELECT day, app_id, app_name, api_name, requests, prompt_tokens, completion_tokens FROM usage "
            "WHERE (?1 IS NULL OR app_name = ?1) AND (?2 IS NULL OR api_name = ?2) AND (?3 IS NULL OR day >= ?3) "
            "ORDER BY day, app_name, api_name", (app_name, api_name, since)).fetchall()
        return [UsageRow(*r) for r in rows]


def check_limits(limits: Limits, total: int, day_count: int, second_count: int) -> None:
    """Non-retryable limits first: the SDK retries 18 (QPS) but retrying 19 or 17 is pointless."""
    if limits.total is not None and total >= limits.total:
        raise PlatformError(TOTAL_LIMIT, detail=f"total limit {limits.total} reached")
    if limits.daily is not None and day_count >= limits.daily:
        raise PlatformError(DAILY_LIMIT, detail=f"daily limit {limits.daily} reached")
    if limits.qps is not None and second_count >= limits.qps:
        raise PlatformError(QPS_LIMIT, detail=f"qps limit {limits.qps} reached")

