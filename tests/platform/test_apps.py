"""Apps: creation, lookup, limits, deletion, bootstrap; secrets never stored in plain text."""
from __future__ import annotations

import os
import stat

import pytest

from neoxserve.platform import AdminError, Conflict, Limits, NotFound, Outcome, Platform


def test_create_show_list_delete(platform):
    keys = platform.create_app("alice", limits=Limits(qps=3))
    assert len(keys.api_key) == 24 and len(keys.secret_key) == 32
    assert len(keys.access_key) == 32 and len(keys.secret_access_key) == 32
    assert keys.secret_key not in repr(keys) and keys.secret_access_key not in repr(keys)
    app = platform.get_app("alice")
    assert (app.id, app.api_key, app.access_key, app.limits) == (keys.app_id, keys.api_key, keys.access_key,
                                                                 Limits(qps=3))
    assert "secrets" not in app.to_dict() and keys.secret_key not in str(app.to_dict())
    bob = platform.create_app("bob")
    assert bob.app_id != keys.app_id
    assert [a.name for a in platform.list_apps()] == ["alice", "bob"]
    platform.delete_app("alice")
    with pytest.raises(AdminError, match="no app named 'alice'"):
        platform.get_app("alice")
    again = platform.create_app("alice")
    assert again.app_id not in (keys.app_id, bob.app_id)  # ids are never reused: old tokens stay dead


def test_bad_input(platform):
    platform.create_app("alice")
    with pytest.raises(Conflict, match="an app named 'alice' already exists"):
        platform.create_app("alice")
    with pytest.raises(NotFound, match="no published service named 'ghost'"):
        platform.create_app("bob", services=["ghost"])
    with pytest.raises(AdminError, match="invalid app name"):
        platform.create_app("no spaces")
    with pytest.raises(AdminError, match="invalid qps limit 0"):
        platform.set_limits("alice", Limits(qps=0))
    for op in (platform.delete_app, platform.rotate_app, platform.counters):
        with pytest.raises(NotFound, match="no app named 'ghost'"):
            op("ghost")


def test_secrets_are_not_stored_in_plain_text(platform, backend, settings):
    keys = platform.create_app("alice")
    if backend == "sqlite":
        platform.close()
        blob = b"".join(p.read_bytes() for p in settings.data_dir.iterdir() if p.name.startswith("neoxserve.db"))
    else:
        import redis

        with redis.Redis.from_url(settings.store_url) as r:
            blob = b"".join(repr(r.hgetall(k)).encode() + k for k in r.keys("*") if r.type(k) == b"hash")
    assert keys.api_key.encode() in blob  # the check can see what is stored
    assert keys.secret_key.encode() not in blob
    assert keys.secret_access_key.encode() not in blob


def test_key_file_is_private_and_reused(settings, clock):
    key_file = settings.data_dir / "secret.key"
    assert not key_file.exists()
    with Platform.open(settings, clock=clock):
        pass
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    first = key_file.read_text()
    with Platform.open(settings, clock=clock):
        pass
    assert key_file.read_text() == first


def test_a_different_key_is_refused(settings, clock):
    with Platform.open(settings.model_copy(update={"secret_key": "one"}), clock=clock):
        pass
    with pytest.raises(AdminError, match="secret key mismatch"):
        Platform.open(settings.model_copy(update={"secret_key": "two"}), clock=clock)
    with Platform.open(settings.model_copy(update={"secret_key": "one"}), clock=clock):
        pass


def test_bootstrap_once(platform):
    keys = platform.bootstrap("demo", "demo-model")
    assert keys is not None and keys.name == "default"
    assert platform.get_app("default").services == ("demo",)
    assert platform.get_service("demo").model == "demo-model"
    assert platform.issue_token("client_credentials", keys.api_key, keys.secret_key)["access_token"]
    assert platform.bootstrap("demo", "demo-model") is None
    platform.delete_app("default")
    platform.unpublish("demo")
    assert platform.bootstrap("demo", "demo-model") is None  # an emptied store is not a fresh one


def test_bootstrap_on_a_store_set_up_by_hand(platform):
    platform.create_app("alice")
    assert platform.bootstrap("demo", "m") is None
    assert [a.name for a in platform.list_apps()] == ["alice"]


def test_usage_per_app_service_day(served, clock):
    p, _, demo = served
    other = p.publish("other", "m", allow=["alice"])
    p.create_app("bob", services=["demo"])
    alice, bob = p.get_app("alice"), p.get_app("bob")
    clock.t = 1_750_003_100.0  # 2025-06-15 23:58:20 in Shanghai
    p.settle(p.admit(alice, demo), Outcome.SUCCEEDED, 10, 20)
    p.settle(p.admit(alice, demo), Outcome.SUCCEEDED, 1, 2)
    p.settle(p.admit(bob, demo), Outcome.SUCCEEDED, 3, 4)
    late = p.admit(bob, demo)
    clock.advance(200)  # the next day in Shanghai
    p.settle(late, Outcome.FAILED, 7, 1)    # counted on the day it was admitted
    p.record_failure(bob, demo)             # today
    p.settle(p.admit(alice, other), Outcome.SUCCEEDED, 5, 6)
    rows = [(r.day, r.app_name, r.api_name, r.calls, r.succeeded, r.failed, r.prompt_tokens, r.completion_tokens)
            for r in p.usage()]
    assert rows == [("2025-06-15", "alice", "demo", 2, 2, 0, 11, 22), ("2025-06-15", "bob", "demo", 2, 1, 1, 10, 5),
                    ("2025-06-16", "alice", "other", 1, 1, 0, 5, 6), ("2025-06-16", "bob", "demo", 1, 0, 1, 0, 0)]
    assert [r.api_name for r in p.usage(app="alice")] == ["demo", "other"]
    assert [r.app_name for r in p.usage(service="demo")] == ["alice", "bob", "bob"]
    assert [r.day for r in p.usage(since="2025-06-16")] == ["2025-06-16", "2025-06-16"]
    assert [r.day for r in p.usage(until="2025-06-15")] == ["2025-06-15", "2025-06-15"]
    assert [r.day for r in p.usage(since="2025-06-15", until="2025-06-15")] == ["2025-06-15", "2025-06-15"]
    assert p.usage(app="alice", service="other")[0].to_dict() == {
        "day": "2025-06-16", "app_id": alice.id, "app_name": "alice", "api_name": "other", "calls": 1,
        "succeeded": 1, "failed": 0, "prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    with pytest.raises(AdminError, match="invalid date '16/06/2025': use YYYY-MM-DD"):
        p.usage(since="16/06/2025")
    with pytest.raises(AdminError, match="invalid date '2025-13-01': use YYYY-MM-DD"):
        p.usage(until="2025-13-01")
    with pytest.raises(AdminError, match=r"^the range ends \(2025-06-14\) before it starts \(2025-06-15\)$"):
        p.usage(since="2025-06-15", until="2025-06-14")
    with pytest.raises(ValueError, match="token counts must not be negative"):
        p.settle(p.admit(alice, demo), Outcome.SUCCEEDED, -1, 0)


def test_unknown_timezone(settings):
    with pytest.raises(AdminError, match="unknown quota_timezone 'Mars/Base'"):
        Platform.open(settings.model_copy(update={"quota_timezone": "Mars/Base"}))
