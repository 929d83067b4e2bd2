"""The `neoxserve` command. Each subcommand lives in neoxserve.commands.<name> with `add_parser` and `run`."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = ["serve", "generate", "quantize", "apps", "apikeys", "accesscodes", "services", "usage", "admin", "demo",
               "cluster"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neoxserve", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (NEOXSERVE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"neoxserve.commands.{name}")
        module.add_parser(sub)
    return parser


def undecodable(argv: list[str]) -> str | None:
    """The first argument that is not UTF-8, as the bytes it was: Python hands such bytes over as lone surrogates
    (surrogateescape), which no name, number or store can take, and printing them would raise."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return repr(os.fsencode(arg))
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bad = undecodable(argv)
    if bad is not None:
        print(f"neoxserve: error: the argument {bad} is not valid UTF-8 text", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
