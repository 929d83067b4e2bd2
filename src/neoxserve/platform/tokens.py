"""The access token format (docs/api.md#access-tokens): `24.<32 hex>.<ttl>.<expiry unix>.<n>-<app id>`."""
from __future__ import annotations

import re
import secrets

_TOKEN = re.compile(r"24\.[0-9a-f]{32}\.\d{1,10}\.\d{1,12}\.\d{1,9}-\d{1,18}")
MAX_LENGTH = 128


def new_access_token(app_id: int, ttl: int, expires_at: int) -> str:
    # 128 random bits in the hex part, plus ~20 more in <n>.
    return f"24.{secrets.token_hex(16)}.{ttl}.{expires_at}.{secrets.randbelow(900_000) + 100_000}-{app_id}"


def new_refresh_token(ttl: int, expires_at: int) -> str:
    """Returned for shape compatibility only: grant_type=refresh_token is not supported, so it is not stored."""
    return f"25.{secrets.token_hex(16)}.{ttl * 10}.{expires_at}.{secrets.randbelow(900_000) + 100_000}-0"


def is_well_formed(token: str) -> bool:
    return len(token) <= MAX_LENGTH and _TOKEN.fullmatch(token) is not None
