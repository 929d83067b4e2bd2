"""Request bodies -> a validated CompletionRequest (docs/api.md#request-body).

Wrong or missing types are 336001 (fixed message); values out of range are 336003 with a message naming the
field and the rule: also text that is not valid Unicode (a lone surrogate such as "\ud800", which JSON escapes can
express and UTF-8 cannot) and integers too long to read (api/body.py). Unknown fields (extra_parameters, ...) are
accepted and ignored, whatever they hold.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from ..platform.records import SAMPLING_RULES
from .body import MAX_INTEGER_DIGITS, LongInteger
from .errors import INVALID_ARGUMENT, ApiError, out_of_range

log = logging.getLogger(__name__)

MAX_STOP = 4
MAX_STOP_CHARS = 20
MAX_ECHO_CHARS = 32     # of a caller's text quoted back in an error message
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class CompletionRequest:
    prompt: str = ""                               # completion route
    messages: list[dict[str, str]] = field(default_factory=list)  # chat route
    system: str | None = None
    stream: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    penalty_score: float | None = None
    stop: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    seed: int | None = None
    user_id: str | None = None

    def input_text(self) -> str:
        """Everything the caller wrote, for moderation."""
        parts = [self.prompt] if self.prompt else []
        if self.system:
            parts.append(self.system)
        parts.extend(m["content"] for m in self.messages)
        return "\n".join(parts)

    def input_chars(self) -> int:
        """Characters of text the caller wrote (prompt, or system and message contents)."""
        return len(self.prompt) + len(self.system or "") + sum(len(m["content"]) for m in self.messages)


def _bad_type(name: str, expected: str) -> ApiError:
    log.info("invalid argument: %s must be %s", name, expected)
    return ApiError(INVALID_ARGUMENT)


def _too_long(name: str, value: LongInteger) -> ApiError:
    return out_of_range(f"{name} is an integer of {value.digits} digits, "
                        f"more than the {MAX_INTEGER_DIGITS} digits a number may have")


def _text(name: str, value: str) -> str:
    """`value`, unless it holds a lone surrogate (which cannot be encoded, tokenized or echoed)."""
    if not value.isascii():
        found = _SURROGATE.search(value)
        if found:
            raise out_of_range(f"{name} contains a lone surrogate (U+{ord(found.group()):04X}) at character "
                               f"{found.start()}: text must be valid Unicode")
    return value


def _echo(text: str) -> str:
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "..."


def _number(body: dict[str, object], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, LongInteger):
        raise _too_long(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad_type(name, "a number")
    return float(value)


def _integer(body: dict[str, object], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, LongInteger):
        raise _too_long(name, value)
    # 5.0 from a JSON encoder that writes every number as float is still the integer 5
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_type(name, "an integer")
    return value


def _string(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_type(name, "a string")
    return _text(name, value)


def _check_range(name: str, value: float | None) -> None:
    """336003 outside the range a service's default must keep too (SAMPLING_RULES)."""
    integer, rule, ok = SAMPLING_RULES[name]
    if value is not None and not ok(value):
        raise out_of_range(f"{name} is {value if integer else format(value, 'g')}, it must be {rule}")


def _sampling_number(body: dict[str, object], name: str) -> float | None:
    value = _number(body, name)
    _check_range(name, value)
    return value


def _sampling_integer(body: dict[str, object], name: str) -> int | None:
    value = _integer(body, name)
    _check_range(name, value)
    return value


def _stop(body: dict[str, object]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _bad_type("stop", "a list of strings")
    if len(value) > MAX_STOP:
        raise out_of_range(f"stop has {len(value)} entries, at most {MAX_STOP} are allowed")
    for i, s in enumerate(value):
        _text(f"stop[{i}]", s)
        if not s:
            raise out_of_range(f"stop[{i}] is empty")
        if len(s) > MAX_STOP_CHARS:
            raise out_of_range(f"stop[{i}] is {len(s)} characters long, at most {MAX_STOP_CHARS} are allowed")
    return tuple(value)


def _messages(body: dict[str, object]) -> list[dict[str, str]]:
    value = body.get("messages")
    if value is None:
        raise _bad_type("messages", "present")
    if not isinstance(value, list):
        raise _bad_type("messages", "a list")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _bad_type(f"messages[{i}]", "an object with string role and content")
        messages.append({"role": _text(f"messages[{i}].role", m["role"]),
                         "content": _text(f"messages[{i}].content", m["content"])})
    if not messages:
        raise out_of_range("messages is empty")
    if len(messages) % 2 == 0:
        raise out_of_range(f"messages has {len(messages)} entries: the count must be odd "
                           "(alternating user and assistant, ending with user)")
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise out_of_range(f"messages[{i}].role is '{_echo(m['role'])}', expected '{expected}' "
                               "(roles alternate user, assistant, ..., ending with user)")
        if not m["content"]:
            raise out_of_range(f"messages[{i}].content is empty")
    return messages


def parse_request(body: object, chat: bool) -> CompletionRequest:
    if not isinstance(body, dict):
        raise _bad_type("body", "a JSON object")
    req = CompletionRequest()
    if chat:
        req.messages = _messages(body)
        req.system = _string(body, "system")
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise _bad_type("prompt", "present")
        if not isinstance(prompt, str):
            raise _bad_type("prompt", "a string")
        if not prompt:
            raise out_of_range("prompt is empty")
        req.prompt = _text("prompt", prompt)

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad_type("stream", "a boolean")
    req.stream = bool(stream)

    req.temperature = _sampling_number(body, "temperature")
    req.top_k = _sampling_integer(body, "top_k")
    req.top_p = _sampling_number(body, "top_p")
    req.penalty_score = _sampling_number(body, "penalty_score")
    req.stop = _stop(body)
    req.max_output_tokens = _sampling_integer(body, "max_output_tokens")
    req.seed = _integer(body, "seed")
    if req.seed is not None and not 0 <= req.seed < 2**63:
        raise out_of_range(f"seed is {req.seed}, it must be in [0, 2^63)")
    req.user_id = _string(body, "user_id")
    return req
