"""Stores behind the platform: SQLite (default) or Redis."""
from __future__ import annotations

from pathlib import Path

from .base import Store

DB_FILE = "neoxserve.db"


def open_store(data_dir: Path, store_url: str = "") -> Store:
    """'' -> SQLite file data_dir/neoxserve.db; redis://... or rediss://... -> Redis; sqlite:///path -> that file."""
    if not store_url:
        from .sqlite import SQLiteStore

        return SQLiteStore(Path(data_dir) / DB_FILE)
    if store_url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        return RedisStore(store_url)
    if store_url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(Path(store_url[len("sqlite:///"):]))
    raise ValueError(f"unsupported store_url {store_url!r}: use '' (SQLite in data_dir) or redis://host:port/db")
