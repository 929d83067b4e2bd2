"""The servers the cluster tests run (Debian's nginx, redis-server, prometheus): a test without one skips with the
way to install it, and fails under CI, where `make test` must have installed it."""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(binary: str | None, what: str, make: str | None = None) -> str:
    """`binary` (a path found on this machine), or skip / fail naming `what` and the make target installing it."""
    if binary is None:
        reason = f"no {what}: `make test` installs it where the machine allows (`make {make or what}`)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return binary
