"""Request body bytes -> a JSON value, with the documented answer for every way a body can be malformed.

- Not JSON, not UTF-8 (json also reads UTF-16 and UTF-32 bodies), or nested deeper than the parser follows
  (about 990 levels: RecursionError): 336002.
- An integer literal of more than MAX_INTEGER_DIGITS digits is valid JSON that Python refuses to convert (and int()
  is quadratic): it is kept as a LongInteger, which no field accepts (validation names the field, 336003) and an
  ignored field carries harmlessly.

Bodies are parsed in a worker thread (api/inputs.py), where the recursion depth starts near 0: the nesting limit
does not depend on how deep the event loop's stack happens to be.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import INVALID_JSON, ApiError

MAX_INTEGER_DIGITS = 4300   # Python's default int_max_str_digits


class LongInteger:
    """An integer literal with more than MAX_INTEGER_DIGITS digits, left unconverted."""

    __slots__ = ("digits",)

    def __init__(self, literal: str) -> None:
        self.digits = len(literal.lstrip("-"))

    def __repr__(self) -> str:
        return f"LongInteger(digits={self.digits})"


def _parse_int(literal: str) -> int | LongInteger:
    if len(literal) > MAX_INTEGER_DIGITS and len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        return LongInteger(literal)
    return int(literal)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_int=_parse_int)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(INVALID_JSON, detail="the body is not valid JSON") from None
