"""`neoxserve apps ...`: create, list, show, rotate, delete apps, set their limits and allowed services."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .common import add_store_flags, admin_command, name_list, print_json

if TYPE_CHECKING:
    from ..platform import Limits, NewKeys, Platform


def limit_value(text: str) -> int:
    """A limit flag: a positive integer, or 0 / none for no limit (returned as 0)."""
    if text.strip().lower() in ("0", "none"):
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}: use a positive integer, or 0 / none") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}: use a positive integer, or 0 / none")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("apps", help="manage apps and their keys, limits and services", description=__doc__)
    actions = p.add_subparsers(dest="apps_command", required=True)

    def action(name: str, help: str, fn: Callable[[argparse.Namespace], int], with_name: bool = True,
               json_flag: bool = True) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help)
        if with_name:
            a.add_argument("name", help="app name")
        if json_flag:
            a.add_argument("--json", action="store_true", help="print JSON")
        add_store_flags(a)
        a.set_defaults(run=fn)
        return a

    create = action("create", "create an app and print its keys (shown once)", _create)
    create.add_argument("--services", type=name_list, default=[], help="comma-separated api_names it may call")
    _add_limit_flags(create)
    action("list", "list apps", _list, with_name=False)
    action("show", "show one app, its limits and today's counts", _show)
    action("rotate", "new keys; old keys and all access tokens stop working", _rotate)
    action("delete", "delete an app and revoke its access tokens", _delete, json_flag=False)
    limits = action("limits", "set or remove limits (0 or none removes one); no flags: show them", _limits)
    _add_limit_flags(limits)
    for verb, help in (("allow", "let the app call these services"),
                       ("disallow", "stop the app calling these services")):
        a = action(verb, help, _allow_or_disallow, json_flag=False)
        a.add_argument("services", nargs="+", metavar="API_NAME")


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qps", type=limit_value, help="requests per second (error 18 beyond)")
    p.add_argument("--daily", type=limit_value, help="requests per day in quota_timezone (error 17 beyond)")
    p.add_argument("--total", type=limit_value, help="requests in total (error 19 beyond)")
    p.add_argument("--rpm", type=limit_value, help="requests per minute (error 336501 beyond)")
    p.add_argument("--tpm", type=limit_value, help="tokens per minute, prompt + maximum output reserved at "
                                                    "admission (error 336502 beyond)")


def _limit(value: int | None) -> int | None:
    return value or None


def _show_keys(keys: NewKeys, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(keys.to_dict())
        return
    print(f"{verb} app '{keys.name}' (id {keys.app_id})")
    print(f"  API Key:            {keys.api_key}")
    print(f"  Secret Key:         {keys.secret_key}")
    print(f"  Access Key:         {keys.access_key}")
    print(f"  Secret Access Key:  {keys.secret_access_key}")
    print("The secret keys are shown only now: store them safely.", file=sys.stderr)


def _limits_text(limits: Limits) -> str:
    return " ".join(f"{k}={getattr(limits, k) if getattr(limits, k) is not None else '-'}" for k in limits.NAMES)


@admin_command
def _create(platform: Platform, args: argparse.Namespace) -> int:
    from ..platform import Limits

    keys = platform.create_app(args.name, services=args.services,
                               limits=Limits(*(_limit(getattr(args, k)) for k in Limits.NAMES)))
    _show_keys(keys, args.json, "created")
    return 0


@admin_command
def _list(platform: Platform, args: argparse.Namespace) -> int:
    apps = platform.list_apps()
    if args.json:
        print_json([a.to_dict() for a in apps])
        return 0
    print(f"{'ID':>5}  {'NAME':<20} {'API KEY':<26} {'LIMITS':<28} SERVICES")
    for a in apps:
        print(f"{a.id:>5}  {a.name:<20} {a.api_key:<26} {_limits_text(a.limits):<28} {','.join(a.services) or '-'}")
    return 0


@admin_command
def _show(platform: Platform, args: argparse.Namespace) -> int:
    app = platform.get_app(args.name)
    counters = platform.counters(args.name)
    if args.json:
        print_json({**app.to_dict(), "today": counters.day, "requests_today": counters.day_count,
                    "requests_total": counters.total_count, "requests_this_minute": counters.minute_requests,
                    "tokens_this_minute": counters.minute_tokens})
        return 0
    print(f"app '{app.name}' (id {app.id})")
    print(f"  API Key:     {app.api_key}")
    print(f"  Access Key:  {app.access_key}")
    print(f"  limits:      {_limits_text(app.limits)}")
    print(f"  services:    {', '.join(app.services) or '-'}")
    print(f"  requests:    {counters.day_count} today ({counters.day}), {counters.total_count} in total")
    print(f"  this minute: {counters.minute_requests} requests, {counters.minute_tokens} tokens")
    return 0


@admin_command
def _rotate(platform: Platform, args: argparse.Namespace) -> int:
    _show_keys(platform.rotate_app(args.name), args.json, "rotated keys of")
    return 0


@admin_command
def _delete(platform: Platform, args: argparse.Namespace) -> int:
    platform.delete_app(args.name)
    print(f"deleted app '{args.name}'; its access tokens no longer work")
    return 0


@admin_command
def _limits(platform: Platform, args: argparse.Namespace) -> int:
    from ..platform import Limits

    app = platform.get_app(args.name)
    current = app.limits
    if any(getattr(args, k) is not None for k in Limits.NAMES):
        new = Limits(*(getattr(current, k) if getattr(args, k) is None else _limit(getattr(args, k))
                       for k in Limits.NAMES))
        app = platform.set_limits(args.name, new)
    if args.json:
        print_json({"name": app.name, **app.limits.to_dict()})
    else:
        print(f"app '{app.name}': {_limits_text(app.limits)}")
    return 0


@admin_command
def _allow_or_disallow(platform: Platform, args: argparse.Namespace) -> int:
    change = platform.allow if args.apps_command == "allow" else platform.disallow
    for api_name in args.services:
        change(args.name, api_name)
    print(f"app '{args.name}' may call: {', '.join(platform.get_app(args.name).services) or '-'}")
    return 0
