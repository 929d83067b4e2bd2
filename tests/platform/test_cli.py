"""The admin commands, run as the installed `neoxserve` executable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neoxserve.config import Settings
from neoxserve.platform import Platform

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
        p.admit(app, service)
        p.record_usage(app, service, 7, 9)
    for cmd in (["apps", "list", "--json"], ["apps", "show", "alice", "--json"], ["apps", "list"],
                ["apps", "show", "alice"]):
        out = ok(*cmd, *store_flags)
        assert keys["api_key"] in out and keys["secret_key"] not in out and keys["secret_access_key"] not in out
    shown = json.loads(ok("apps", "show", "alice", "--json", *store_flags))
    assert shown["requests_total"] == 1 and shown["limits"] == {"qps": 5, "daily": None, "total": None}
    usage = json.loads(ok("usage", "--app", "alice", "--json", *store_flags))
    assert [(u["api_name"], u["requests"], u["prompt_tokens"], u["completion_tokens"]) for u in usage] == [
        ("demo", 1, 7, 9)]
    assert "alice" in ok("usage", "--service", "demo", "--since", "2000-01-01", *store_flags)
    assert json.loads(ok("usage", "--service", "nope", "--json", *store_flags)) == []
    services = json.loads(ok("services", "list", "--json", *store_flags))
    assert [(s["api_name"], s["allowed_apps"]) for s in services] == [("demo", ["alice"])]


def test_limits_rotate_delete(store_flags, settings):
    keys = json.loads(ok("apps", "create", "alice", "--daily", "10", "--json", *store_flags))
    limits = json.loads(ok("apps", "limits", "alice", "--qps", "3", "--total", "100", "--json", *store_flags))
    assert limits == {"name": "alice", "qps": 3, "daily": 10, "total": 100}
    limits = json.loads(ok("apps", "limits", "alice", "--daily", "none", "--qps", "0", "--json", *store_flags))
    assert limits == {"name": "alice", "qps": None, "daily": None, "total": 100}
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
    bad("apps", "list", "--store-url", "mysql://x", message="unsupported store_url 'mysql://x'")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_settings_from_environment(settings):
    env = {"NEOXSERVE_DATA_DIR": str(settings.data_dir)}
    json.loads(ok("apps", "create", "alice", "--json", env=env))
    assert [a["name"] for a in json.loads(ok("apps", "list", "--json", env=env))] == ["alice"]
    with Platform.open(Settings.load(None, data_dir=settings.data_dir)) as p:
        assert p.get_app("alice").name == "alice"
    bad("apps", "list", env={**env, "NEOXSERVE_TOKEN_TTL_SECONDS": "x"}, message="invalid settings")
