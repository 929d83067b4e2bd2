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


@pytest.fixture(scope="session")
def redis_url():
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                              else None)
    if binary is None:
        reason = "redis-server is not installed: the Redis store tests need it (apt-get install redis-server)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
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
                    pytest.fail(f"redis-server exited with code {proc.returncode}")
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
