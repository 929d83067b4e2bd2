"""The console's JSON API over real HTTP: sessions, cross-site refusals, the login limit, errors, CSV."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from console_page import LOGIN_LIMIT, same_origin
from app_routes import flat_routes
from fakes import FakeEngine


def console_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """Every (method, path) under /console/api/, read from the app itself so that a new route is covered."""
    from neoxserve.api.app import create_app
    from neoxserve.config import Settings
    from neoxserve.platform import Platform

    settings = Settings(data_dir=tmp_path)
    with Platform.open(settings) as platform:
        app = create_app(settings, FakeEngine(), platform)
        routes = [(method, route.path) for route in flat_routes(app) if (route.path or "").startswith("/console/api/")
                  for method in sorted(route.methods or ()) if method != "HEAD"]
    assert len(routes) >= 15, routes
    return routes


def test_every_route_refuses_without_a_session(console_server, tmp_path):
    base = console_server.base_url
    refused = []
    for method, path in console_routes(tmp_path):
        url = base + re.sub(r"\{[^}]+\}", "demo", path)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        for cookies in ({}, {"neoxserve_console": "forged"}):
            r = httpx.request(method, url, json=body, headers=same_origin(console_server), cookies=cookies)
            if path == "/console/api/login":
                assert r.status_code == 400, r.text      # the one public route: it wants a key
                continue
            assert (r.status_code, r.json()) == (401, {"error": {"code": "no_session", "message": "not logged in"}}), (
                method, path, r.text)
            assert r.headers["cache-control"] == "no-store"
            refused.append((method, path))
    assert ("GET", "/console/api/apps") in refused and ("DELETE", "/console/api/apps/{name}") in refused


def test_login_sets_a_strict_httponly_cookie_and_stores_only_its_hash(console_server):
    r = httpx.post(console_server.base_url + "/console/api/login", json={"key": console_server.keys["admin_key"]},
                   headers=same_origin(console_server))
    assert r.status_code == 200 and set(r.json()) == {"expires_at"}
    cookie = r.headers["set-cookie"]
    token = re.match(r"neoxserve_console=([^;]+);", cookie).group(1)
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path=/console", "samesite=strict", "max-age=43200"} <= attributes
    assert "secure" not in attributes          # plain http here; set under https
    blob = b"".join(p.read_bytes() for p in console_server.data_dir.iterdir() if p.name.startswith("neoxserve.db"))
    assert token.encode() not in blob
    assert httpx.get(console_server.base_url + "/console/api/session", cookies={"neoxserve_console": token}
                     ).status_code == 200


def test_state_changes_need_this_servers_origin(admin, console_server):
    cases = [({"Origin": "http://evil.example"}, "refused: cross-site request from http://evil.example"),
             ({"Origin": "null"}, "refused: a state-changing console call needs an Origin or Referer header "
                                  "naming this server"),
             ({"Origin": "", "Referer": "http://evil.example/page"},
              "refused: cross-site request from http://evil.example"),
             ({"Origin": ""}, "refused: a state-changing console call needs an Origin or Referer header naming "
                              "this server")]
    for headers, message in cases:
        r = admin.post("/console/api/apps", json={"name": "csrf-victim"}, headers=headers)
        assert (r.status_code, r.json()) == (403, {"error": {"code": "cross_site", "message": message}}), headers
    with console_server.platform() as p:
        assert "csrf-victim" not in [a.name for a in p.list_apps()]
    # a same-origin Referer is enough when a client sends no Origin; reads need neither
    r = admin.post("/console/api/apps", json={"name": "csrf-ok"},
                   headers={"Origin": "", "Referer": console_server.base_url + "/console"})
    assert r.status_code == 201, r.text
    assert admin.get("/console/api/apps", headers={"Origin": "http://evil.example"}).status_code == 200
    assert admin.delete("/console/api/apps/csrf-ok").status_code == 204


def test_a_dns_rebinding_page_is_cross_site_whatever_its_host_header(console_server):
    """A page at http://evil.example:PORT whose name now resolves to 127.0.0.1: its requests carry its own origin
    and Host. The origin check compares with the address the server is bound to, not with Host."""
    evil = f"http://evil.example:{console_server.port}"
    r = httpx.post(console_server.base_url + "/console/api/login", json={"key": console_server.keys["admin_key"]},
                   headers={"Origin": evil, "Host": f"evil.example:{console_server.port}"})
    assert (r.status_code, r.json()) == (403, {"error": {"code": "cross_site",
                                                         "message": f"refused: cross-site request from {evil}"}})
    r = httpx.post(console_server.base_url + "/console/api/login", json={"key": "nxa-wrong"},
                   headers={"Origin": f"http://localhost:{console_server.port}"})
    assert r.status_code == 401          # localhost is the same server as 127.0.0.1: not cross-site


def test_login_attempts_are_limited_exactly_per_address(console_server):
    """Everything here comes from 127.0.0.2 (the rest of the tests log in from 127.0.0.1)."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, base_url=console_server.base_url,
                      headers=same_origin(console_server)) as client:
        def attempt(key: str) -> httpx.Response:
            return client.post("/console/api/login", json={"key": key})

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(attempt, ["nxa-wrong"] * (LOGIN_LIMIT + 20)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [401] * LOGIN_LIMIT + [429] * 20
        throttled = next(r for r in responses if r.status_code == 429)
        wait = int(throttled.headers["retry-after"])
        assert 1 <= wait <= 60
        assert throttled.json() == {"error": {"code": "throttled",
                                              "message": f"too many login attempts: try again in {wait} s"}}
        assert attempt(console_server.keys["admin_key"]).status_code == 429    # even the right key, for now
    r = httpx.post(console_server.base_url + "/console/api/login", json={"key": "nxa-wrong"},
                   headers=same_origin(console_server))
    assert (r.status_code, r.json()["error"]["code"]) == (401, "wrong_key")     # 127.0.0.1 is not affected
    assert "console login from 127.0.0.2 refused: more than 30 attempts in 60 s" in "\n".join(
        console_server.stderr_lines)


def test_errors_name_the_problem(admin):
    cases = [
        ("POST", "/console/api/apps", {"name": "bad name"}, 400,
         "invalid app name 'bad name': use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"),
        ("POST", "/console/api/apps", {"name": "x1", "limits": {"qps": 0}}, 400,
         "invalid qps limit 0: use a positive integer, or none"),
        ("POST", "/console/api/apps", {"name": "x1", "limits": {"tpm": 0}}, 400,
         "invalid tpm limit 0: use a positive integer, or none"),
        ("PUT", "/console/api/apps/default/limits", {"rpm": -5}, 400,
         "invalid rpm limit -5: use a positive integer, or none"),
        ("POST", "/console/api/apps", {"name": "x1", "limits": {"qps": "5"}}, 400,
         "limits.qps: Input should be a valid integer"),
        ("POST", "/console/api/apps", {"name": "x1", "limit": {}}, 400, "limit: Extra inputs are not permitted"),
        ("POST", "/console/api/apps", {"name": "x1", "services": ["nope"]}, 404,
         "no published service named 'nope'"),
        ("POST", "/console/api/apps", {"name": "default"}, 409, "an app named 'default' already exists"),
        ("POST", "/console/api/apps", None, 400, "the body must be a JSON object"),
        ("DELETE", "/console/api/apps/ghost", None, 404, "no app named 'ghost'"),
        ("PUT", "/console/api/apps/default/services/nope", None, 404, "no published service named 'nope'"),
        ("POST", "/console/api/services", {"api_name": "Bad/Name", "model": "m"}, 400,
         "invalid api_name 'Bad/Name': use 1-64 lowercase letters, digits, '_', '-' or '.', starting with a letter "
         "or digit"),
        ("POST", "/console/api/services", {"api_name": "s1", "model": "m", "top_k": 1.5}, 400,
         "top_k: Input should be a valid integer"),
        ("POST", "/console/api/services", {"api_name": "s1", "model": "m", "penalty_score": 2.5}, 400,
         "invalid penalty_score 2.5: must be in [1.0, 2.0]"),
        ("POST", "/console/api/services", {"api_name": "demo", "model": "m"}, 409,
         "a service named 'demo' is already published"),
        ("DELETE", "/console/api/services/nope", None, 404, "no published service named 'nope'"),
        ("GET", "/console/api/usage?since=yesterday", None, 400, "invalid date 'yesterday': use YYYY-MM-DD"),
        ("POST", "/console/api/playground/token", {"app": "ghost"}, 404, "no app named 'ghost'"),
        ("POST", "/console/api/apps/ghost/apikeys", {}, 404, "no app named 'ghost'"),
        ("POST", "/console/api/apps/default/apikeys", {"expires_in": 0}, 400,
         "invalid expiry 0: use a positive number of seconds"),
        ("POST", "/console/api/apps/default/apikeys", {"expires_in": 1.5}, 400,
         "expires_in: Input should be a valid integer"),
        ("GET", "/console/api/apikeys?app=ghost", None, 404, "no app named 'ghost'"),
        ("DELETE", "/console/api/apikeys/ALTAK-nope", None, 404, "no API key with id 'ALTAK-nope'"),
        ("POST", "/console/api/apps/ghost/accesscodes", None, 404, "no app named 'ghost'"),
        ("GET", "/console/api/accesscodes?app=ghost", None, 404, "no app named 'ghost'"),
        ("DELETE", "/console/api/accesscodes/ac-nope", None, 404, "no access code with id 'ac-nope'"),
    ]
    for method, path, body, status, message in cases:
        r = admin.request(method, path, json=body)
        code = {400: "bad_request", 404: "not_found", 409: "conflict"}[status]
        assert (r.status_code, r.json()) == (status, {"error": {"code": code, "message": message}}), (path, body)
    r = admin.post("/console/api/apps", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "the body is not valid JSON")


def test_app_lifecycle_and_csv(admin, console_server):
    created = admin.post("/console/api/apps", json={"name": "api-life", "services": ["demo"],
                                                     "limits": {"daily": 50}})
    assert created.status_code == 201
    keys = created.json()["keys"]
    assert set(keys) == {"app_id", "name", "api_key", "secret_key", "access_key", "secret_access_key"}
    listed = admin.get("/console/api/apps").json()["apps"]
    mine = next(a for a in listed if a["name"] == "api-life")
    assert mine["limits"] == {"qps": None, "daily": 50, "total": None, "rpm": None, "tpm": None}
    assert mine["services"] == ["demo"] and (mine["requests_this_minute"], mine["tokens_this_minute"]) == (0, 0)
    assert keys["secret_key"] not in admin.get("/console/api/apps").text
    assert admin.put("/console/api/apps/api-life/limits", json={"qps": 2, "rpm": 60, "tpm": 5000}).json()[
        "limits"] == {"qps": 2, "daily": None, "total": None, "rpm": 60, "tpm": 5000}
    assert admin.delete("/console/api/apps/api-life/services/demo").json()["services"] == []
    token = admin.post("/console/api/playground/token", json={"app": "api-life"}).json()
    assert token["expires_in"] == 3600
    r = httpx.post(console_server.completions_url(), params={"access_token": token["access_token"]},
                   json={"prompt": "hi"})
    assert r.json()["error_code"] == 336004        # the token is the app's: its permissions apply
    admin.put("/console/api/apps/api-life/services/demo")
    r = httpx.post(console_server.completions_url(), params={"access_token": token["access_token"]},
                   json={"prompt": "hi", "max_output_tokens": 3})
    completion = r.json()["usage"]["completion_tokens"]      # the trained demo model may end before 3 tokens
    assert 1 <= completion <= 3, r.text
    today = admin.get("/console/api/usage").json()["today"]
    csv = admin.get("/console/api/usage.csv", params={"app": "api-life", "since": today, "until": today})
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv.headers["content-disposition"] == f'attachment; filename="neoxserve-usage-{today}-{today}.csv"'
    prompt = r.json()["usage"]["prompt_tokens"]
    # two calls: the one refused with 336004 failed, the other succeeded
    assert csv.text == ("day,app_name,api_name,calls,succeeded,failed,prompt_tokens,completion_tokens,total_tokens"
                        f"\r\n{today},api-life,demo,2,1,1,{prompt},{completion},{prompt + completion}\r\n")
    rotated = admin.post("/console/api/apps/api-life/rotate").json()["keys"]
    assert rotated["api_key"] != keys["api_key"]
    assert httpx.post(console_server.completions_url(), params={"access_token": token["access_token"]},
                      json={"prompt": "hi"}).json()["error_code"] == 110
    assert admin.delete("/console/api/apps/api-life").status_code == 204
    assert admin.get("/console/api/apps/api-life").status_code == 404


def test_services_carry_the_platforms_rules(admin):
    from neoxserve.platform.records import SAMPLING_RULES

    listing = admin.get("/console/api/services").json()
    assert listing["rules"] == {name: SAMPLING_RULES[name].message
                                for name in ("temperature", "top_p", "top_k", "penalty_score", "max_output_tokens")}
    assert "presence_penalty" not in listing["rules"]    # per request only (OpenAI / v2), not a service default
    assert listing["rules"]["temperature"] == "in (0, 1.0]" and listing["default_max_output_tokens"] == 256
    demo = next(s for s in listing["services"] if s["api_name"] == "demo")
    assert demo["model"] == "demo" and "default" in demo["allowed_apps"]


def test_overview_reports_the_engine(admin, cpu_auto_dtype, cpu_auto_kernels):
    o = admin.get("/console/api/overview").json()
    assert o["model"]["name"] == "demo" and (o["model"]["device"], o["model"]["dtype"]) == ("cpu", cpu_auto_dtype)
    assert o["model"]["kernels"] == cpu_auto_kernels
    assert o["ready"] is True and o["engine_alive"] is True
    assert {"running", "waiting", "kv_blocks_used", "kv_blocks_total", "generation_tokens_total"} <= set(o["stats"])
    assert not [k for k, v in o["stats"].items() if isinstance(v, dict) and "buckets" in v]
    # speculative decoding's counters (off by default: nothing proposed) for the overview's speculation card
    assert (o["stats"]["spec_proposed_tokens_total"], o["stats"]["spec_accepted_tokens_total"]) == (0, 0)
    assert o["restarts"] == o["stats"].get("restarts")     # null until the engine reports restarts


def test_page_and_assets_are_served_from_the_package(console_server):
    base = console_server.base_url
    page = httpx.get(base + "/console")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text)
    assert len(assets) == 4
    for asset in assets:
        r = httpx.get(base + asset)
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff", asset
    assert "://" not in page.text.replace("http://www.w3.org", "")    # nothing from another host
    assert httpx.get(base + "/console/", follow_redirects=False).headers["location"] == "/console"


def test_api_keys_show_once_list_by_id_and_revoke(admin, console_server):
    from neoxserve.platform import PlatformError

    admin.post("/console/api/apps", json={"name": "api-keys"})
    created = admin.post("/console/api/apps/api-keys/apikeys", json={})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key["key"].startswith("bce-v3/" + key["id"] + "/") and key["expires_at"] is None
    expiring = admin.post("/console/api/apps/api-keys/apikeys", json={"expires_in": 3600}).json()["key"]
    assert expiring["expires_at"] == int(expiring["created_at"]) + 3600
    listed = admin.get("/console/api/apikeys", params={"app": "api-keys"})
    assert [(k["id"], k["status"], k["expires_at"]) for k in listed.json()["keys"]] == [
        (key["id"], "active", None), (expiring["id"], "active", expiring["expires_at"])]
    everything = admin.get("/console/api/apikeys").text + admin.get("/console/api/apps").text
    assert key["key"] not in everything and expiring["key"] not in everything
    with console_server.platform() as p:
        assert p.authenticate_bearer(key["key"]).name == "api-keys"
    assert admin.delete(f"/console/api/apikeys/{key['id']}").status_code == 204
    with console_server.platform() as p, pytest.raises(PlatformError) as refused:
        p.authenticate_bearer(key["key"])
    assert refused.value.code == 110
    assert [k["id"] for k in admin.get("/console/api/apikeys", params={"app": "api-keys"}).json()["keys"]] == [
        expiring["id"]]
    logs = "\n".join(console_server.stderr_lines + console_server.stdout_lines)
    assert key["key"] not in logs and expiring["key"] not in logs and f"revoked API key {key['id']}" in logs
    admin.delete("/console/api/apps/api-keys")


def test_the_console_api_is_in_the_openapi_document(console_server, tmp_path):
    doc = httpx.get(console_server.base_url + "/openapi.json").json()
    documented = {(method.upper(), path) for path, item in doc["paths"].items() if path.startswith("/console")
                  for method in item}
    assert documented == set(console_routes(tmp_path))      # every API route, and not the page
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for method, path in documented:
        answers = doc["paths"][path][method.lower()]["responses"]
        assert {s: answers[s]["content"]["application/json"]["schema"] for s in ("400", "401", "403", "404", "409")
                } == dict.fromkeys(("400", "401", "403", "404", "409"), error), (method, path)
        assert ("429" in answers) == (path == "/console/api/login"), (method, path)
    assert doc["components"]["schemas"]["ErrorDetail"]["required"] == ["code", "message"]
    create = doc["paths"]["/console/api/apps"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewApp"}
    limits = doc["components"]["schemas"]["LimitsBody"]["properties"]
    from neoxserve.platform import Limits
    assert tuple(limits) == Limits.NAMES
    assert list(doc["paths"]["/console/api/usage.csv"]["get"]["responses"]["200"]["content"]) == ["text/csv"]


def test_access_codes_show_once_list_by_id_and_revoke(admin, console_server):
    from neoxserve.platform import PlatformError

    admin.post("/console/api/apps", json={"name": "access-codes"})
    created = admin.post("/console/api/apps/access-codes/accesscodes")
    assert created.status_code == 201, created.text
    code = created.json()["code"]
    assert code["code"].startswith(code["id"] + "-") and code["app_name"] == "access-codes"
    listed = admin.get("/console/api/accesscodes", params={"app": "access-codes"}).json()["codes"]
    assert [(c["id"], c["app_name"]) for c in listed] == [(code["id"], "access-codes")]
    everything = admin.get("/console/api/accesscodes").text + admin.get("/console/api/apps").text
    assert code["code"] not in everything
    with console_server.platform() as p:
        assert p.authenticate_access_code(code["code"]).name == "access-codes"
    assert admin.delete(f"/console/api/accesscodes/{code['id']}").status_code == 204
    with console_server.platform() as p, pytest.raises(PlatformError) as refused:
        p.authenticate_access_code(code["code"])
    assert (refused.value.code, refused.value.message) == (14, "IAM Certification failed")
    assert admin.get("/console/api/accesscodes", params={"app": "access-codes"}).json()["codes"] == []
    logs = "\n".join(console_server.stderr_lines + console_server.stdout_lines)
    assert code["code"] not in logs and f"revoked access code {code['id']}" in logs
    admin.delete("/console/api/apps/access-codes")
