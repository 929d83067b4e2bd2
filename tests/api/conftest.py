"""Fixtures for the API tests: one live `neoxserve serve` (real engine process on the demo model, real SQLite
platform) per session, on a free port with a temporary data directory.

The folder is on sys.path so tests can import its helper modules (fakes, live) by name.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import LiveServer, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LiveServer:
    data_dir = tmp_path_factory.mktemp("serve-data")
    moderation = data_dir / "moderation.txt"
    moderation.write_text("# test list\nforbiddenword\nre:bad\\d{3}\n", encoding="utf-8")
    live = start_server(data_dir, env={"NEOXSERVE_MODERATION_FILE": str(moderation)})
    yield live
    code = live.stop()
    assert code == 0, f"serve exited with {code} on SIGTERM:\n{live.stderr_tail()}"
