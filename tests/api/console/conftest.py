"""Fixtures for the console tests: a live `neoxserve serve` of its own (fresh store, so the banner prints the admin
key), an HTTP client logged in to it, and headless Chromium (Debian's package, driven by Playwright).

Screenshots go to tmp_path, or to docs/console/ when NEOXSERVE_SCREENSHOTS=1 (`make screenshots`), so that
`make test` leaves the work tree as it was.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_page import CHROMIUM_FLAGS, LOGIN_LIMIT, same_origin
from live import LiveServer, start_server

REPO = Path(__file__).resolve().parents[3]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def console_server(tmp_path_factory) -> LiveServer:
    # the trained demo model, so that the playground and its screenshot show what a new user sees
    live = start_server(tmp_path_factory.mktemp("console-data"),
                        env={"NEOXSERVE_CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE": str(LOGIN_LIMIT),
                             "NEOXSERVE_MODEL": "demo"})
    assert live.keys.get("admin_key"), live.stdout_lines
    yield live
    code = live.stop()
    assert code == 0, f"serve exited with {code} on SIGTERM:\n{live.stderr_tail()}"


@pytest.fixture(scope="session")
def admin(console_server) -> httpx.Client:
    """An HTTP client holding a console session (the Origin header a browser would send on every call)."""
    client = httpx.Client(base_url=console_server.base_url, headers=same_origin(console_server), timeout=30)
    r = client.post("/console/api/login", json={"key": console_server.keys["admin_key"]})
    assert r.status_code == 200, r.text
    yield client
    client.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        unavailable("Debian's chromium is not installed (apt-get install chromium; make test does it as root): "
                    "the console's browser tests need it")
    try:
        import playwright  # noqa: F401
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="module")
def playwright_driver():
    """Module scope: Playwright's sync API runs an event loop in this thread until it stops, which would break
    the asyncio.run of tests in later modules."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright_driver, chromium_path, tmp_path):
    """A fresh Chromium profile (its own --user-data-dir) per test."""
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS,
        viewport={"width": 1280, "height": 860})
    yield context
    context.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: docs/console/ under `make screenshots`, else the test's tmp_path."""
    if os.environ.get("NEOXSERVE_SCREENSHOTS") == "1":
        path = REPO / "docs" / "console"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path
