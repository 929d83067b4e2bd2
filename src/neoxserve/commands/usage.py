"""`neoxserve usage`: requests and tokens per day, app and service (days in quota_timezone)."""
from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from .common import add_store_flags, admin_command, print_json

if TYPE_CHECKING:
    from ..platform import Platform


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("usage", help="requests and tokens per day, app and service", description=__doc__)
    p.add_argument("--app", help="only this app")
    p.add_argument("--service", help="only this api_name")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="only this day and later")
    p.add_argument("--json", action="store_true")
    add_store_flags(p)
    p.set_defaults(run=_usage)


@admin_command
def _usage(platform: Platform, args: argparse.Namespace) -> int:
    rows = platform.usage(app=args.app, service=args.service, since=args.since)
    if args.json:
        print_json([r.to_dict() for r in rows])
        return 0
    print(f"{'DAY':<11} {'APP':<20} {'SERVICE':<24} {'REQUESTS':>9} {'PROMPT':>10} {'COMPLETION':>11} {'TOTAL':>10}")
    for r in rows:
        print(f"{r.day:<11} {r.app_name:<20} {r.api_name:<24} {r.requests:>9} {r.prompt_tokens:>10} "
              f"{r.completion_tokens:>11} {r.total_tokens:>10}")
    if not rows:
        print("(no usage recorded)")
    return 0
