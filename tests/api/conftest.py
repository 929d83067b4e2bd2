"""Fixtures for the API tests. The folder is on sys.path so tests can import its helper modules by name."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
