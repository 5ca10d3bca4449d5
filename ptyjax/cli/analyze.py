"""``ptyjax analyze``: spectra and chemical maps (edge energy, jump, valence, ratios) of a results file."""

from __future__ import annotations

import argparse


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "analyze",
        help="per-pixel XANES spectra and chemical maps of a reconstruction",
        description="Adds /spectra (OD, phase) and /chemistry (edge energies, jumps, white lines, valences, "
        "atomic ratios, electron density, each with *_std) to RESULTS.h5.",
    )
    parser.add_argument("results", metavar="RESULTS.h5", help="results file with /reconstruction (or object/energy/pixel_size)")
    parser.add_argument("--edges", default=None, help="elements whose K edges to fit, e.g. Mn,Ni (default: detected)")
    parser.add_argument("--e0", dest="e0_method", default="fit", choices=["fit", "derivative", "half-jump"],
                        help="edge-energy definition (default: fit)")
    parser.add_argument("--smooth", type=_smoothing, default=None, metavar="PX",
                        help="Gaussian smoothing (sigma, pixels) of the OD maps before fitting, within the particle "
                        "(default: as `ptyjax run`, 1; 0: none), or 'auto': the candidate whose phase groups are the "
                        "most certain (analyses and clusters once per candidate)")
    parser.add_argument("--denoise", default=None, choices=["mnf", "none"],
                        help="spectral denoising of the particle's spectra before fitting (--e0 fit only): mnf keeps the "
                        "components that stand out of the background's noise and each edge's shift direction "
                        "(default: as `ptyjax run`, none)")
    parser.add_argument("--edge-spectra", default=None, choices=["od", "od+phase"],
                        help="spectra the edge fits use (--e0 fit): od, or od+phase jointly, the phase's edge tied to the "
                        "OD's by Kramers-Kronig (default: as `ptyjax run`, od)")
    parser.add_argument("--mask", default=None, metavar="FILE.npy", help="particle mask (Ny, Nx) bool; default automatic")
    parser.set_defaults(func=run)
    return parser


def _smoothing(text):
    """'auto' or a number (its range is checked by ``chemistry.check_analysis_options``)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', not {text!r}") from None


def run(args) -> int:
    import numpy as np

    from ..chemistry import analyze

    out = analyze(args.results, edges=args.edges, e0_method=args.e0_method, mask=args.mask, smooth_px=args.smooth,
                  denoise=args.denoise, edge_spectra=args.edge_spectra)
    chem = out["chemistry"]
    print(f"{args.results}: /spectra, /chemistry written ({int(chem['mask'][0].sum())} particle pixels)")
    if "smooth_px_candidates" in out["attrs"]:
        criteria = ", ".join(f"{s:g} px: {h:.4f}" for s, h in zip(out["attrs"]["smooth_px_candidates"], out["attrs"]["smooth_px_entropy"]))
        print(f"smoothing chosen: {out['attrs']['smooth_px']:g} px (mean posterior entropy per candidate: {criteria})")
    for name in sorted(chem):
        if name.startswith(("edge_energy_", "edge_jump_", "valence_", "electrons_per")) or name.endswith("_ratio"):
            if not name.endswith("_std"):
                values = chem[name][0]
                if not np.isfinite(values).any():
                    print(f"  {name:24s} not measured in any pixel (no edge detected)")
                    continue
                print(f"  {name:24s} median {np.nanmedian(values):.6g} {chem[name][1]}")
    return 0
