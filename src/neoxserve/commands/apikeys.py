"""`neoxserve apikeys ...`: bearer API keys (`Authorization: Bearer bce-v3/ALTAK-...`) for the v2 and OpenAI routes.

A key belongs to an app: its permissions, limits and usage are the app's. The key is printed once, at creation;
the store keeps only its SHA-256. Keys are listed and revoked by their id, the `ALTAK-...` part.
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
    p = subparsers.add_parser("apikeys", help="create, list and revoke bearer API keys", description=__doc__)
    actions = p.add_subparsers(dest="apikeys_command", required=True)
    create = actions.add_parser("create", help="create a key for an app and print it (shown once)")
    create.add_argument("--app", required=True, help="the app the key belongs to")
    create.add_argument("--expires-in", type=_seconds, metavar="SECONDS", help="lifetime (default: until revoked)")
    create.add_argument("--json", action="store_true", help="print one JSON object with the field `key`")
    create.set_defaults(run=_create)
    list_ = actions.add_parser("list", help="list keys (ids, never the keys)")
    list_.add_argument("--app", help="only this app's keys")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (ALTAK-...)")
    revoke.add_argument("id")
    revoke.set_defaults(run=_revoke)
    for a in (create, list_, revoke):
        add_store_flags(a)


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid expiry {text!r}: use a positive number of seconds")
    return value


def _time(t: float | None) -> str:
    return "never" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@admin_command
def _create(platform: Platform, args: argparse.Namespace) -> int:
    key = platform.create_api_key(args.app, expires_in=args.expires_in)
    if args.json:
        print_json(key.to_dict())
        return 0
    print(f"created API key {key.id} for app '{key.app_name}' (id {key.app_id}), expires {_time(key.expires_at)}")
    print(f"  Key:  {key.key}")
    print("The key is shown only now: store it safely.", file=sys.stderr)
    return 0


@admin_command
def _list(platform: Platform, args: argparse.Namespace) -> int:
    keys = platform.list_api_keys(args.app)
    now = platform.clock()
    if args.json:
        print_json([k.to_dict(now) for k in keys])
        return 0
    print(f"{'ID':<27} {'APP':<20} {'CREATED':<21} {'EXPIRES':<21} STATUS")
    for k in keys:
        print(f"{k.id:<27} {k.app_name:<20} {_time(k.created_at):<21} {_time(k.expires_at):<21} {k.status(now)}")
    if not keys:
        print("(no API keys)")
    return 0


@admin_command
def _revoke(platform: Platform, args: argparse.Namespace) -> int:
    platform.revoke_api_key(args.id)
    print(f"revoked API key {args.id}")
    return 0
