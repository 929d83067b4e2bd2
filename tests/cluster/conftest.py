"""The cluster tests' shared helper module (needs.py) on the import path, as tests/api does for live.py."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
