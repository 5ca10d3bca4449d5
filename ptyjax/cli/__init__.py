"""The ``ptyjax`` command line.

Each sub-command lives in its own module of this package with two functions: ``add_parser(subparsers)``
that declares its arguments and ``run(args) -> int`` that does the work. Errors caused by input
(:class:`ptyjax.errors.PtyjaxError`) are printed as one line and exit with status 2; ``--debug`` shows
the traceback instead. Compiled programs are kept on disk between runs (:mod:`ptyjax.compilation_cache`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__, compilation_cache
from ..errors import PtyjaxError

# Sub-command modules, in the order ``ptyjax --help`` lists them.
COMMANDS = ["demo", "run", "simulate", "inspect", "reconstruct", "analyze", "cluster", "report", "models", "config"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptyjax", description="Joint multi-energy ptychography-XAFS.")
    parser.add_argument("--version", action="version", version=f"ptyjax {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    compilation_cache.enable()
    try:
        return int(args.func(args) or 0)
    except PtyjaxError as error:
        if args.debug:
            raise
        print(f"ptyjax {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ptyjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
