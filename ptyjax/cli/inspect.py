"""``ptyjax inspect PATH... [--json]``: validate CXI files and summarise a multi-energy dataset."""

from __future__ import annotations

import json

from ..data import DEFAULT_EDGES, Dataset


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "inspect",
        help="check CXI files and summarise a multi-energy dataset",
        description="Open CXI files (or folders of *.cxi), check them, and print one line per energy.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="CXI file or folder of CXI files")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument(
        "--edges",
        default=",".join(DEFAULT_EDGES),
        help="comma-separated absorption edges to group energies by, e.g. Mn_K,Ni_K (default: K edges Ti..Zn)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    edges = [e.strip() for e in args.edges.split(",") if e.strip()]
    dataset = Dataset.open(args.paths, edges=edges)
    info = summary(dataset)
    print(json.dumps(info, indent=1) if args.json else format_table(info))
    return 0


def summary(dataset: Dataset) -> dict:
    """JSON-ready description of ``dataset``: lengths in metres, energies in eV, counts in photons."""
    return {
        "files": [str(p) for p in dataset.files],
        "energies_ev": dataset.energies_ev.tolist(),
        "n_frames": dataset.n_frames.tolist(),
        "frame_shape": list(dataset.frame_shape),
        "detector_shape": list(dataset.scans[0].detector_shape or dataset.frame_shape),
        "pixel_size_m": dataset.pixel_sizes_m.tolist(),
        "scan_extent_m": [s.scan_extent_m.tolist() for s in dataset.scans],
        "masked_pixels": [int(s.bad_pixels.sum()) for s in dataset.scans],
        "total_counts": [s.total_counts() for s in dataset.scans],
        # Per file with a monitor: the smallest and largest frame flux relative to the scan's mean (the
        # engine models it, ptyjax.data.ScanFile.relative_flux); None without one.
        "relative_flux_range": [[float(s.relative_flux.min()), float(s.relative_flux.max())] if s.has_monitor else None
                                for s in dataset.scans],
        "edges": dataset.edges,
        "detector_distance_m": dataset.distance_m,
        "detector_pixel_m": list(dataset.detector_pixel_m),
    }


def format_table(info: dict) -> str:
    """Human-readable table of a :func:`summary`."""
    edge_of = {i: name for name, members in info["edges"].items() for i in members}
    ny, nx = info.get("detector_shape", info["frame_shape"])
    padded = "" if [ny, nx] == info["frame_shape"] else " (padded to {} x {} with masked pixels)".format(*info["frame_shape"])
    py, px = info["detector_pixel_m"]
    groups = ", ".join(f"{name} ({len(members)})" for name, members in info["edges"].items())
    lines = [
        f"{len(info['files'])} energies; edges: {groups}",
        f"detector: {ny} x {nx} frames{padded}, distance {info['detector_distance_m']:.4g} m, "
        f"pixel {py * 1e6:.4g} x {px * 1e6:.4g} um",
        "",
        f"{'#':>3} {'energy (eV)':>11} {'edge':>5} {'frames':>6} {'pixel (nm)':>10} "
        f"{'extent y x (um)':>17} {'masked':>6} {'counts':>10}  file",
    ]
    for i, file in enumerate(info["files"]):
        ey, ex = info["scan_extent_m"][i]
        lines.append(
            f"{i:>3} {info['energies_ev'][i]:>11.2f} {edge_of[i]:>5} {info['n_frames'][i]:>6} "
            f"{info['pixel_size_m'][i] * 1e9:>10.3f} {ey * 1e6:>8.3f} {ex * 1e6:>8.3f} "
            f"{info['masked_pixels'][i]:>6} {info['total_counts'][i]:>10.4g}  {file}"
        )
    flux = [(i, r) for i, r in enumerate(info.get("relative_flux_range", [])) if r is not None]
    if flux:
        low, high = min(r[0] for _, r in flux), max(r[1] for _, r in flux)
        lines.append(f"monitor in {len(flux)} of {len(info['files'])} files: frame flux {low:.3g}-{high:.3g} x each scan's mean "
                     "(modelled in the fit)")
    return "\n".join(lines)
