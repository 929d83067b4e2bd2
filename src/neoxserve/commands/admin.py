"""`neoxserve admin rotate-key`: a new admin key for the web console (/console).

The old key stops working and every console session ends at once (on every replica sharing the store). The new
key is printed only this once; the store keeps a hash of it.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import add_store_flags, admin_command, print_json

if TYPE_CHECKING:
    from ..platform import Platform


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("admin", help="the web console's admin key", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="admin_command", required=True)
    rotate = actions.add_parser("rotate-key", help="new console admin key (shown once); ends every console session")
    rotate.add_argument("--json", action="store_true", help='print {"admin_key": ...}')
    add_store_flags(rotate)
    rotate.set_defaults(run=_rotate_key)


@admin_command
def _rotate_key(platform: Platform, args: argparse.Namespace) -> int:
    key = platform.admin.rotate_key()
    if args.json:
        print_json({"admin_key": key})
        return 0
    print(f"Admin key: {key}")
    print("It is shown only now: every console session has ended; log in at /console with this key.",
          file=sys.stderr)
    return 0
