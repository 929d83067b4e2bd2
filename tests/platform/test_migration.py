"""Stores written by earlier releases open, migrate once, and keep working: keys, tokens, limits, counts and usage
survive, and the new features work on them.

- tests/platform/data/store-v1: the first release (no schema version), made by make_v1_stores.py with its code.
- tests/platform/data/store-v2: schema version 2 (RPM/TPM, API keys, succeeded/failed usage; no console), made by
  make_v2_stores.py with that code.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from neoxserve.config import Settings
from neoxserve.platform import AdminAuthError, AdminError, Limits, Outcome, Platform, PlatformError
from neoxserve.platform.store import sqlite as sqlite_store

DATA = Path(__file__).parent / "data"
V1, V2 = DATA / "store-v1", DATA / "store-v2"
V1_CLOCK = 1_750_000_000.0  # the fake times the fixtures were written at
V2_CLOCK = 1_760_000_000.0


def old_store(source: Path, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """A copy of an old release's store for this backend, and settings that open it."""
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir)
    secret = (source / "secret.key").read_text().strip()
    if backend == "sqlite":
        return Settings(data_dir=data_dir)
    import redis

    url = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as r:
        r.flushdb()
        for key, kind, value in json.loads((source / "redis.json").read_text()):
            key = bytes.fromhex(key)
            if kind == "hash":
                r.hset(key, mapping={bytes.fromhex(k): bytes.fromhex(v) for k, v in value.items()})
            elif kind == "set":
                r.sadd(key, *(bytes.fromhex(m) for m in value))
            else:
                r.set(key, bytes.fromhex(value))
    return Settings(data_dir=data_dir, store_url=url, secret_key=secret)


@pytest.fixture
def v1_settings(backend, tmp_path, request) -> Settings:
    return old_store(V1, backend, tmp_path, request)


@pytest.fixture
def v2_settings(backend, tmp_path, request) -> Settings:
    return old_store(V2, backend, tmp_path, request)


def check_console_works(p: Platform) -> None:
    """The console's admin key, sessions and login limit on a migrated store."""
    key = p.admin.create_key()
    assert key is not None and p.admin.create_key() is None
    session = p.admin.login(key, "10.0.0.9")
    assert p.admin.check_session(session.token).expires_at == session.expires_at
    assert p.admin.logout(session.token)
    with pytest.raises(AdminAuthError, match="not logged in"):
        p.admin.check_session(session.token)


def check_access_codes_work(p: Platform) -> None:
    """Access codes (schema 4) on a migrated store."""
    code = p.create_access_code("alice")
    assert p.authenticate_access_code(code.code).name == "alice"
    assert [c.id for c in p.list_access_codes("alice")] == [code.id]


def test_a_first_release_store_keeps_working(backend, v1_settings):
    keys = json.loads((V1 / "keys.json").read_text())[backend]
    clock = lambda: V1_CLOCK + 60  # noqa: E731
    with Platform.open(v1_settings, clock=clock) as p:
        alice = p.get_app("alice")
        assert alice.limits == Limits(qps=5, daily=100, total=1000)
        assert [a.name for a in p.list_apps()] == ["alice", "bob"]
        assert p.get_service("demo").temperature == 0.5
        assert p.authenticate_token(keys["access_token"]).name == "alice"
        fresh = p.issue_token("client_credentials", keys["api_key"], keys["secret_key"])["access_token"]
        assert p.authenticate_token(fresh).id == alice.id
        assert p.cipher.decrypt(alice.secrets.secret_access_key_enc) == keys["secret_access_key"]
        # the first release counted admitted requests without telling failures apart: they become succeeded
        [row] = p.usage()
        assert (row.calls, row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == (3, 3, 0, 8, 10)
        counters = p.counters("alice")
        assert (counters.day_count, counters.total_count) == (3, 3)
        # new features on the old store
        alice = p.set_limits("alice", Limits(qps=5, daily=100, total=1000, rpm=10, tpm=500))
        admission = p.admit(alice, p.get_service("demo"), 100)
        assert admission.rate_limit_headers()["X-Ratelimit-Remaining-Tokens"] == "400"
        p.settle(admission, Outcome.SUCCEEDED, 1, 2)
        key = p.create_api_key("alice")
        assert p.authenticate_bearer(key.key).name == "alice"
        check_console_works(p)
        check_access_codes_work(p)
    with Platform.open(v1_settings, clock=clock) as again:   # migrated once: opening again changes nothing
        [row] = again.usage()
        assert (row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == (4, 0, 9, 12)
        assert again.counters("alice").total_count == 4
        assert again.admin.create_key() is None


def test_a_schema_2_store_keeps_working(backend, v2_settings):
    keys = json.loads((V2 / "keys.json").read_text())[backend]
    clock = lambda: V2_CLOCK + 60  # noqa: E731
    with Platform.open(v2_settings, clock=clock) as p:
        alice = p.get_app("alice")
        assert alice.limits == Limits(qps=5, daily=100, total=1000, rpm=30, tpm=5000)
        assert [a.name for a in p.list_apps()] == ["alice", "bob"]
        demo = p.get_service("demo")
        assert (demo.temperature, demo.max_output_tokens) == (0.5, 64)
        assert p.authenticate_token(keys["access_token"]).name == "alice"
        assert p.authenticate_bearer(keys["api_key_bearer"]).name == "alice"
        with pytest.raises(PlatformError) as e:
            p.authenticate_bearer(keys["revoked_key"])
        assert e.value.code == 110
        listed = {k.id: (k.app_name, k.expires_at) for k in p.list_api_keys()}
        assert listed == {keys["api_key_id"]: ("alice", None),
                          keys["expiring_key_id"]: ("alice", int(V2_CLOCK) + 3600)}
        [row] = p.usage()
        assert (row.calls, row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == (3, 1, 2, 8, 5)
        counters = p.counters("alice")
        assert (counters.day_count, counters.total_count) == (2, 2)
        p.settle(p.admit(alice, demo, 10), Outcome.SUCCEEDED, 2, 3)
        check_console_works(p)
        check_access_codes_work(p)
    with Platform.open(v2_settings, clock=clock) as again:   # migrated once: opening again changes nothing
        [row] = again.usage()
        assert (row.calls, row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == (4, 2, 2, 10, 8)
        assert again.counters("alice").total_count == 3
        assert again.admin.create_key() is None
    if backend == "redis":
        import redis

        with redis.Redis.from_url(v2_settings.store_url) as r:
            assert r.hget("neoxserve:meta", "schema_version") == b"4"


def _schema(path: Path) -> dict[str, set]:
    """Every table's columns (name, type, not null, default, primary key) and every index's columns."""
    with sqlite3.connect(path) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                          "'sqlite_%'")]
        indexes = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")]
        shape = {t: {tuple(r[1:]) for r in c.execute(f"PRAGMA table_info({t})")} for t in tables}
        shape.update({i: {tuple(r) for r in c.execute(f"PRAGMA index_info({i})")} for i in indexes})
        return shape


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("source", [V1, V2], ids=["v1", "v2"])
def test_sqlite_migrated_schema_is_a_new_stores(source, backend, tmp_path, request):
    settings = old_store(source, backend, tmp_path, request)
    Platform.open(settings).close()
    Platform.open(Settings(data_dir=tmp_path / "new")).close()
    migrated, new = settings.data_dir / "neoxserve.db", tmp_path / "new" / "neoxserve.db"
    for path in (migrated, new):
        with sqlite3.connect(path) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.SCHEMA_VERSION == 4
    assert _schema(migrated) == _schema(new)
    assert {"console_sessions", "login_attempts"} <= set(_schema(migrated))


def test_a_newer_store_is_refused(backend, settings):
    Platform.open(settings).close()
    if backend == "sqlite":
        with sqlite3.connect(settings.data_dir / "neoxserve.db") as c:
            c.execute("PRAGMA user_version = 99")
        where = f"the store {settings.data_dir / 'neoxserve.db'}"
    else:
        import redis

        with redis.Redis.from_url(settings.store_url) as r:
            r.hset("neoxserve:meta", "schema_version", 99)
        where = "the Redis store"
    with pytest.raises(AdminError) as e:
        Platform.open(settings)
    assert str(e.value) == (f"{where} has schema version 99, newer than this neoxserve understands (4): "
                            "upgrade neoxserve")
