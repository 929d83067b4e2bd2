"""The admin commands, run as the installed `neoxserve` executable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neoxserve.config import Settings
from neoxserve.platform import AdminAuthError, Outcome, Platform, PlatformError

NEOXSERVE = Path(sys.executable).with_name("neoxserve")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NEOXSERVE_")} | (env or {})
    return subprocess.run([str(NEOXSERVE), *args], capture_output=True, text=True, timeout=60, env=full_env)


def ok(*args: str, **kw) -> str:
    result = run(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result.stdout


def bad(*args: str, message: str, **kw) -> None:
    result = run(*args, **kw)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def store_flags(backend, settings):
    return ["--store-url", settings.store_url, "--data-dir", str(settings.data_dir)]


def test_create_keys_work_and_secrets_print_once(store_flags, settings):
    ok("services", "publish", "demo", "--model", "m1", "--temperature", "0.5", "--max-output-tokens", "64",
       *store_flags)
    keys = json.loads(ok("apps", "create", "alice", "--services", "demo", "--qps", "5", "--json", *store_flags))
    assert set(keys) >= {"api_key", "secret_key", "access_key", "secret_access_key"}
    with Platform.open(settings) as p:
        body = p.issue_token("client_credentials", keys["api_key"], keys["secret_key"])
        app = p.authenticate_token(body["access_token"])
        assert app.name == "alice" and app.limits.qps == 5 and app.services == ("demo",)
        service = p.get_service("demo")
        assert (service.model, service.temperature, service.max_output_tokens) == ("m1", 0.5, 64)
        p.settle(p.admit(app, service, 16), Outcome.SUCCEEDED, 7, 9)
    for cmd in (["apps", "list", "--json"], ["apps", "show", "alice", "--json"], ["apps", "list"],
                ["apps", "show", "alice"]):
        out = ok(*cmd, *store_flags)
        assert keys["api_key"] in out and keys["secret_key"] not in out and keys["secret_access_key"] not in out
    shown = json.loads(ok("apps", "show", "alice", "--json", *store_flags))
    assert shown["requests_total"] == 1 and shown["limits"] == {"qps": 5, "daily": None, "total": None,
                                                                "rpm": None, "tpm": None}
    usage = json.loads(ok("usage", "--app", "alice", "--json", *store_flags))
    assert [(u["api_name"], u["calls"], u["succeeded"], u["failed"], u["prompt_tokens"], u["completion_tokens"])
            for u in usage] == [("demo", 1, 1, 0, 7, 9)]
    assert "alice" in ok("usage", "--service", "demo", "--since", "2000-01-01", *store_flags)
    assert json.loads(ok("usage", "--until", "2000-01-01", "--json", *store_flags)) == []
    assert json.loads(ok("usage", "--service", "nope", "--json", *store_flags)) == []
    services = json.loads(ok("services", "list", "--json", *store_flags))
    assert [(s["api_name"], s["allowed_apps"]) for s in services] == [("demo", ["alice"])]


def test_limits_rotate_delete(store_flags, settings):
    keys = json.loads(ok("apps", "create", "alice", "--daily", "10", "--json", *store_flags))
    limits = json.loads(ok("apps", "limits", "alice", "--qps", "3", "--total", "100", "--rpm", "120", "--tpm",
                           "5000", "--json", *store_flags))
    assert limits == {"name": "alice", "qps": 3, "daily": 10, "total": 100, "rpm": 120, "tpm": 5000}
    limits = json.loads(ok("apps", "limits", "alice", "--daily", "none", "--qps", "0", "--tpm", "none", "--json",
                           *store_flags))
    assert limits == {"name": "alice", "qps": None, "daily": None, "total": 100, "rpm": 120, "tpm": None}
    assert "qps=- daily=- total=100 rpm=120 tpm=-" in ok("apps", "limits", "alice", *store_flags)
    new = json.loads(ok("apps", "rotate", "alice", "--json", *store_flags))
    assert new["api_key"] != keys["api_key"] and new["secret_key"] != keys["secret_key"]
    assert "deleted app 'alice'" in ok("apps", "delete", "alice", *store_flags)
    with Platform.open(settings) as p:
        assert p.list_apps() == []


def test_services_publish_allow_unpublish(store_flags):
    ok("apps", "create", "alice", *store_flags)
    ok("apps", "create", "bob", *store_flags)
    ok("services", "publish", "demo", "--model", "m", "--allow", "alice", "bob", *store_flags)
    assert "demo" in ok("apps", "show", "bob", *store_flags)
    ok("apps", "disallow", "bob", "demo", *store_flags)
    ok("services", "publish", "other", "--model", "m", *store_flags)
    assert "demo, other" in ok("apps", "allow", "alice", "other", *store_flags)
    ok("services", "unpublish", "demo", *store_flags)
    assert [s["api_name"] for s in json.loads(ok("services", "list", "--json", *store_flags))] == ["other"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bad_input_exits_2_with_a_message(store_flags):
    ok("apps", "create", "alice", *store_flags)
    ok("services", "publish", "demo", "--model", "m", *store_flags)
    bad("apps", "create", "alice", *store_flags, message="an app named 'alice' already exists")
    bad("apps", "create", "bob", "--services", "nope", *store_flags, message="no published service named 'nope'")
    bad("apps", "create", "bob", "--qps", "abc", *store_flags, message="invalid limit 'abc'")
    bad("apps", "create", "bad name", *store_flags, message="invalid app name 'bad name'")
    for action in ("show", "rotate", "delete", "limits"):
        bad("apps", action, "ghost", *store_flags, message="no app named 'ghost'")
    bad("apps", "limits", "alice", "--daily", "-3", *store_flags, message="invalid limit '-3'")
    bad("services", "publish", "demo", "--model", "m", *store_flags,
        message="a service named 'demo' is already published")
    bad("services", "publish", "Bad/Name", "--model", "m", *store_flags, message="invalid api_name 'Bad/Name'")
    bad("services", "publish", "x", "--temperature", "3", *store_flags,
        message="invalid temperature 3.0: must be in (0, 1.0]")
    bad("services", "publish", "x", "--allow", "ghost", *store_flags, message="no app named 'ghost'")
    bad("services", "unpublish", "nope", *store_flags, message="no published service named 'nope'")
    bad("usage", "--since", "yesterday", *store_flags, message="invalid date 'yesterday': use YYYY-MM-DD")
    bad("usage", "--since", "2025-02-02", "--until", "2025-02-01", *store_flags,
        message="the range ends (2025-02-01) before it starts (2025-02-02)")
    bad("apps", "list", "--store-url", "mysql://x", message="unsupported store_url 'mysql://x'")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_settings_from_environment(settings):
    env = {"NEOXSERVE_DATA_DIR": str(settings.data_dir)}
    json.loads(ok("apps", "create", "alice", "--json", env=env))
    assert [a["name"] for a in json.loads(ok("apps", "list", "--json", env=env))] == ["alice"]
    with Platform.open(Settings.load(None, data_dir=settings.data_dir)) as p:
        assert p.get_app("alice").name == "alice"
    bad("apps", "list", env={**env, "NEOXSERVE_TOKEN_TTL_SECONDS": "x"}, message="invalid settings")


def test_apikeys_create_list_revoke(store_flags, settings):
    ok("apps", "create", "alice", *store_flags)
    created = json.loads(ok("apikeys", "create", "--app", "alice", "--expires-in", "3600", "--json", *store_flags))
    assert set(created) == {"id", "key", "app_id", "app_name", "created_at", "expires_at"}
    assert created["key"].startswith("bce-v3/" + created["id"] + "/")
    assert created["expires_at"] == int(created["created_at"]) + 3600
    text = run("apikeys", "create", "--app", "alice", *store_flags)
    assert text.returncode == 0 and "shown only now" in text.stderr
    second_key = text.stdout.split("Key:")[1].split()[0]
    listed = json.loads(ok("apikeys", "list", "--json", *store_flags))
    assert [(k["id"], k["app_name"], k["status"]) for k in listed] == [
        (created["id"], "alice", "active"), (second_key.split("/")[1], "alice", "active")]
    for out in (json.dumps(listed), ok("apikeys", "list", "--app", "alice", *store_flags)):
        assert created["key"] not in out and second_key not in out and created["id"] in out
    with Platform.open(settings) as p:
        assert p.authenticate_bearer(created["key"]).name == "alice"
    assert f"revoked API key {created['id']}" in ok("apikeys", "revoke", created["id"], *store_flags)
    with Platform.open(settings) as p:
        with pytest.raises(PlatformError) as e:
            p.authenticate_bearer(created["key"])
        assert e.value.code == 110
    assert [k["id"] for k in json.loads(ok("apikeys", "list", "--json", *store_flags))] == [second_key.split("/")[1]]


def test_usage_table_shows_successes_and_failures(store_flags, settings):
    ok("services", "publish", "demo", "--model", "m", *store_flags)
    ok("apps", "create", "alice", "--services", "demo", "--rpm", "60", "--tpm", "9000", *store_flags)
    with Platform.open(settings) as p:
        app, service = p.get_app("alice"), p.get_service("demo")
        p.settle(p.admit(app, service, 50), Outcome.SUCCEEDED, 11, 22)
        p.settle(p.admit(app, service, 50), Outcome.NOT_SERVED)
        p.record_failure(app, service)
    lines = ok("usage", *store_flags).splitlines()
    assert lines[0].split() == ["DAY", "APP", "SERVICE", "CALLS", "SUCCEEDED", "FAILED", "PROMPT", "COMPLETION",
                                "TOTAL"]
    assert lines[1].split()[1:] == ["alice", "demo", "3", "1", "2", "11", "22", "33"]
    shown = json.loads(ok("apps", "show", "alice", "--json", *store_flags))
    assert (shown["limits"]["rpm"], shown["limits"]["tpm"], shown["requests_total"]) == (60, 9000, 1)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_apikeys_bad_input(store_flags):
    ok("apps", "create", "alice", *store_flags)
    bad("apikeys", "create", "--app", "ghost", *store_flags, message="no app named 'ghost'")
    bad("apikeys", "create", "--app", "alice", "--expires-in", "0", *store_flags,
        message="invalid expiry '0': use a positive number of seconds")
    bad("apikeys", "revoke", "ALTAK-nope", *store_flags, message="no API key with id 'ALTAK-nope'")
    bad("apikeys", "list", "--app", "ghost", *store_flags, message="no app named 'ghost'")
    bad("apps", "limits", "alice", "--rpm", "x", *store_flags, message="invalid limit 'x'")


def test_admin_rotate_key_refused_with_a_configured_key(store_flags, settings):
    result = run("admin", "rotate-key", *store_flags, env={"NEOXSERVE_ADMIN_KEY": "configured-admin-key-0123456789"})
    assert result.returncode == 2 and result.stdout == ""
    assert "the admin key comes from the settings (admin_key, NEOXSERVE_ADMIN_KEY)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_short_admin_key(tmp_path):
    result = run("serve", "--data-dir", str(tmp_path), env={"NEOXSERVE_ADMIN_KEY": "too-short"})
    assert result.returncode == 2 and "too-short" not in result.stderr
    assert result.stderr == ("neoxserve serve: invalid settings: admin_key: Value error, admin_key must be at least "
                             "24 characters (e.g. `openssl rand -base64 32`), not 9\n")


def test_admin_rotate_key(store_flags, settings):
    with Platform.open(settings) as p:
        first = p.admin.create_key()
        session = p.admin.login(first, "127.0.0.1")
    result = run("admin", "rotate-key", *store_flags)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().removeprefix("Admin key: ")
    assert result.stdout == f"Admin key: {key}\n" and key.startswith("nxa-") and key != first
    assert "every console session has ended" in result.stderr
    again = json.loads(ok("admin", "rotate-key", "--json", *store_flags))["admin_key"]
    with Platform.open(settings) as p:
        for gone in (first, key):
            with pytest.raises(AdminAuthError, match="wrong admin key"):
                p.admin.login(gone, "127.0.0.1")
        with pytest.raises(AdminAuthError, match="not logged in"):
            p.admin.check_session(session.token)
        p.admin.check_session(p.admin.login(again, "127.0.0.1").token)


def test_an_argument_that_is_not_utf8_is_one_line_and_exit_2(store_flags, settings):
    result = subprocess.run([os.fsencode(NEOXSERVE), b"services", b"publish", b"demo2", b"--model", b"\xff\xfe",
                             *(os.fsencode(f) for f in store_flags)], capture_output=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("NEOXSERVE_")})
    assert result.returncode == 2
    assert result.stderr == b"neoxserve: error: the argument b'\\xff\\xfe' is not valid UTF-8 text\n"
    with Platform.open(settings) as p:
        assert "demo2" not in [s.api_name for s in p.list_services()]


def test_a_model_name_that_is_not_printable_is_refused(store_flags):
    bad("services", "publish", "demo3", "--model", "a\tb", *store_flags, message="invalid model name 'a\\tb'")


def test_accesscodes_create_list_revoke(store_flags, settings):
    ok("apps", "create", "alice", *store_flags)
    created = json.loads(ok("accesscodes", "create", "--app", "alice", "--json", *store_flags))
    assert set(created) == {"id", "code", "app_id", "app_name", "created_at"}
    assert created["code"].startswith(created["id"] + "-") and created["app_name"] == "alice"
    text = run("accesscodes", "create", "--app", "alice", *store_flags)
    assert text.returncode == 0 and "shown only now" in text.stderr
    second = text.stdout.split("Access code:")[1].split()[0]
    second_id = second.rsplit("-", 1)[0]
    listed = json.loads(ok("accesscodes", "list", "--json", *store_flags))
    assert [(c["id"], c["app_name"]) for c in listed] == [(created["id"], "alice"), (second_id, "alice")]
    for out in (json.dumps(listed), ok("accesscodes", "list", "--app", "alice", *store_flags)):
        assert created["code"] not in out and second not in out and created["id"] in out
    with Platform.open(settings) as p:
        assert p.authenticate_access_code(created["code"]).name == "alice"
        assert p.authenticate_access_code(second).name == "alice"
    assert f"revoked access code {created['id']}" in ok("accesscodes", "revoke", created["id"], *store_flags)
    with Platform.open(settings) as p:
        with pytest.raises(PlatformError) as e:
            p.authenticate_access_code(created["code"])
        assert (e.value.code, e.value.message) == (14, "IAM Certification failed")
    assert [c["id"] for c in json.loads(ok("accesscodes", "list", "--json", *store_flags))] == [second_id]
    assert "(no access codes)" not in ok("accesscodes", "list", *store_flags)
    ok("accesscodes", "revoke", second_id, *store_flags)
    assert "(no access codes)" in ok("accesscodes", "list", *store_flags)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_accesscodes_bad_input(store_flags):
    ok("apps", "create", "alice", *store_flags)
    bad("accesscodes", "create", "--app", "ghost", *store_flags, message="no app named 'ghost'")
    bad("accesscodes", "revoke", "ac-nope", *store_flags, message="no access code with id 'ac-nope'")
    bad("accesscodes", "list", "--app", "ghost", *store_flags, message="no app named 'ghost'")
