"""The format of bearer credentials (`Authorization: Bearer ...`): API keys and short-lived bearer tokens.

Both look like Qianfan's, `bce-v3/ALTAK-<20 letters or digits>/<40 hex>`: the official qianfan SDK (v2) and the
openai client send any such string as it is. The `ALTAK-...` part is a public id (listed, used to revoke a key);
the 40 hex digits are 160 random bits. The store keeps a SHA-256 of the whole string, as it does for access
tokens: the key is random, so a fast unsalted hash is enough and lets the store look it up.
"""
from __future__ import annotations

import re
import secrets

from .credentials import random_base62

PREFIX = "bce-v3/"
_KEY = re.compile(r"bce-v3/(ALTAK-[A-Za-z0-9]{20})/[0-9a-f]{40}")
_ID = re.compile(r"ALTAK-[A-Za-z0-9]{20}")


def new_bearer_key() -> tuple[str, str]:
    """A new (id, key)."""
    key_id = "ALTAK-" + random_base62(20)
    return key_id, f"{PREFIX}{key_id}/{secrets.token_hex(20)}"


def is_well_formed(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def is_key_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None
