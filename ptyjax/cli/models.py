"""``ptyjax models``: list the model recipes."""

from __future__ import annotations

from .. import plugins, recipes


def add_parser(subparsers):
    p = subparsers.add_parser("models", help="list the model recipes (for --model)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help="load a plugin first (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    plugins.load_all(args.plugin)
    for name in sorted(recipes.available()):
        marker = " (default)" if name == recipes.DEFAULT_MODEL else ""
        print(f"{name:18s} {getattr(recipes.load(name), 'DESCRIPTION', '')}{marker}")
    return 0
