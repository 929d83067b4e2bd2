"""How store-v1/ was made: run with the platform of the first release (commit 4343c25) on PYTHONPATH.

    git archive 4343c25 src | tar -x -C /tmp/v1
    PYTHONPATH=/tmp/v1/src python tests/platform/data/make_v1_stores.py tests/platform/data/store-v1 [REDIS_URL]

Writes neoxserve.db + secret.key (a SQLite store as that release left it), redis.json (every key of a Redis store
made the same way, replayed by the migration test) and keys.json (the credentials, access token included).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from neoxserve.config import Settings
from neoxserve.platform import Limits, Platform

CLOCK = 1_750_000_000.0


def populate(settings: Settings) -> dict:
    with Platform.open(settings, clock=lambda: CLOCK) as p:
        p.publish("demo", "demo-model", temperature=0.5)
        alice = p.create_app("alice", services=["demo"], limits=Limits(qps=5, daily=100, total=1000))
        p.create_app("bob", services=["demo"])
        token = p.issue_token("client_credentials", alice.api_key, alice.secret_key)["access_token"]
        app, service = p.get_app("alice"), p.get_service("demo")
        for prompt, completion in ((3, 4), (5, 6)):
            p.admit(app, service)
            p.record_usage(app, service, prompt, completion)
        p.admit(app, service)  # admitted, then failed: the first release still counted it
        return {**alice.to_dict(), "access_token": token}


def dump_redis(url: str) -> list:
    import redis

    r = redis.Redis.from_url(url)
    out = []
    for key in sorted(r.keys("neoxserve:*")):
        kind = r.type(key).decode()
        if kind == "hash":
            value = {k.hex(): v.hex() for k, v in r.hgetall(key).items()}
        elif kind == "set":
            value = sorted(m.hex() for m in r.smembers(key))
        else:
            value = r.get(key).hex()
        out.append([key.hex(), kind, value])
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    keys = {"sqlite": populate(Settings(data_dir=target))}
    if len(sys.argv) > 2:
        keys["redis"] = populate(Settings(data_dir=target, store_url=sys.argv[2],
                                          secret_key=(target / "secret.key").read_text().strip()))
        (target / "redis.json").write_text(json.dumps(dump_redis(sys.argv[2])))
    (target / "keys.json").write_text(json.dumps(keys, indent=1))
