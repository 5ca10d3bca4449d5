"""``ptyjax report RESULTS.h5 -o DIR``: figures, TIFF exports and an index.html of a results file."""

from __future__ import annotations


def add_parser(subparsers):
    parser = subparsers.add_parser("report", help="figures, TIFFs and an HTML page of a results file", description=__doc__)
    parser.add_argument("results", help="results file (HDF5)")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    parser.add_argument("--truth", help="HDF5 file with a 'phase_label' map (0 = outside) to score the groups (adjusted Rand index)")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..report import write_report

    page = write_report(args.results, args.output, args.truth)
    print(f"wrote {page}")
    return 0
