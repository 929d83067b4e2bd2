"""Generating, hashing and encrypting app credentials.

Secret Keys are 32 random base62 characters (~190 bits) and only ever need checking, so the store keeps
HMAC-SHA256(per-app salt, key). A slow KDF (bcrypt, scrypt) exists to make guessing low-entropy passwords
expensive; a random 190-bit key cannot be guessed at any speed, and a slow hash would add milliseconds to every
token request. IAM secret access keys must be recovered to verify HMAC signatures, so they are encrypted with
Fernet (AES-128-CBC + HMAC) under a key from settings.secret_key or data_dir/secret.key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

_BASE62 = string.ascii_letters + string.digits
KEY_FILE = "secret.key"


def random_base62(n: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(n))


def new_api_key() -> str:
    return random_base62(24)


def new_secret_key() -> str:
    return random_base62(32)


def new_access_key() -> str:
    return secrets.token_hex(16)


def new_secret_access_key() -> str:
    return secrets.token_hex(16)


def new_salt() -> bytes:
    return secrets.token_bytes(16)


def hash_secret(secret: str, salt: bytes) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def check_secret(secret: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, salt), expected)


def token_hash(token: str) -> bytes:
    # Access tokens carry 128+ random bits: a plain hash is enough, and lets the store look them up by hash.
    return hashlib.sha256(token.encode()).digest()


class Cipher:
    """Encrypts IAM secret access keys at rest."""

    def __init__(self, key_material: str):
        # Any operator-chosen string works: it is stretched into a Fernet key with SHA-256.
        digest = hashlib.sha256(b"neoxserve-iam-secret:" + key_material.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str | None:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            return None


def load_or_create_key_file(data_dir: Path) -> str:
    """Read data_dir/secret.key, creating it (mode 0600) with a random key if absent; safe if processes race."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic: exactly one racing process creates the file, others read the winner's
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()
