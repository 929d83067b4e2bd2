"""The console's files: no HTML-injection sinks in its scripts, vendored files as pinned, all shipped as
package data (so an installed wheel serves the console offline)."""
from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import neoxserve.api.console.pages as pages

STATIC = pages.STATIC
REPO = Path(__file__).resolve().parents[3]


def test_scripts_build_the_page_as_text_only():
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function")
    scripts = sorted((STATIC / "js").glob("*.js"))
    assert len(scripts) >= 8
    for script in scripts:
        found = sinks.findall(script.read_text(encoding="utf-8"))
        assert found == [], f"{script.name} uses {found}"


def test_vendored_files_are_the_pinned_ones():
    lines = [line for line in (STATIC / "vendor" / "PINNED").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0].startswith("uplot 1.6.32 MIT ")
    pins = dict(reversed(line.split("  ")) for line in lines[1:])
    assert set(pins) == {p.name for p in (STATIC / "vendor").iterdir()} - {"PINNED"}
    for name, digest in pins.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name


def test_every_static_file_is_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["neoxserve"]
    package = STATIC.parents[2]
    files = [p.relative_to(package).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert files and missing == []
