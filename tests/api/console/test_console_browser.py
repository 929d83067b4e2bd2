"""The console in a real headless Chromium against a live server: log in, apps and keys, rotation, playground,
usage, services, escaping, cross-site requests; screenshots of every page."""
from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import httpx
import pytest

from console_page import Console
from neoxserve.platform import Limits
from live import free_port

pytestmark = pytest.mark.browser


def expect(locator):
    from playwright.sync_api import expect as playwright_expect   # retries until the page shows it

    return playwright_expect(locator)


@pytest.fixture
def console(browser, console_server, shots) -> Console:
    c = Console.open(browser, console_server, shots)
    yield c
    assert c.dialogs == [], f"the page opened JavaScript dialogs: {c.dialogs}"
    assert c.errors == [], f"the page logged errors: {c.errors}"


def token_status(server, api_key: str, secret_key: str) -> int:
    return httpx.get(server.base_url + "/oauth/2.0/token", params={
        "grant_type": "client_credentials", "client_id": api_key, "client_secret": secret_key}).status_code


def read_keys(page) -> dict[str, str]:
    dialog = page.locator("[data-testid=keys-dialog]")
    return {label: dialog.get_by_label(label, exact=True).input_value()
            for label in ("API Key", "Secret Key", "Access Key", "Secret Access Key")}


def create_app(c: Console, name: str, services=("demo",), qps: str = "") -> dict[str, str]:
    c.go("apps")
    form = c.page.locator("form[data-testid=create-app]")
    form.locator("#new-app-name").fill(name)
    if qps:
        form.locator("#new-qps").fill(qps)
    for s in services:
        form.locator(f"input[name=services][value='{s}']").check()
    form.locator("button[type=submit]").click()
    c.page.wait_for_selector("[data-testid=keys-dialog]")
    return read_keys(c.page)


def close_keys(c: Console) -> None:
    c.page.click("[data-testid=keys-done]")
    c.page.wait_for_selector("[data-testid=keys-dialog]", state="detached")


def test_login_overview_logout(console, cpu_auto_dtype, cpu_auto_kernels):
    c = console
    c.page.wait_for_selector("[data-testid=login-form]")
    c.shot("login")
    c.login("nxa-wrong")
    expect(c.page.locator("[role=alert]")).to_have_text("wrong admin key")
    c.logged_in()
    names = ("model", "device", "dtype", "kernels", "engine")
    cards = {k: c.page.inner_text(f"[data-testid={k}] .value") for k in names}
    assert cards == {"model": "demo", "device": "cpu", "dtype": cpu_auto_dtype, "kernels": cpu_auto_kernels,
                     "engine": "ready"}
    c.page.wait_for_function("document.querySelector('[data-testid=tokens-per-second] .value').textContent != '—'")
    c.page.wait_for_selector("[data-testid=tokens-chart] canvas")
    # speculative decoding is off here: no draft proposed, so no acceptance rate
    assert c.page.inner_text("[data-testid=speculation] .value") == "—"
    assert c.page.inner_text("[data-testid=speculation] .note") == "0 of 0 draft tokens accepted"
    c.shot("overview")
    cookie = next(k for k in c.page.context.cookies() if k["name"] == "neoxserve_console")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    assert c.page.evaluate("document.cookie") == ""          # HttpOnly: no script can read it
    c.page.click("[data-testid=logout]")
    c.page.wait_for_selector("[data-testid=login-form]")
    assert [k for k in c.page.context.cookies() if k["name"] == "neoxserve_console"] == []
    # the session is gone from the store, not only from the browser
    r = httpx.get(c.server.base_url + "/console/api/apps", cookies={"neoxserve_console": cookie["value"]})
    assert (r.status_code, r.json()) == (401, {"error": {"code": "no_session", "message": "not logged in"}})


def test_create_app_shows_keys_exactly_once_and_they_work(console):
    c = console.logged_in()
    c.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=c.server.base_url)
    keys = create_app(c, "team-a", qps="5")
    assert re.fullmatch(r"[A-Za-z0-9]{24}", keys["API Key"]) and re.fullmatch(r"[A-Za-z0-9]{32}", keys["Secret Key"])
    dialog = c.page.locator("[data-testid=keys-dialog]")
    dialog.get_by_role("button", name="copy Secret Key").click()
    assert c.page.evaluate("navigator.clipboard.readText()") == keys["Secret Key"]
    c.shot("apps-new-keys")
    close_keys(c)
    assert token_status(c.server, keys["API Key"], keys["Secret Key"]) == 200
    row = c.page.locator("tr[data-app=team-a]")
    assert keys["API Key"] in row.inner_text() and "QPS 5" in row.inner_text()
    secrets = [keys["Secret Key"], keys["Secret Access Key"], c.server.keys["admin_key"]]
    for name in ("apps", "overview", "services", "usage", "playground", "apps"):
        c.go(name)
        c.page.wait_for_load_state("networkidle")
        text = c.text()
        assert not [s for s in secrets if s in text], f"a secret shows on the {name} page"
    c.page.reload()
    c.page.wait_for_selector("tr[data-app=team-a]")
    assert not [s for s in secrets if s in c.text()]
    c.shot("apps")
    logs = "\n".join(c.server.stderr_lines)
    assert not [s for s in [*secrets, keys["API Key"]] if s in logs], "a key was logged"
    stdout = "\n".join(c.server.stdout_lines)
    assert keys["Secret Key"] not in stdout and stdout.count(c.server.keys["admin_key"]) == 1   # the banner


def test_edit_limits_and_services(console):
    c = console.logged_in()
    create_app(c, "team-limits", services=())
    close_keys(c)
    c.page.locator("tr[data-app=team-limits] button", has_text="Edit").click()
    dialog = c.page.locator("[data-testid=edit-dialog]")
    dialog.locator("#edit-daily").fill("0")
    dialog.get_by_role("button", name="Save limits").click()
    alert = dialog.locator("[role=alert]")
    expect(alert).to_have_text("invalid daily limit 0: use a positive integer, or none")
    dialog.locator("#edit-daily").fill("100")
    dialog.locator("#edit-tpm").fill("-1")
    dialog.get_by_role("button", name="Save limits").click()
    expect(alert).to_have_text("invalid tpm limit -1: use a positive integer, or none")
    dialog.locator("#edit-tpm").fill("2000")
    dialog.locator("#edit-rpm").fill("60")
    dialog.get_by_role("button", name="Save limits").click()
    expect(alert).to_have_text("Limits: Daily 100 · RPM 60 · TPM 2,000")
    dialog.locator("input[name=services][value=demo]").check()
    expect(alert).to_have_text("May call: demo")
    dialog.get_by_role("button", name="Close").click()
    with c.server.platform() as p:
        app = p.get_app("team-limits")
    assert (app.limits, app.services) == (Limits(daily=100, rpm=60, tpm=2000), ("demo",))
    expect(c.page.locator("tr[data-app=team-limits]")).to_contain_text("Daily 100 · RPM 60 · TPM 2,000")


def test_api_keys_are_shown_once_listed_by_id_and_revoked(console):
    from neoxserve.platform import PlatformError

    c = console.logged_in()
    create_app(c, "team-keys")
    close_keys(c)
    c.page.locator("tr[data-app=team-keys] button", has_text="Edit").click()
    dialog = c.page.locator("[data-testid=edit-dialog]")
    expect(dialog.locator("[data-testid=apikeys]")).to_have_text("No API keys.")
    dialog.locator("select[name=expires_in]").select_option(label="7 days")
    dialog.locator("[data-testid=create-apikey]").click()
    shown = c.page.locator("[data-testid=apikey-dialog]")
    key = shown.get_by_label("API key", exact=True).input_value()
    key_id = key.split("/")[1]
    c.shot("apps-apikey")
    c.page.click("[data-testid=apikey-done]")
    shown.wait_for(state="detached")
    row = dialog.locator(f"tr[data-key='{key_id}']")
    expect(row).to_contain_text("active")
    c.shot("apps-edit")
    assert key not in c.text()
    with c.server.platform() as p:
        assert p.authenticate_bearer(key).name == "team-keys"
        [listed] = p.list_api_keys("team-keys")
        assert listed.expires_at is not None
        assert listed.expires_at - listed.created_at == pytest.approx(7 * 86400, abs=1)
    row.get_by_role("button", name="Revoke").click()
    c.page.click("[data-testid=confirm]")
    expect(dialog.locator("[role=alert]")).to_have_text(f"Revoked API key {key_id}.")
    expect(dialog.locator("[data-testid=apikeys]")).to_have_text("No API keys.")
    with c.server.platform() as p, pytest.raises(PlatformError) as refused:
        p.authenticate_bearer(key)
    assert refused.value.code == 110
    assert key not in "\n".join(c.server.stderr_lines + c.server.stdout_lines)


def test_access_codes_are_shown_once_listed_by_id_used_and_revoked(console):
    c = console.logged_in()
    create_app(c, "team-codes")
    close_keys(c)
    c.page.locator("tr[data-app=team-codes] button", has_text="Edit").click()
    dialog = c.page.locator("[data-testid=edit-dialog]")
    expect(dialog.locator("[data-testid=accesscodes]")).to_have_text("No access codes.")
    dialog.locator("[data-testid=create-accesscode]").click()
    shown = c.page.locator("[data-testid=accesscode-dialog]")
    expect(shown).to_contain_text("shown only this once")
    code = shown.get_by_label("Access code", exact=True).input_value()
    expect(shown.get_by_role("button", name="copy Access code")).to_be_visible()
    c.shot("apps-accesscode")
    c.page.click("[data-testid=accesscode-done]")
    shown.wait_for(state="detached")
    with c.server.platform() as p:
        [listed] = p.list_access_codes("team-codes")
    assert code.startswith(listed.id + "-")
    expect(dialog.locator("[data-testid=accesscodes]")).to_contain_text(listed.id)
    row = dialog.locator(f"tr[data-code='{listed.id}']")
    expect(row).to_be_visible()
    assert code not in c.text()
    headers = {"Authorization": f"ACCESSCODE {code}"}
    r = httpx.post(c.server.completions_url(), headers=headers,
                   json={"prompt": "Hello there", "max_output_tokens": 3}, timeout=60)
    assert 1 <= r.json()["usage"]["completion_tokens"] <= 3, r.text     # the trained model may end early
    row.get_by_role("button", name="Revoke").click()
    c.page.click("[data-testid=confirm]")
    expect(dialog.locator("[role=alert]")).to_have_text(f"Revoked access code {listed.id}.")
    expect(dialog.locator("[data-testid=accesscodes]")).to_have_text("No access codes.")
    r = httpx.post(c.server.completions_url(), headers=headers,
                   json={"prompt": "Hello there", "max_output_tokens": 3}, timeout=60)
    assert (r.json()["error_code"], r.json()["error_msg"]) == (14, "IAM Certification failed"), r.text
    assert code not in "\n".join(c.server.stderr_lines + c.server.stdout_lines)


def test_rotating_keys_makes_the_old_ones_fail_at_the_token_endpoint(console):
    c = console.logged_in()
    old = create_app(c, "team-rotate")
    close_keys(c)
    assert token_status(c.server, old["API Key"], old["Secret Key"]) == 200
    c.page.locator("tr[data-app=team-rotate] button", has_text="Rotate keys").click()
    c.page.click("[data-testid=confirm]")
    c.page.wait_for_selector("[data-testid=keys-dialog]")
    new = read_keys(c.page)
    close_keys(c)
    assert new["API Key"] != old["API Key"] and new["Secret Key"] != old["Secret Key"]
    r = httpx.get(c.server.base_url + "/oauth/2.0/token", params={
        "grant_type": "client_credentials", "client_id": old["API Key"], "client_secret": old["Secret Key"]})
    assert (r.status_code, r.json()) == (401, {"error": "invalid_client", "error_description": "unknown client id"})
    assert token_status(c.server, new["API Key"], new["Secret Key"]) == 200
    assert not [s for s in (old["Secret Key"], new["Secret Key"]) if s in c.text()]


def test_playground_streams_text(console):
    c = console.logged_in()
    c.go("playground")
    c.page.wait_for_selector("select[name=service] option[value=demo]", state="attached")
    c.page.select_option("select[name=app]", "default")
    c.page.fill("input[name=max_output_tokens]", "48")
    curl = c.page.inner_text("[data-testid=curl] pre")
    assert "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo?access_token=" in curl
    assert '"max_output_tokens":48' in curl and c.server.keys["api_key"] in curl
    c.page.click("[data-testid=run]")
    c.page.wait_for_selector("[data-testid=output][data-done=true]", timeout=60_000)
    output = c.page.inner_text("[data-testid=output]")
    stats = c.page.locator("[data-testid=stream-stats]")
    tokens = int(stats.get_attribute("data-tokens"))   # 48, or fewer when the sampled text ends on end-of-text
    assert len(output) > 0 and 1 <= tokens <= 48
    # a chunk closes after stream_chunk_tokens (16) tokens at most, so the page counted at least this many frames
    # (the unseeded demo model may end after a few tokens: then one frame is right)
    assert int(stats.get_attribute("data-chunks")) >= -(-tokens // 16)
    shown = stats.inner_text()
    assert re.search(rf"{tokens} tokens in \d+ chunks · [0-9.]+ tokens/s · first chunk after \d+ ms", shown)
    c.shot("playground")


def usage_totals(c: Console) -> tuple[int, ...]:
    c.page.wait_for_selector("[data-testid=total-calls]")
    read = lambda k: int(c.page.inner_text(f"[data-testid={k}] .value").replace(",", ""))  # noqa: E731
    return tuple(read(f"total-{k}") for k in ("calls", "succeeded", "failed", "prompt", "completion"))


def test_usage_moves_after_calls(console):
    c = console.logged_in()
    keys = create_app(c, "team-usage")
    close_keys(c)
    c.go("usage")
    c.page.select_option("select[name=app]", "team-usage")
    expect(c.page.locator("main[data-page=usage] .table-box")).to_have_text("No usage in this range.")
    assert usage_totals(c) == (0, 0, 0, 0, 0)
    token = c.server.token(keys["API Key"], keys["Secret Key"])
    completion_tokens = 0       # the trained demo model may end on end-of-text before 5 tokens
    for _ in range(3):
        r = httpx.post(c.server.completions_url(), params={"access_token": token},
                       json={"prompt": "Hello there", "max_output_tokens": 5}, timeout=60)
        assert 1 <= r.json()["usage"]["completion_tokens"] <= 5, r.text
        completion_tokens += r.json()["usage"]["completion_tokens"]
    prompt_tokens = r.json()["usage"]["prompt_tokens"]
    r = httpx.post(c.server.completions_url(), params={"access_token": token},
                   json={"prompt": "Hello there", "temperature": 5}, timeout=60)
    assert r.json()["error_code"] == 336003, r.text      # a failed call: no tokens
    c.page.reload()
    c.page.wait_for_selector("select[name=app] option[value=team-usage]", state="attached")
    c.page.select_option("select[name=app]", "team-usage")
    expect(c.page.locator("[data-testid=total-calls] .value")).to_have_text("4")
    assert usage_totals(c) == (4, 3, 1, 3 * prompt_tokens, completion_tokens)
    row = c.page.locator("[data-testid=usage-table] tbody tr").first.inner_text().split("\t")
    assert row[1:] == ["team-usage", "demo", "4", "3", "1", str(3 * prompt_tokens), str(completion_tokens),
                       str(3 * prompt_tokens + completion_tokens)]
    c.page.wait_for_selector("[data-testid=calls-chart] canvas")
    csv_url = c.page.get_attribute("[data-testid=csv]", "href")
    with c.page.expect_download() as download:
        c.page.click("[data-testid=csv]")
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert "app=team-usage" in csv_url
    assert lines[0] == ("day,app_name,api_name,calls,succeeded,failed,prompt_tokens,completion_tokens,"
                        "total_tokens")
    assert lines[1].split(",")[1:] == row[1:]
    c.page.select_option("select[name=app]", "")
    c.page.wait_for_selector("[data-testid=usage-table]")
    c.shot("usage")


def test_services_publish_unpublish_and_text_stays_text(console):
    c = console.logged_in()
    script = "<script>alert(1)</script>"
    # an app may not be named so (platform/names.py): the refusal, which quotes the name, shows as text
    c.go("apps")
    c.page.fill("#new-app-name", script)
    c.page.click("form[data-testid=create-app] button[type=submit]")
    alert = c.page.locator("form[data-testid=create-app] [role=alert]")
    expect(alert).to_have_text(f"invalid app name '{script}': use 1-64 letters, digits, '_', '-' or '.', "
                               "starting with a letter or digit")
    # a model name is free text: published with the console, it shows exactly as typed
    c.go("services")
    form = c.page.locator("form[data-testid=publish-service]")
    form.locator("input[name=api_name]").fill("xss-check")
    form.locator("input[name=model]").fill(script)
    form.locator("input[name=temperature]").fill("3")
    form.locator("button[type=submit]").click()
    expect(form.locator("[role=alert]")).to_have_text("invalid temperature 3.0: must be in (0, 1.0]")
    form.locator("input[name=temperature]").fill("0.5")
    form.locator("input[name=max_output_tokens]").fill("64")
    form.locator("input[name=allow][value=default]").check()
    form.locator("button[type=submit]").click()
    row = c.page.locator("tr[data-service=xss-check]")
    row.wait_for()
    assert row.locator("[data-testid=model]").inner_text() == script
    assert row.locator("[data-testid=model] script").count() == 0
    assert "Temperature 0.5" in row.inner_text() and "64" in row.inner_text()
    c.page.wait_for_timeout(300)     # an injected script would have run by now
    c.shot("services")
    row.get_by_role("button", name="Unpublish").click()
    c.page.click("[data-testid=confirm]")
    row.wait_for(state="detached")
    with c.server.platform() as p:
        assert [s.api_name for s in p.list_services()] == ["demo"]


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        body = f"""<!doctype html><html><body>
<form id=f method=POST action="{self.target}/console/api/apps" enctype="text/plain">
<input name='{{"name":"evil-form","services":[],"x":"' value='"}}'></form>
<script>
fetch("{self.target}/console/api/apps", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "evil-fetch"}})}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_cross_site_post_is_refused(console):
    c = console.logged_in()           # the browser holds a live session for the console's site
    _AttackerPage.target = c.server.base_url
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _AttackerPage)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        evil = c.page.context.new_page()
        with evil.expect_response(lambda r: r.request.method == "POST" and r.request.resource_type == "document"
                                  and r.url.endswith("/console/api/apps")) as refused:
            # localhost and 127.0.0.1 are different sites: the form post is cross-site
            evil.goto(f"http://localhost:{attacker.server_address[1]}/")
        origin = f"http://localhost:{attacker.server_address[1]}"
        assert refused.value.status == 403
        assert refused.value.json() == {"error": {"code": "cross_site",
                                                  "message": f"refused: cross-site request from {origin}"}}
        evil.close()
    finally:
        attacker.shutdown()
    with c.server.platform() as p:
        assert not [a.name for a in p.list_apps() if a.name.startswith("evil")]


def test_usage_draws_only_the_latest_answer(console):
    """The page's first, unfiltered /usage answer arrives after the answer for the app chosen meanwhile: the
    filtered view stays (a stale answer drawn last showed every app's rows)."""
    c = console.logged_in()
    create_app(c, "team-late")
    close_keys(c)
    r = httpx.post(c.server.completions_url(), params={"access_token": c.server.token()},
                   json={"prompt": "Hello", "max_output_tokens": 2}, timeout=60)
    assert r.status_code == 200 and "result" in r.json(), r.text      # the default app has usage today
    held = []

    def hold_unfiltered(route):
        if "app=" not in route.request.url and "since=" in route.request.url and not held:
            held.append(route)                  # answered after the filtered request below
        else:
            route.continue_()

    c.page.route("**/console/api/usage?*", hold_unfiltered)
    c.go("usage")
    c.page.wait_for_selector("select[name=app] option[value=team-late]", state="attached")
    c.page.select_option("select[name=app]", "team-late")
    expect(c.page.locator("main[data-page=usage] .table-box")).to_have_text("No usage in this range.")
    assert len(held) == 1, "the first load was never held back"
    held[0].continue_()
    c.page.wait_for_timeout(500)               # time for the stale answer to be drawn, were it drawn
    expect(c.page.locator("main[data-page=usage] .table-box")).to_have_text("No usage in this range.")
    assert usage_totals(c) == (0, 0, 0, 0, 0)
    c.page.unroute("**/console/api/usage?*")
