"""Console access in the platform: the admin key, sessions, login limits (both stores); secrets only as hashes."""
from __future__ import annotations

import threading

import pytest

from neoxserve.platform import AdminAuthError, Platform


def refused(fn, *args) -> AdminAuthError:
    with pytest.raises(AdminAuthError) as e:
        fn(*args)
    return e.value


def test_admin_key_is_created_once(platform, settings, clock):
    key = platform.admin.create_key()
    assert key.startswith("nxa-") and len(key) == 44
    assert platform.admin.create_key() is None
    with Platform.open(settings, clock=clock) as other:   # another process or replica on the same store
        assert other.admin.create_key() is None
        assert other.admin.check_session(other.admin.login(key, "10.0.0.1").token).key_id


def test_login_session_logout(platform):
    key = platform.admin.create_key()
    session = platform.admin.login(key, "10.0.0.1")
    assert session.token not in repr(session)
    assert platform.admin.check_session(session.token).expires_at == session.expires_at
    e = refused(platform.admin.login, key + "x", "10.0.0.1")
    assert (e.reason, e.message) == ("wrong_key", "wrong admin key")
    assert platform.admin.logout(session.token) is True
    e = refused(platform.admin.check_session, session.token)
    assert (e.reason, e.message) == ("no_session", "not logged in")
    for token in (None, "", "made-up"):
        assert refused(platform.admin.check_session, token).reason == "no_session"


def test_login_without_any_admin_key_is_refused(platform):
    assert refused(platform.admin.login, "nxa-anything", "10.0.0.1").reason == "wrong_key"


def test_session_expires(platform, clock):
    key = platform.admin.create_key()
    session = platform.admin.login(key, "10.0.0.1")
    assert session.expires_at == int(clock.t) + 43_200
    clock.advance(43_199)
    platform.admin.check_session(session.token)
    clock.advance(1)
    e = refused(platform.admin.check_session, session.token)
    assert (e.reason, e.message) == ("expired", "the session expired: log in again")


def test_rotation_ends_sessions_and_the_old_key(platform):
    old = platform.admin.create_key()
    session = platform.admin.login(old, "10.0.0.1")
    new = platform.admin.rotate_key()
    assert new != old and new.startswith("nxa-")
    assert refused(platform.admin.check_session, session.token).reason == "no_session"
    assert refused(platform.admin.login, old, "10.0.0.1").reason == "wrong_key"
    platform.admin.check_session(platform.admin.login(new, "10.0.0.1").token)


def test_login_attempts_limited_per_address_in_any_minute(settings, clock):
    with Platform.open(settings.model_copy(update={"console_login_attempts_per_minute": 3}), clock=clock) as p:
        key = p.admin.create_key()
        for _ in range(2):
            assert refused(p.admin.login, "wrong", "10.0.0.1").reason == "wrong_key"
            clock.advance(10)
        p.admin.login(key, "10.0.0.1")            # the third attempt in the minute: a right key still counts
        clock.advance(5)                          # t = 25 s after the first attempt
        e = refused(p.admin.login, key, "10.0.0.1")
        assert (e.reason, e.message, e.retry_after) == ("throttled", "too many login attempts: try again in 35 s",
                                                        35)
        p.admin.login(key, "10.0.0.2")            # another address has its own budget
        clock.advance(35)                         # the first attempt leaves the window: one more is allowed
        p.admin.login(key, "10.0.0.1")
        assert refused(p.admin.login, key, "10.0.0.1").retry_after == 10   # refused attempts were not counted


def test_login_limit_is_exact_under_concurrency(settings, clock):
    limited = settings.model_copy(update={"console_login_attempts_per_minute": 5})
    with Platform.open(limited, clock=clock) as p:
        p.admin.create_key()
    platforms = [Platform.open(limited, clock=clock) for _ in range(4)]   # separate connections, like replicas
    reasons: list[str] = []
    lock = threading.Lock()

    def attempt(p: Platform) -> None:
        for _ in range(10):
            try:
                p.admin.login("wrong", "10.0.0.9")
            except AdminAuthError as e:
                with lock:
                    reasons.append(e.reason)

    threads = [threading.Thread(target=attempt, args=(p,)) for p in platforms]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for p in platforms:
            p.close()
    assert sorted(reasons) == ["throttled"] * 35 + ["wrong_key"] * 5


def test_admin_key_and_session_tokens_are_stored_only_as_hashes(platform, backend, settings):
    key = platform.admin.create_key()
    token = platform.admin.login(key, "10.0.0.1").token
    if backend == "sqlite":
        platform.close()
        blob = b"".join(p.read_bytes() for p in settings.data_dir.iterdir() if p.name.startswith("neoxserve.db"))
    else:
        import redis

        with redis.Redis.from_url(settings.store_url) as r:
            blob = b"".join(k + repr(r.dump(k)).encode() for k in r.keys("*"))
    assert b"admin_key" in blob and b"10.0.0.1" in blob   # the check can see what is stored
    assert key.encode() not in blob and key[4:].encode() not in blob
    assert token.encode() not in blob


def test_token_for_an_app_without_its_secret(served, clock):
    platform, _keys, _ = served
    issued = platform.issue_token_for("alice", 3600)
    assert issued["expires_in"] == 3600
    assert platform.authenticate_token(issued["access_token"]).name == "alice"
    clock.advance(3600)
    with pytest.raises(Exception, match="111"):
        platform.authenticate_token(issued["access_token"])
    fresh = platform.issue_token_for("alice", 3600)["access_token"]
    platform.rotate_app("alice")
    with pytest.raises(Exception, match="110"):
        platform.authenticate_token(fresh)


CONFIGURED = "configured-admin-key-0123456789"


def test_configured_admin_key_becomes_the_stores_and_wins_on_every_start(settings, clock):
    configured = settings.model_copy(update={"admin_key": CONFIGURED})
    with Platform.open(configured, clock=clock) as p:
        assert p.admin.apply_configured_key() is True
        session = p.admin.login(CONFIGURED, "10.0.0.1")
        # another replica starting with the same key changes nothing: the session lives on
        with Platform.open(configured, clock=clock) as other:
            assert other.admin.apply_configured_key() is False
            assert other.admin.create_key() is None
        p.admin.check_session(session.token)
        assert refused(p.admin.login, "nxa-anything", "10.0.0.2").reason == "wrong_key"
    # a new key in the settings (the Secret changed): it replaces the old one and ends its sessions
    changed = settings.model_copy(update={"admin_key": CONFIGURED + "-new"})
    with Platform.open(changed, clock=clock) as p:
        assert p.admin.apply_configured_key() is True
        assert refused(p.admin.check_session, session.token).reason == "no_session"
        assert refused(p.admin.login, CONFIGURED, "10.0.0.3").reason == "wrong_key"
        p.admin.login(CONFIGURED + "-new", "10.0.0.3")


def test_rotation_refused_while_the_settings_name_the_key(settings, clock):
    from neoxserve.platform import AdminError

    with Platform.open(settings.model_copy(update={"admin_key": CONFIGURED}), clock=clock) as p:
        p.admin.apply_configured_key()
        with pytest.raises(AdminError, match=r"the admin key comes from the settings \(admin_key, "
                                             r"NEOXSERVE_ADMIN_KEY\): change it there"):
            p.admin.rotate_key()
        p.admin.login(CONFIGURED, "10.0.0.1")


def test_configured_admin_key_too_short_is_refused():
    from pydantic import ValidationError

    from neoxserve.config import Settings

    with pytest.raises(ValidationError, match="admin_key must be at least 24 characters") as e:
        Settings.load(None, admin_key="short-key")
    assert "short-key" not in str(e.value.errors()[0]["msg"])
    assert CONFIGURED not in repr(Settings.load(None, admin_key=CONFIGURED))
