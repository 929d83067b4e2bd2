"""Verifying `Authorization: bce-auth-v1/...` signatures (docs/api.md#iam-signatures), as bce-python-sdk makes them."""
from __future__ import annotations

import calendar
import re
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .errors import IAM_FAILED, PlatformError

PREFIX = "bce-auth-v1"
EXPIRATION = re.compile(r"[0-9]{1,10}")
# What the SDK signs when it is given no header list (its _get_canonical_headers default), plus every x-bce-*.
_DEFAULT_SIGNED = frozenset({"host", "content-md5", "content-length", "content-type"})


@dataclass(frozen=True)
class ParsedAuthorization:
    access_key: str
    timestamp: str
    expiration: int
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}/{self.access_key}/{self.timestamp}/{self.expiration}"


def fail(detail: str) -> PlatformError:
    return PlatformError(IAM_FAILED, detail=detail)


def parse_authorization(value: str) -> ParsedAuthorization:
    parts = value.strip().split("/")
    if len(parts) != 6 or parts[0] != PREFIX:
        raise fail("Authorization is not bce-auth-v1/{ak}/{timestamp}/{expiration}/{headers}/{signature}")
    _, ak, timestamp, expiration, signed, signature = parts
    if not ak or not signature:
        raise fail("Authorization has an empty access key or signature")
    # ASCII digits only (str.isdigit also takes "²", which int() refuses) and at most 10 of them: a signature
    # valid for more than 300 years is as wrong as a malformed one, and int() refuses over 4300 digits
    if not EXPIRATION.fullmatch(expiration) or int(expiration) <= 0:
        raise fail(f"Authorization has a bad expiration {expiration!r}")
    names = tuple(n.strip().lower() for n in signed.split(";") if n.strip())
    return ParsedAuthorization(ak, timestamp, int(expiration), names, signature)


def parse_timestamp(text: str) -> int:
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise fail(f"Authorization has a bad timestamp {text!r}") from None


def check_window(timestamp: int, expiration: int, now: float, skew: int) -> None:
    if now < timestamp - skew:
        raise fail("signature timestamp is in the future")
    if now > timestamp + expiration + skew:
        raise fail("signature has expired")


def _enc(value: str, keep_slash: bool = False) -> str:
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_request(method: str, path: str, query: Iterable[tuple[str, str]],
                      headers: Mapping[str, str], signed: Iterable[str]) -> str:
    """METHOD\\nURI\\nQUERY\\nHEADERS from what was received; `path` is the decoded path."""
    pairs = sorted(f"{_enc(k)}={_enc(v or '')}" for k, v in query if k.lower() != "authorization")
    lowered = {k.strip().lower(): v for k, v in headers.items()}
    names = set(signed)
    if not names:
        names = set(_DEFAULT_SIGNED) | {k for k in lowered if k.startswith("x-bce-")}
    lines = []
    for name in names:
        value = (lowered.get(name) or "").strip()
        if value:  # the signer skips empty values, so a missing header is the same as an empty one
            lines.append(f"{_enc(name)}:{_enc(value)}")
    return "\n".join([method.upper(), _enc(path, keep_slash=True), "&".join(pairs), "\n".join(sorted(lines))])


def signature_for(secret_access_key: str, auth: ParsedAuthorization, canonical: str) -> str:
    sign_key = hmac.new(secret_access_key.encode(), auth.prefix.encode(), hashlib.sha256).hexdigest()
    return hmac.new(sign_key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def query_pairs(query) -> list[tuple[str, str]]:
    """Accept a list of pairs, a plain mapping, or a multi-dict with multi_items() (Starlette's QueryParams)."""
    if query is None:
        return []
    if hasattr(query, "multi_items"):
        return list(query.multi_items())
    if isinstance(query, Mapping):
        return list(query.items())
    return list(query)
