"""The Redis store, for several server replicas sharing apps, tokens and quotas (one Redis instance).

Multi-key changes run as Lua scripts (atomic in Redis); access tokens are keys that expire on their own a week
after the token does (so an expired token is reported as expired for a while, then as unknown).
"""
from __future__ import annotations

import secrets

from .. import quota
from ..errors import TOKEN_INVALID, AdminError, Conflict, NotFound, PlatformError
from ..records import (AccessCode, AccessCodeRecord, Admission, ApiKey, ApiKeyRecord, App, Counters, Limits, Outcome,
                       Service, SessionRecord, StoredSecrets, TokenRecord, UsageRow)
from . import redis_scripts as lua
from .base import TOKEN_GRACE_SECONDS, Store

SCHEMA_VERSION = 4  # meta field schema_version; stores of the first release have none (0)


def _opt(value) -> str:
    return "" if value is None else str(value)


def _int(raw: object) -> int | None:
    return None if raw in (None, b"") else int(_text(raw))


def _float(raw: object) -> float | None:
    return None if raw in (None, b"") else float(_text(raw))


def _text(reply: object) -> str:
    """A reply as text: the client is made with decode_responses=False, so replies are bytes."""
    assert isinstance(reply, bytes), reply
    return reply.decode()


class RedisStore(Store):
    def __init__(self, url: str, prefix: str = "neoxserve:"):
        import redis  # optional dependency: only needed with store_url=redis://...

        self.r = redis.Redis.from_url(url, decode_responses=False, socket_timeout=10)
        self.p = prefix
        self.r.ping()
        self._scripts = {name: self.r.register_script(getattr(lua, name)) for name in (
            "CREATE_APP", "ROTATE_APP", "SET_LIMITS", "DELETE_APP", "GRANT", "REVOKE", "CREATE_SERVICE",
            "DELETE_SERVICE", "ADMIT", "SETTLE", "CREATE_API_KEY", "DELETE_API_KEY", "MIGRATE_USAGE_ROW",
            "LOGIN_ATTEMPT", "CREATE_ACCESS_CODE", "DELETE_ACCESS_CODE")}
        try:
            self._migrate()
        except BaseException:
            self.r.close()
            raise

    def _run(self, name: str, *args):
        return self._scripts[name](keys=[], args=[self.p, *args])

    def close(self) -> None:
        self.r.close()

    def _migrate(self) -> None:
        raw = self.r.hget(self.p + "meta", "schema_version")
        version = int(raw or 0)
        if version > SCHEMA_VERSION:
            raise AdminError(f"the Redis store has schema version {version}, newer than this neoxserve "
                             f"understands ({SCHEMA_VERSION}): upgrade neoxserve")
        if version < 2:
            # Apps of the first release have no rpm/tpm fields (no limit); only usage rows change.
            for member in self.r.smembers(self.p + "usage:index"):
                day, app_id, svc = _text(member).split("|")
                self._run("MIGRATE_USAGE_ROW", f"{day}:{app_id}:{svc}")
        # 2 -> 3 adds the web console's keys (sess:*, login:*, meta admin_key), 3 -> 4 the access codes
        # (accesscode:*), made when first used: no row changes.
        if version < SCHEMA_VERSION:
            self.r.hset(self.p + "meta", "schema_version", SCHEMA_VERSION)

    def claim_meta(self, key: str, value: str) -> str:
        self.r.hsetnx(self.p + "meta", key, value)
        return _text(self.r.hget(self.p + "meta", key))

    def get_meta(self, key: str) -> str | None:
        raw = self.r.hget(self.p + "meta", key)
        return None if raw is None else _text(raw)

    def set_meta(self, key: str, value: str) -> None:
        self.r.hset(self.p + "meta", key, value)

    # apps
    def get_app(self, app_id) -> App | None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(f"{self.p}app:{app_id}")
        pipe.smembers(f"{self.p}app:{app_id}:svcs")
        h, svcs = pipe.execute()
        if not h:
            return None
        return App(id=int(app_id), name=h[b"name"].decode(), api_key=h[b"api_key"].decode(),
                   access_key=h[b"access_key"].decode(),
                   limits=Limits(*(_int(h.get(name.encode())) for name in Limits.NAMES)),
                   services=tuple(sorted(s.decode() for s in svcs)), created_at=float(h[b"created_at"]),
                   token_generation=int(h[b"generation"]),
                   secrets=StoredSecrets(h[b"sk_hash"], h[b"sk_salt"], h[b"sak_enc"]))

    def _app_by(self, index: str, value: str) -> App | None:
        app_id = self.r.hget(f"{self.p}app:{index}", value)
        return None if app_id is None else self.get_app(int(app_id))

    def app_by_name(self, name):
        return self._app_by("by_name", name)

    def app_by_api_key(self, api_key):
        return self._app_by("by_api_key", api_key)

    def app_by_access_key(self, access_key):
        return self._app_by("by_access_key", access_key)

    def list_apps(self):
        apps = [self.get_app(int(i)) for i in self.r.smembers(self.p + "app:index")]
        return sorted((a for a in apps if a is not None), key=lambda a: a.name)

    def create_app(self, name, api_key, access_key, secrets, limits, services, created_at) -> App:
        result = self._run("CREATE_APP", name, api_key, access_key, secrets.secret_key_hash,
                           secrets.secret_key_salt, secrets.secret_access_key_enc,
                           *(_opt(getattr(limits, name)) for name in Limits.NAMES), repr(created_at), *services)
        if result[0] == -1:
            raise Conflict(f"an app named {name!r} already exists")
        if result[0] == -2:
            raise NotFound(f"no published service named {_text(result[1])!r}")
        app = self.get_app(int(result[0]))
        assert app is not None   # created just now, in the same script
        return app

    def rotate_app(self, app_id, api_key, access_key, secrets) -> bool:
        return self._run("ROTATE_APP", app_id, api_key, access_key, secrets.secret_key_hash,
                         secrets.secret_key_salt, secrets.secret_access_key_enc) == 1

    def set_limits(self, app_id, limits) -> bool:
        return self._run("SET_LIMITS", app_id, *(_opt(getattr(limits, name)) for name in Limits.NAMES)) == 1

    def delete_app(self, app_id) -> bool:
        return self._run("DELETE_APP", app_id) == 1

    def grant(self, app_id, api_name) -> None:
        result = self._run("GRANT", app_id, api_name)
        if result == -1:
            raise NotFound(f"no app with id {app_id}")
        if result == -2:
            raise NotFound(f"no published service named {api_name!r}")

    def revoke(self, app_id, api_name) -> bool:
        return self._run("REVOKE", app_id, api_name) == 1

    # tokens
    def put_token(self, token_hash, record, now) -> None:
        self.r.set(f"{self.p}tok:{token_hash.hex()}",
                   f"{record.app_id}:{record.generation}:{record.expires_at}",
                   ex=max(1, record.expires_at - now + TOKEN_GRACE_SECONDS))

    def get_token(self, token_hash):
        raw = self.r.get(f"{self.p}tok:{token_hash.hex()}")
        if raw is None:
            return None
        app_id, generation, expires_at = _text(raw).split(":")
        return TokenRecord(int(app_id), int(generation), int(expires_at))

    def delete_token(self, token_hash) -> bool:
        return self.r.delete(f"{self.p}tok:{token_hash.hex()}") == 1

    # console sessions: keys that expire with the session
    def put_session(self, session_hash, record, now) -> None:
        self.r.set(f"{self.p}sess:{session_hash.hex()}", f"{record.key_id}:{record.expires_at}",
                   ex=max(1, record.expires_at - now))

    def get_session(self, session_hash):
        raw = self.r.get(f"{self.p}sess:{session_hash.hex()}")
        if raw is None:
            return None
        key_id, expires_at = _text(raw).rsplit(":", 1)
        return SessionRecord(key_id, int(expires_at))

    def delete_session(self, session_hash) -> bool:
        return self.r.delete(f"{self.p}sess:{session_hash.hex()}") == 1

    def take_login_attempt(self, address, now, window, limit):
        oldest = self._run("LOGIN_ATTEMPT", address, repr(float(now)), repr(float(window)), limit,
                           secrets.token_hex(8))
        return None if oldest is None else float(oldest) + window

    # services
    def create_service(self, service) -> None:
        ok = self._run("CREATE_SERVICE", service.api_name, service.model, _opt(service.temperature),
                       _opt(service.top_p), _opt(service.top_k), _opt(service.penalty_score),
                       _opt(service.max_output_tokens), repr(service.created_at))
        if ok != 1:
            raise Conflict(f"a service named {service.api_name!r} is already published")

    def get_service(self, api_name):
        h = self.r.hgetall(f"{self.p}svc:{api_name}")
        if not h:
            return None
        return Service(api_name=api_name, model=_text(h[b"model"]), temperature=_float(h[b"temperature"]),
                       top_p=_float(h[b"top_p"]), top_k=_int(h[b"top_k"]),
                       penalty_score=_float(h[b"penalty_score"]),
                       max_output_tokens=_int(h[b"max_output_tokens"]), created_at=float(h[b"created_at"]))

    def list_services(self):
        names = sorted(_text(n) for n in self.r.smembers(self.p + "svc:index"))
        return [s for s in (self.get_service(n) for n in names) if s is not None]

    def delete_service(self, api_name) -> bool:
        return self._run("DELETE_SERVICE", api_name) == 1

    # API keys
    def create_api_key(self, key_hash, record, created_at) -> None:
        if self._run("CREATE_API_KEY", key_hash.hex(), record.id, record.app_id, repr(created_at),
                     _opt(record.expires_at)) != 1:
            raise NotFound(f"no app with id {record.app_id}")

    def get_api_key(self, key_hash):
        h = self.r.hgetall(f"{self.p}apikey:{key_hash.hex()}")
        if not h:
            return None
        return ApiKeyRecord(_text(h[b"id"]), int(h[b"app_id"]), _int(h[b"expires_at"]))

    def list_api_keys(self, app_id=None):
        hashes = self.r.hvals(self.p + "apikey:by_id")
        pipe = self.r.pipeline(transaction=False)
        for h in hashes:
            pipe.hgetall(f"{self.p}apikey:{_text(h)}")
        names: dict[int, str] = {}
        keys = []
        for h in pipe.execute():
            if not h or (app_id is not None and int(h[b"app_id"]) != app_id):
                continue
            owner = int(h[b"app_id"])
            if owner not in names:
                app = self.get_app(owner)
                names[owner] = app.name if app else ""
            keys.append(ApiKey(_text(h[b"id"]), owner, names[owner], float(h[b"created_at"]),
                               _int(h[b"expires_at"])))
        return sorted(keys, key=lambda k: (k.app_name, k.created_at))

    def delete_api_key(self, key_id) -> bool:
        return self._run("DELETE_API_KEY", key_id) == 1

    # access codes
    def create_access_code(self, record, created_at) -> None:
        if self._run("CREATE_ACCESS_CODE", record.id, record.app_id, record.code_hash, repr(created_at)) != 1:
            raise NotFound(f"no app with id {record.app_id}")

    def get_access_code(self, code_id):
        h = self.r.hgetall(f"{self.p}accesscode:{code_id}")
        if not h:
            return None
        digest = h[b"hash"]
        assert isinstance(digest, bytes), digest
        return AccessCodeRecord(code_id, int(h[b"app_id"]), digest)

    def list_access_codes(self, app_id=None):
        ids = sorted(_text(i) for i in self.r.smembers(self.p + "accesscode:index"))
        pipe = self.r.pipeline(transaction=False)
        for code_id in ids:
            pipe.hgetall(f"{self.p}accesscode:{code_id}")
        names: dict[int, str] = {}
        codes = []
        for code_id, h in zip(ids, pipe.execute(), strict=True):
            if not h or (app_id is not None and int(h[b"app_id"]) != app_id):
                continue
            owner = int(h[b"app_id"])
            if owner not in names:
                app = self.get_app(owner)
                names[owner] = app.name if app else ""
            codes.append(AccessCode(code_id, owner, names[owner], float(h[b"created_at"])))
        return sorted(codes, key=lambda c: (c.app_name, c.created_at))

    def delete_access_code(self, code_id) -> bool:
        return self._run("DELETE_ACCESS_CODE", code_id) == 1

    # quotas and usage
    def admit(self, app_id, api_name, app_name, window, reserve_tokens) -> Admission:
        result = self._run("ADMIT", app_id, window.second, window.minute, window.day, reserve_tokens)
        code = int(result[0])
        if code == -1:
            raise PlatformError(TOKEN_INVALID, detail=f"app {app_id} was deleted")
        if code:
            scount, dcount, total, mreq, mtok = (int(v) for v in result[6:11])
            raise quota.refusal(code, Limits(*(_int(v) for v in result[1:6])), window,
                                quota.Usage(total, dcount, scount, mreq, mtok), reserve_tokens)
        scount, dcount, total, mreq, mtok = (int(v) for v in result[1:6])
        return Admission(app_id, app_name, api_name, window.day, window.minute, reserve_tokens,
                         Limits(*(_int(v) for v in result[6:11])), scount, dcount, total, mreq, mtok)

    def settle(self, admission, outcome, prompt_tokens, completion_tokens) -> None:
        served = outcome is not Outcome.NOT_SERVED
        used = prompt_tokens + completion_tokens if served else 0
        a = admission
        self._run("SETTLE", a.app_id, a.api_name, a.app_name, a.day, a.minute, "0" if served else "1",
                  used - a.reserved_tokens, "1" if outcome is Outcome.SUCCEEDED else "0",
                  prompt_tokens if served else 0, completion_tokens if served else 0)

    def record_failure(self, day, app_id, app_name, api_name) -> None:
        key = f"{self.p}usage:{day}:{app_id}:{api_name}"
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(key, "failed", 1)
        pipe.hsetnx(key, "app_name", app_name)
        pipe.sadd(self.p + "usage:index", f"{day}|{app_id}|{api_name}")
        pipe.execute()

    def counters(self, app_id, day, minute) -> Counters:
        pipe = self.r.pipeline(transaction=True)
        pipe.mget(f"{self.p}q:{app_id}:total", f"{self.p}q:{app_id}:day:{day}")
        pipe.hmget(f"{self.p}q:{app_id}:min:{minute}", "n", "tok")
        (total, today), (requests, tokens) = pipe.execute()
        return Counters(day, int(today or 0), int(total or 0), int(requests or 0), int(tokens or 0))

    def usage(self, app_name=None, api_name=None, since=None):
        entries: list[tuple[str, int, str]] = []
        for member in self.r.smembers(self.p + "usage:index"):
            day, app, svc = _text(member).split("|")
            if (since is None or day >= since) and (api_name is None or svc == api_name):
                entries.append((day, int(app), svc))
        pipe = self.r.pipeline(transaction=False)
        for day, app_id, svc in entries:
            pipe.hgetall(f"{self.p}usage:{day}:{app_id}:{svc}")
        rows = []
        for (day, app_id, svc), h in zip(entries, pipe.execute(), strict=True):
            name = h.get(b"app_name", b"").decode()
            if app_name is None or name == app_name:
                rows.append(UsageRow(day, app_id, name, svc, *(int(h.get(f.encode(), 0)) for f in (
                    "succeeded", "failed", "prompt_tokens", "completion_tokens"))))
        return sorted(rows, key=lambda r: (r.day, r.app_name, r.api_name))
