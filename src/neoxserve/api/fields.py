"""Typed readers of request body fields, shared by every route's body parser (v1, Qianfan v2, OpenAI).

A field of the wrong type is ApiError 336001 and a value out of range 336003; both name the field (`param`) and the
problem. The v1 routes answer 336001 with its fixed text "Invalid Argument" (the log says which field); the routes
that answer with HTTP statuses send the detail (api/http_errors.py). A field that is absent or null is None.

Text must be valid Unicode: a lone surrogate (which JSON escapes can express and UTF-8 cannot) is 336003, as is an
integer too long to read (api/body.py:LongInteger).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from ..platform.records import SAMPLING_RULES
from .body import MAX_INTEGER_DIGITS, LongInteger
from .errors import INVALID_ARGUMENT, ApiError, out_of_range

log = logging.getLogger("neoxserve.api")

Body = Mapping[str, object]

MAX_STOP = 4
MAX_STOP_CHARS = 20
MAX_SEED = 2**63
MAX_ECHO_CHARS = 32     # of a caller's text quoted back in an error message
_SURROGATE = re.compile("[\ud800-\udfff]")


def bad_type(name: str, expected: str) -> ApiError:
    log.info("invalid argument: %s must be %s", name, expected)
    return ApiError(INVALID_ARGUMENT, detail=f"{name} must be {expected}", param=name)


def json_object(value: object) -> Body:
    """A request body: it must be a JSON object."""
    if not isinstance(value, dict):
        raise bad_type("body", "a JSON object")
    return value


def _too_long(name: str, value: LongInteger) -> ApiError:
    return out_of_range(f"{name} is an integer of {value.digits} digits, "
                        f"more than the {MAX_INTEGER_DIGITS} digits a number may have", param=name)


def text(name: str, value: str) -> str:
    """`value`, unless it holds a lone surrogate (which cannot be encoded, tokenized or echoed)."""
    if not value.isascii():
        found = _SURROGATE.search(value)
        if found:
            raise out_of_range(f"{name} contains a lone surrogate (U+{ord(found.group()):04X}) at character "
                               f"{found.start()}: text must be valid Unicode", param=name.split("[")[0])
    return value


def echo(value: str) -> str:
    """A caller's text as an error message quotes it: shortened."""
    return value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "..."


def number(body: Body, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, LongInteger):
        raise _too_long(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_type(name, "a number")
    return float(value)


def integer(body: Body, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, LongInteger):
        raise _too_long(name, value)
    # 5.0 from a JSON encoder that writes every number as float is still the integer 5
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_type(name, "an integer")
    return value


def string(body: Body, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_type(name, "a string")
    return text(name, value)


def boolean(body: Body, name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_type(name, "a boolean")
    return value


def prompt(value: object, expected: str = "a string") -> str:
    """A completion's `prompt`: present, a string, not empty."""
    if value is None:
        raise bad_type("prompt", "present")
    if not isinstance(value, str):
        raise bad_type("prompt", expected)
    if not value:
        raise out_of_range("prompt is empty", param="prompt")
    return text("prompt", value)


def in_range(name: str, value: float | None, low: float, high: float) -> None:
    """336003 unless low <= value <= high (NaN is never in range)."""
    if value is not None and not low <= value <= high:
        shown = format(value, "g") if isinstance(value, float) else value
        raise out_of_range(f"{name} is {shown}, it must be in [{low:g}, {high:g}]", param=name)


def check_rule(name: str, value: float | None, field: str | None = None) -> None:
    """336003 outside the range a service's default must keep too (SAMPLING_RULES[name]); `field` is the name the
    client used, when it differs."""
    rule = SAMPLING_RULES[name]
    field = field or name
    if value is not None and not rule.ok(value):
        shown = value if rule.integer else format(value, "g")
        raise out_of_range(f"{field} is {shown}, it must be {rule.message}", param=field)


def sampling_number(body: Body, name: str) -> float | None:
    value = number(body, name)
    check_rule(name, value)
    return value


def sampling_integer(body: Body, name: str, field: str | None = None) -> int | None:
    value = integer(body, field or name)
    check_rule(name, value, field)
    return value


def seed(body: Body) -> int | None:
    value = integer(body, "seed")
    if value is not None and not 0 <= value < MAX_SEED:
        raise out_of_range(f"seed is {value}, it must be in [0, 2^63)", param="seed")
    return value


def stop(body: Body, allow_string: bool = False) -> tuple[str, ...]:
    """Qianfan's rule for `stop`: a list of at most 4 strings of 1 to 20 characters (or one string, where the
    protocol allows it); null is none."""
    value = body.get("stop")
    if value is None:
        return ()
    if allow_string and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad_type("stop", "a string or a list of strings" if allow_string else "a list of strings")
    if len(value) > MAX_STOP:
        raise out_of_range(f"stop has {len(value)} entries, at most {MAX_STOP} are allowed", param="stop")
    for i, s in enumerate(value):
        text(f"stop[{i}]", s)
        if not s:
            raise out_of_range(f"stop[{i}] is empty", param="stop")
        if len(s) > MAX_STOP_CHARS:
            raise out_of_range(f"stop[{i}] is {len(s)} characters long, at most {MAX_STOP_CHARS} are allowed",
                               param="stop")
    return tuple(value)


def alternating_turns(messages: list[dict[str, str]], offset: int = 0) -> None:
    """Qianfan's rule for chat turns: an odd count, roles alternating user, assistant, ..., ending with user, no
    empty content. `offset` is the index of the first of them in the request's `messages` (for the messages)."""
    if not messages:
        raise out_of_range("messages is empty", param="messages")
    if len(messages) % 2 == 0:
        where = " after the system message" if offset else ""
        raise out_of_range(f"messages has {len(messages)} entries{where}: the count must be odd "
                           "(alternating user and assistant, ending with user)", param="messages")
    for i, m in enumerate(messages, offset):
        expected = "user" if (i - offset) % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise out_of_range(f"messages[{i}].role is '{echo(m['role'])}', expected '{expected}' "
                               "(roles alternate user, assistant, ..., ending with user)", param="messages")
        if not m["content"]:
            raise out_of_range(f"messages[{i}].content is empty", param="messages")
