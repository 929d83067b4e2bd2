"""The `neoxserve` command. Each subcommand lives in neoxserve.commands.<name> with `add_parser` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["serve", "generate", "quantize", "apps", "apikeys", "services", "usage", "admin", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neoxserve", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (NEOXSERVE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"neoxserve.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
