"""Validation of the names operators choose.

api_name appears in URL paths (`.../completions/{api_name}`), so it is limited to characters that need no
percent-encoding and cannot be confused with path syntax: lowercase letters, digits, `_`, `-` and `.`, 1 to 64
characters, starting with a letter or digit (so never `.` or `..`). App names follow the same rule, with uppercase
letters allowed too. A service's model name is free text (it is the name clients and the SDK look a model up by),
but printable, at most 128 characters, and storable: a lone surrogate (what Python makes of bytes that are not
UTF-8) has no UTF-8 form.
"""
from __future__ import annotations

import re

from .errors import AdminError

_API_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_api_name(name: str) -> str:
    if not isinstance(name, str) or not _API_NAME.fullmatch(name):
        raise AdminError(f"invalid api_name {name!r}: use 1-64 lowercase letters, digits, '_', '-' or '.', "
                         "starting with a letter or digit")
    return name


def check_app_name(name: str) -> str:
    if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
        raise AdminError(f"invalid app name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                         "starting with a letter or digit")
    return name


MAX_MODEL_NAME = 128


def check_model_name(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise AdminError("a service needs a model name")
    if len(model) > MAX_MODEL_NAME:
        raise AdminError(f"the model name is {len(model)} characters long; at most {MAX_MODEL_NAME}")
    if not model.isprintable():   # lone surrogates are not printable either
        raise AdminError(f"invalid model name {model!r}: control characters, line breaks or characters that are "
                         "not UTF-8")
    return model
