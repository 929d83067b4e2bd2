"""`neoxserve usage`: calls (succeeded and failed) and tokens per day, app and service (days in quota_timezone)."""
from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from .common import add_store_flags, admin_command, print_json

if TYPE_CHECKING:
    from ..platform import Platform


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("usage", help="calls and tokens per day, app and service", description=__doc__)
    p.add_argument("--app", help="only this app")
    p.add_argument("--service", help="only this api_name")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="only this day and later")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="only this day and earlier")
    p.add_argument("--json", action="store_true")
    add_store_flags(p)
    p.set_defaults(run=_usage)


@admin_command
def _usage(platform: Platform, args: argparse.Namespace) -> int:
    rows = platform.usage(app=args.app, service=args.service, since=args.since, until=args.until)
    if args.json:
        print_json([r.to_dict() for r in rows])
        return 0
    print(f"{'DAY':<11} {'APP':<20} {'SERVICE':<24} {'CALLS':>8} {'SUCCEEDED':>9} {'FAILED':>8} {'PROMPT':>10} "
          f"{'COMPLETION':>11} {'TOTAL':>10}")
    for r in rows:
        print(f"{r.day:<11} {r.app_name:<20} {r.api_name:<24} {r.calls:>8} {r.succeeded:>9} {r.failed:>8} "
              f"{r.prompt_tokens:>10} {r.completion_tokens:>11} {r.total_tokens:>10}")
    if not rows:
        print("(no usage recorded)")
    return 0
