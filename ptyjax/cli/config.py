"""``ptyjax config``: print the pipeline configuration (defaults, or a file merged with them)."""

from __future__ import annotations

import json

from ..pipeline import defaults_toml, load_config


def add_parser(subparsers):
    p = subparsers.add_parser("config", help="print the default pipeline configuration (TOML)")
    p.add_argument("--defaults", action="store_true", help="every option with its default and meaning")
    p.add_argument("file", nargs="?", help="a configuration file to check and print merged with the defaults")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.file:
        print(json.dumps(load_config(args.file), indent=2))
    else:
        print(defaults_toml(), end="")
    return 0
