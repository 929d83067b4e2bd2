"""Stores written by the first release (tests/platform/data/store-v1, made by make_v1_stores.py with that
release's code) open, migrate once, and keep working: keys, tokens, limits, counts and usage survive."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from neoxserve.config import Settings
from neoxserve.platform import AdminError, Limits, Outcome, Platform

V1 = Path(__file__).parent / "data" / "store-v1"
V1_CLOCK = 1_750_000_000.0  # the fake time the fixture was written at


@pytest.fixture
def v1_settings(backend, tmp_path, request) -> Settings:
    """A copy of the first release's store for this backend, and settings that open it."""
    data_dir = tmp_path / "data"
    shutil.copytree(V1, data_dir)
    secret = (V1 / "secret.key").read_text().strip()
    if backend == "sqlite":
        return Settings(data_dir=data_dir)
    import redis

    url = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as r:
        r.flushdb()
        for key, kind, value in json.loads((V1 / "redis.json").read_text()):
            key = bytes.fromhex(key)
            if kind == "hash":
                r.hset(key, mapping={bytes.fromhex(k): bytes.fromhex(v) for k, v in value.items()})
            elif kind == "set":
                r.sadd(key, *(bytes.fromhex(m) for m in value))
            else:
                r.set(key, bytes.fromhex(value))
    return Settings(data_dir=data_dir, store_url=url, secret_key=secret)


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
    with Platform.open(v1_settings, clock=clock) as again:   # migrated once: opening again changes nothing
        [row] = again.usage()
        assert (row.succeeded, row.failed, row.prompt_tokens, row.completion_tokens) == (4, 0, 9, 12)
        assert again.counters("alice").total_count == 4


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_schema_version_is_recorded(v1_settings):
    Platform.open(v1_settings).close()
    with sqlite3.connect(v1_settings.data_dir / "neoxserve.db") as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = [r[1] for r in c.execute("PRAGMA table_info(usage)")]
        assert "requests" not in columns and {"succeeded", "failed"} <= set(columns)


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
    assert str(e.value) == (f"{where} has schema version 99, newer than this neoxserve understands (2): "
                            "upgrade neoxserve")
