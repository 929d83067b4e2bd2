"""`neoxserve services ...`: publish a model under an api_name, list services, unpublish."""
from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from .common import add_store_flags, admin_command, name_list, print_json

if TYPE_CHECKING:
    from ..platform import Platform, Service


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("services", help="publish and unpublish services", description=__doc__)
    actions = p.add_subparsers(dest="services_command", required=True)

    publish = actions.add_parser("publish", help="publish a service under an api_name")
    publish.add_argument("name", help="api_name: 1-64 of a-z 0-9 _ - . (the last part of the model URL)")
    publish.add_argument("--model", help="model name shown for the service (default: the configured model)")
    publish.add_argument("--max-output-tokens", dest="max_output_tokens", type=int)
    publish.add_argument("--temperature", type=float, help="default, in (0, 1.0]")
    publish.add_argument("--top-p", dest="top_p", type=float, help="default, in [0, 1.0]")
    publish.add_argument("--top-k", dest="top_k", type=int, help="default, a positive integer")
    publish.add_argument("--penalty-score", dest="penalty_score", type=float, help="default, in [1.0, 2.0]")
    publish.add_argument("--allow", nargs="+", action="extend", type=name_list, default=[], metavar="APP",
                         help="apps allowed to call it (space- or comma-separated)")
    publish.add_argument("--json", action="store_true")
    add_store_flags(publish)
    publish.set_defaults(run=_publish)

    listing = actions.add_parser("list", help="list published services")
    listing.add_argument("--json", action="store_true")
    add_store_flags(listing)
    listing.set_defaults(run=_list)

    unpublish = actions.add_parser("unpublish", help="unpublish a service (apps lose their permission for it)")
    unpublish.add_argument("name")
    add_store_flags(unpublish)
    unpublish.set_defaults(run=_unpublish)


def _default_model(args: argparse.Namespace) -> str:
    from ..config import Settings
    from .engine_config import engine_config

    return engine_config(Settings.load(getattr(args, "config", None))).model_name


@admin_command
def _publish(platform: Platform, args: argparse.Namespace) -> int:
    allow = [name for names in args.allow for name in names]
    service = platform.publish(args.name, args.model or _default_model(args), temperature=args.temperature,
                               top_p=args.top_p, top_k=args.top_k, penalty_score=args.penalty_score,
                               max_output_tokens=args.max_output_tokens, allow=allow)
    if args.json:
        print_json({**service.to_dict(), "allowed_apps": allow})
    else:
        print(f"published '{service.api_name}' (model {service.model})"
              + (f", allowed for: {', '.join(allow)}" if allow else "; no app may call it yet (apps allow)"))
    return 0


def _defaults_text(s: Service) -> str:
    parts = [f"{k}={getattr(s, k)}" for k in ("temperature", "top_p", "top_k", "penalty_score", "max_output_tokens")
             if getattr(s, k) is not None]
    return " ".join(parts) or "-"


@admin_command
def _list(platform: Platform, args: argparse.Namespace) -> int:
    services = platform.list_services()
    allowed = platform.allowed_apps()
    if args.json:
        print_json([{**s.to_dict(), "allowed_apps": allowed[s.api_name]} for s in services])
        return 0
    print(f"{'API NAME':<24} {'MODEL':<24} {'DEFAULTS':<40} APPS")
    for s in services:
        print(f"{s.api_name:<24} {s.model:<24} {_defaults_text(s):<40} {','.join(allowed[s.api_name]) or '-'}")
    return 0


@admin_command
def _unpublish(platform: Platform, args: argparse.Namespace) -> int:
    platform.unpublish(args.name)
    print(f"unpublished '{args.name}'")
    return 0
