"""`neoxserve accesscodes ...`: access codes (`Authorization: ACCESSCODE <code>`), the credential of the qianfan SDK's
private mode (QIANFAN_ENABLE_PRIVATE=true, QIANFAN_PRIVATE_ACCESS_CODE=<code>).

A code belongs to an app: its calls are the app's (permissions, limits, usage). The code is printed once, at
creation; the store keeps only its SHA-256. Codes are listed and revoked by their id, the `ac-...` part.
"""
from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .common import add_store_flags, admin_command, print_json

if TYPE_CHECKING:
    from ..platform import Platform


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("accesscodes", help="create, list and revoke access codes (the SDK's private mode)",
                              description=__doc__)
    actions = p.add_subparsers(dest="accesscodes_command", required=True)
    create = actions.add_parser("create", help="create a code for an app and print it (shown once)")
    create.add_argument("--app", required=True, help="the app the code belongs to")
    create.add_argument("--json", action="store_true", help="print one JSON object with the field `code`")
    create.set_defaults(run=_create)
    list_ = actions.add_parser("list", help="list codes (ids, never the codes)")
    list_.add_argument("--app", help="only this app's codes")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="revoke a code by its id (ac-...)")
    revoke.add_argument("id")
    revoke.set_defaults(run=_revoke)
    for a in (create, list_, revoke):
        add_store_flags(a)


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@admin_command
def _create(platform: Platform, args: argparse.Namespace) -> int:
    code = platform.create_access_code(args.app)
    if args.json:
        print_json(code.to_dict())
        return 0
    print(f"created access code {code.id} for app '{code.app_name}' (id {code.app_id})")
    print(f"  Access code:  {code.code}")
    print("The code is shown only now: store it safely (QIANFAN_PRIVATE_ACCESS_CODE).", file=sys.stderr)
    return 0


@admin_command
def _list(platform: Platform, args: argparse.Namespace) -> int:
    codes = platform.list_access_codes(args.app)
    if args.json:
        print_json([c.to_dict() for c in codes])
        return 0
    print(f"{'ID':<20} {'APP':<20} CREATED")
    for c in codes:
        print(f"{c.id:<20} {c.app_name:<20} {_time(c.created_at)}")
    if not codes:
        print("(no access codes)")
    return 0


@admin_command
def _revoke(platform: Platform, args: argparse.Namespace) -> int:
    platform.revoke_access_code(args.id)
    print(f"revoked access code {args.id}")
    return 0
