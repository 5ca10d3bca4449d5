"""``ptyjax run``: reconstruct, analyze, cluster and report with one configuration file."""

from __future__ import annotations

from .. import plugins
from ..pipeline import load_config, run_pipeline


def add_parser(subparsers):
    p = subparsers.add_parser("run", help="the whole pipeline: reconstruct, analyze, cluster, report")
    p.add_argument("paths", nargs="+", help="CXI files or folders of them")
    p.add_argument("-o", "--output", required=True, help="results file (HDF5)")
    p.add_argument("--config", help="TOML configuration (see `ptyjax config --defaults`)")
    p.add_argument("--truth", help="simulator truth file, to report the agreement with it")
    p.add_argument("--resume", action="store_true", help="continue the reconstruction from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="Python file registering priors/parametrisations/recipes, loaded first (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    plugins.load_all(args.plugin)
    summary = run_pipeline(args.paths, args.output, load_config(args.config), truth_path=args.truth,
                           progress=not args.quiet, resume=args.resume)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0
