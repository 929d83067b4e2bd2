"""Driving the console in Chromium the way a person does: through its forms and buttons."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from live import LiveServer

LOGIN_LIMIT = 30   # per address and minute on the console tests' server; the limit test spends 127.0.0.2's
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# What Chromium logs for an API call refused with a 4xx, which the page shows as a message (the first
# GET /console/api/session before logging in, a wrong key, a value the platform refuses): not an error of the page.
REFUSED_CALL = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d \(.*\)")


def same_origin(live: LiveServer) -> dict[str, str]:
    """The Origin header a browser sends with the console's own calls."""
    return {"Origin": live.base_url}


@dataclass
class Console:
    page: Any
    server: LiveServer
    shots: Path
    dialogs: list[str] = field(default_factory=list)      # alert()/confirm() messages: there must be none
    errors: list[str] = field(default_factory=list)       # console errors (CSP violations included), page errors

    @classmethod
    def open(cls, browser, server: LiveServer, shots: Path) -> Console:
        page = browser.pages[0] if browser.pages else browser.new_page()
        c = cls(page, server, shots)

        def on_dialog(dialog) -> None:
            c.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        def on_console(message) -> None:
            if message.type == "error" and not REFUSED_CALL.fullmatch(message.text):
                c.errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda e: c.errors.append(str(e)))
        page.set_default_timeout(20_000)
        page.goto(server.base_url + "/console")
        return c

    def login(self, key: str | None = None) -> None:
        self.page.fill("#admin-key", key or self.server.keys["admin_key"])
        self.page.click("form[data-testid=login-form] button[type=submit]")

    def logged_in(self) -> Console:
        self.login()
        self.page.wait_for_selector("nav.sidebar")
        self.page.wait_for_selector("[data-testid=model] .value:not(:empty)")
        return self

    def go(self, name: str) -> None:
        self.page.click(f"nav a[data-page={name}]")
        self.page.wait_for_selector(f"main[data-page={name}]")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def text(self) -> str:
        """Everything the page holds: its HTML and the values of its inputs (secrets would be there)."""
        values = self.page.eval_on_selector_all("input, textarea", "els => els.map(e => e.value).join('\\n')")
        return self.page.content() + "\n" + values
