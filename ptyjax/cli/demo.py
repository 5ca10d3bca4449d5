"""``ptyjax demo``: simulate the ``small`` LNMO dataset and run the whole pipeline on it."""

from __future__ import annotations

import time
from pathlib import Path

from ..pipeline import load_config, run_pipeline
from ..simulate import PRESETS, simulate


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="simulate the built-in LNMO dataset and run the whole pipeline")
    p.add_argument("-o", "--output", default="ptyjax-demo", help="folder for data, results and report (default ptyjax-demo)")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="simulator preset (default small)")
    p.add_argument("--config", help="TOML configuration (see `ptyjax config --defaults`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.output)
    t0 = time.perf_counter()
    truth = simulate(PRESETS[args.preset], out / "data")
    print(f"simulated the {args.preset} preset into {out / 'data'} ({time.perf_counter() - t0:.0f} s)")
    summary = run_pipeline([out / "data"], out / "results.h5", load_config(args.config), truth_path=truth, progress=not args.quiet)
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"total {time.perf_counter() - t0:.0f} s; open {summary.get('report', out / 'results.h5')}")
    return 0
