"""Console API answers that depend on the clock or on the engine, in-process (FakeEngine, a fixed clock): the
minute counters of the RPM/TPM limits and the engine restarts on the overview."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from fastapi.testclient import TestClient

from fakes import FakeEngine
from neoxserve.api.app import create_app
from neoxserve.config import Settings
from neoxserve.platform import Limits, Outcome, Platform

ORIGIN = {"Origin": "http://testserver"}   # TestClient's own origin, as a browser would send it


class SupervisedEngine(FakeEngine):
    def stats(self) -> Mapping[str, object]:
        return {**super().stats(), "restarts": 2}


def console(tmp_path, engine: FakeEngine) -> Iterator[tuple[TestClient, Platform]]:
    settings = Settings(data_dir=tmp_path, console_origins=[ORIGIN["Origin"]])
    with Platform.open(settings, clock=lambda: 1_760_000_030.0) as platform:
        key = platform.admin.create_key()
        client = TestClient(create_app(settings, engine, platform))
        assert client.post("/console/api/login", json={"key": key}, headers=ORIGIN).status_code == 200
        yield client, platform


@pytest.fixture
def fake(tmp_path) -> Iterator[tuple[TestClient, Platform]]:
    yield from console(tmp_path, FakeEngine())


def test_restarts_are_shown_when_the_engine_reports_them(tmp_path, fake):
    client, _ = fake
    assert client.get("/console/api/overview").json()["restarts"] is None
    for client, _ in console(tmp_path / "supervised", SupervisedEngine()):
        overview = client.get("/console/api/overview").json()
        assert (overview["restarts"], overview["stats"]["restarts"]) == (2, 2)


def test_apps_show_this_minutes_requests_and_tokens(fake):
    client, platform = fake
    platform.publish("demo", "fake")
    created = client.post("/console/api/apps", json={"name": "team", "services": ["demo"],
                                                     "limits": {"rpm": 10, "tpm": 1000}}, headers=ORIGIN)
    assert created.status_code == 201, created.text
    app = platform.get_app("team")
    assert app.limits == Limits(rpm=10, tpm=1000)
    platform.settle(platform.admit(app, platform.get_service("demo"), 40), Outcome.SUCCEEDED, 12, 7)
    shown = client.get("/console/api/apps/team").json()
    counters = platform.counters("team")
    assert (shown["requests_this_minute"], shown["tokens_this_minute"]) == (1, counters.minute_tokens)
    assert counters.minute_tokens == 19     # the reservation of 40 settled to the tokens used
