"""The format of access codes (`Authorization: ACCESSCODE <code>`), the credential of the qianfan SDK's private
mode (QIANFAN_ENABLE_PRIVATE=true with QIANFAN_PRIVATE_ACCESS_CODE).

A code is `ac-<16 letters or digits>-<40 hex>`: the `ac-...` part is its public id (listed, used to revoke it and
to find its record), the 40 hex digits are 160 random bits. The store keeps the id, the app and the SHA-256 of the
whole code; a call looks the record up by the id and compares the digests in constant time. The code is random,
so a fast unsalted hash is enough (as for API keys).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from .credentials import random_base62

SCHEME = "ACCESSCODE"
_CODE = re.compile(r"(ac-[A-Za-z0-9]{16})-[0-9a-f]{40}")
_ID = re.compile(r"ac-[A-Za-z0-9]{16}")


def new_access_code() -> tuple[str, str]:
    """A new (id, code)."""
    code_id = "ac-" + random_base62(16)
    return code_id, f"{code_id}-{secrets.token_hex(20)}"


def code_id(code: str) -> str | None:
    """The id of a well-formed code, else None."""
    match = _CODE.fullmatch(code)
    return None if match is None else match.group(1)


def is_code_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def digest(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


def matches(code: str, stored: bytes) -> bool:
    return hmac.compare_digest(digest(code), stored)
