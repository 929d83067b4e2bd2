"""What the admin commands (apps, apikeys, services, usage, admin) share: store flags, opening the platform, JSON
output, and turning bad input into a one-line error with exit code 2."""
from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ..platform import Platform

EXIT_BAD_INPUT = 2
EXIT_STORE_FAILED = 1


def add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", dest="data_dir", help="data directory holding the SQLite store (NEOXSERVE_DATA_DIR)")
    p.add_argument("--store-url", dest="store_url", help="redis://host:port/db for a Redis store (NEOXSERVE_STORE_URL)")


def open_platform(args: argparse.Namespace) -> Platform:
    from ..config import Settings
    from ..platform import Platform

    settings = Settings.load(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None),
                             store_url=getattr(args, "store_url", None))
    return Platform.open(settings)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"neoxserve: error: {message}", file=sys.stderr)
    return code


def admin_command(fn: Callable[[Platform, argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Open the platform, run fn(platform, args), close; bad input exits 2 with a message, never a traceback."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        from ..platform import AdminError

        try:
            platform = open_platform(args)
        except ValidationError as e:
            return fail(f"invalid settings: {first_error(e)}")
        except (AdminError, ValueError) as e:
            return fail(str(e))
        except Exception as e:  # store unreachable (Redis down, unreadable file): not the operator's input
            return fail(f"cannot open the store: {type(e).__name__}: {e}", EXIT_STORE_FAILED)
        try:
            return int(fn(platform, args) or 0)
        except AdminError as e:
            return fail(str(e))
        finally:
            platform.close()

    return run


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"


def name_list(text: str) -> list[str]:
    """A comma-separated flag value: the names in it."""
    return [n.strip() for n in text.split(",") if n.strip()]


def print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))
