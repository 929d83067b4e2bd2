"""How store-v2/ was made: run with the platform of schema version 2 (main at 687b76e: RPM/TPM, API keys,
succeeded/failed usage; no console) on PYTHONPATH.

    git archive 687b76e src | tar -x -C /tmp/v2
    PYTHONPATH=/tmp/v2/src python tests/platform/data/make_v2_stores.py tests/platform/data/store-v2 [REDIS_URL]

Writes neoxserve.db + secret.key, redis.json (every key of a Redis store made the same way, replayed by the
migration test; dumped as make_v1_stores.py does) and keys.json (the credentials, access token and API keys
included).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from make_v1_stores import dump_redis

from neoxserve.config import Settings
from neoxserve.platform import Limits, Outcome, Platform

CLOCK = 1_760_000_000.0


def populate(settings: Settings) -> dict:
    with Platform.open(settings, clock=lambda: CLOCK) as p:
        p.publish("demo", "demo-model", temperature=0.5, max_output_tokens=64)
        alice = p.create_app("alice", services=["demo"], limits=Limits(qps=5, daily=100, total=1000, rpm=30,
                                                                       tpm=5000))
        p.create_app("bob", services=["demo"])
        token = p.issue_token("client_credentials", alice.api_key, alice.secret_key)["access_token"]
        app, service = p.get_app("alice"), p.get_service("demo")
        p.settle(p.admit(app, service, 50), Outcome.SUCCEEDED, 3, 4)
        p.settle(p.admit(app, service, 50), Outcome.FAILED, 5, 1)
        p.record_failure(app, service)
        key = p.create_api_key("alice")
        expiring = p.create_api_key("alice", expires_in=3600)
        revoked = p.create_api_key("bob")
        p.revoke_api_key(revoked.id)
        return {**alice.to_dict(), "access_token": token, "api_key_bearer": key.key, "api_key_id": key.id,
                "expiring_key_id": expiring.id, "revoked_key": revoked.key}


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    keys = {"sqlite": populate(Settings(data_dir=target))}
    if len(sys.argv) > 2:
        keys["redis"] = populate(Settings(data_dir=target, store_url=sys.argv[2],
                                          secret_key=(target / "secret.key").read_text().strip()))
        (target / "redis.json").write_text(json.dumps(dump_redis(sys.argv[2])))
    (target / "keys.json").write_text(json.dumps(keys, indent=1))
