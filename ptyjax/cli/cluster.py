"""``ptyjax cluster RESULTS.h5``: group the pixels by their chemistry (writes ``/clustering``)."""

from __future__ import annotations

from ..errors import PtyjaxError


def add_parser(subparsers):
    parser = subparsers.add_parser("cluster", help="Gaussian-mixture clustering of the chemical maps", description=__doc__)
    parser.add_argument("results", help="results file (HDF5) with a /chemistry group")
    parser.add_argument("--features", help="comma-separated /chemistry map names (default: ni_mn_ratio, edge energies, electrons_per_metal where present)")
    parser.add_argument("--groups", type=int, help="fixed number of groups (default: chosen by --criterion)")
    parser.add_argument("--min-groups", type=int, default=1, help="smallest number of groups tried (default 1)")
    parser.add_argument("--max-groups", type=int, default=6, help="largest number of groups tried (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same labels (default 0)")
    parser.add_argument("--criterion", choices=("icl", "bic"), default="icl", help="how the number of groups is chosen: ICL counts well-separated clusters (default), BIC density components")
    parser.add_argument("--spatial-strength", default="auto", help="Potts interaction per neighbour: a number >= 0, or 'auto' (estimated by pseudo-likelihood, default)")
    parser.add_argument("--min-edge-snr", type=float, default=None, help="pixels whose edge jumps are all below this many standard errors hold no chemistry and are labelled -2 (default: ptyjax.cluster.DETECTION_SNR, 3; 0 keeps all)")
    parser.add_argument("--no-spatial", action="store_true", help="independent pixels: no spatial smoothing of the posteriors")
    parser.add_argument("--boundary-groups", choices=("merge", "keep"), default="merge", help="a group of mixed pixels along the boundary of two others: merged into them (default; also with --groups) or kept")
    parser.add_argument("--outline-px", type=int, default=0, dest="outline_px", help="pixels within this many of the particle's edge get no data term: their neighbours decide their group (default 0: off)")
    parser.add_argument("--outliers", choices=("absorb", "unassigned"), default="absorb", help="outlier pixels: group of their neighbours (default) or label -2")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..cluster import cluster

    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    if args.groups is not None and args.groups < 1:
        raise PtyjaxError(f"--groups must be at least 1, not {args.groups}")
    if not 1 <= args.min_groups <= args.max_groups:
        raise PtyjaxError(f"need 1 <= --min-groups <= --max-groups, got {args.min_groups} and {args.max_groups}")
    options = {"outliers": args.outliers, "criterion": args.criterion, "spatial_strength": _strength(args.spatial_strength),
               "boundary_groups": args.boundary_groups, "outline_px": args.outline_px}
    if args.no_spatial:
        options["spatial_iterations"] = 0
    if args.min_edge_snr is not None:
        options["min_edge_snr"] = args.min_edge_snr
    result = cluster(args.results, features, args.groups, (args.min_groups, args.max_groups), args.seed, **options)
    print(f"{args.results}: {result.n_groups} groups ({', '.join(map(str, result.counts))} pixels) from {', '.join(result.features)}")
    for boundary in result.merged_boundaries:
        first, second = boundary["between"]
        print(f"  merged a boundary group of {boundary['pixels']} mixed pixels into groups {first} and {second}")
    return 0


def _strength(text: str):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise PtyjaxError(f"--spatial-strength must be 'auto' or a number, not {text!r}") from None
    if value < 0:
        raise PtyjaxError(f"--spatial-strength must be >= 0, not {value}")
    return value
