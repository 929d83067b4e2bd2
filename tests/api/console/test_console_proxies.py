"""Whose address a console login attempt counts against: the connection's, unless it comes from one of
`trusted_proxies`. A live server of its own (3 attempts a minute; 127.0.0.2 is its trusted proxy)."""
from __future__ import annotations

import httpx
import pytest

from live import start_server

LIMIT = 3


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("proxied"), env={
        "NEOXSERVE_CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE": str(LIMIT),
        "NEOXSERVE_TRUSTED_PROXIES": '["127.0.0.2"]'})
    yield live
    assert live.stop() == 0


def _attempts(live, local_address: str, forwarded_for: list[str]) -> list[int]:
    transport = httpx.HTTPTransport(local_address=local_address)
    with httpx.Client(transport=transport, base_url=live.base_url, headers={"Origin": live.base_url}) as client:
        return [client.post("/console/api/login", json={"key": "nxa-wrong"},
                            headers={"X-Forwarded-For": xff}).status_code for xff in forwarded_for]


def test_x_forwarded_for_from_an_untrusted_client_does_not_make_a_new_address(proxied):
    # 127.0.0.1 is not a trusted proxy here: every attempt is 127.0.0.1's, whatever the header says
    assert _attempts(proxied, "127.0.0.1", [f"10.0.0.{i}" for i in range(LIMIT + 2)]) == [401] * LIMIT + [429] * 2
    assert "console login from 127.0.0.1 refused" in "\n".join(proxied.stderr_lines)


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(proxied):
    # through the trusted proxy, each forwarded client has its own budget ...
    assert _attempts(proxied, "127.0.0.2", [f"10.0.1.{i}" for i in range(LIMIT + 2)]) == [401] * (LIMIT + 2)
    # ... and one client's attempts still add up
    assert _attempts(proxied, "127.0.0.2", ["10.0.2.9"] * (LIMIT + 1)) == [401] * LIMIT + [429]
    assert "console login from 10.0.2.9 refused" in "\n".join(proxied.stderr_lines)
