"""Clustering variants on a finished run against the simulated truth: ARI and number of groups.

Usage: python experiments/cluster_small.py RESULTS.h5 TRUTH.h5 [--analyze] [--smooth PX] [--variants a,b]

RESULTS.h5 is a ``ptyjax demo``/``ptyjax run`` results file of the ``small`` preset (or any preset),
TRUTH.h5 its ``truth.h5``. The file is never modified: with ``--analyze`` the chemistry is recomputed
(``ptyjax analyze``, ``--smooth`` px, default 1 as the pipeline) on a temporary copy, otherwise the
stored ``/chemistry`` is used. Every variant clusters the same maps with
:func:`ptyjax.cluster.cluster_features`; the truth is used only to score. Prints a Markdown table:
ARI inside the particle eroded by 2 px (as :func:`ptyjax.metrics.compare_chemistry_to_truth`), ARI
over all particle pixels (as the report), K chosen, the Potts strength, BIC/ICL per K and seconds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

from ptyjax import cluster as cl
from ptyjax.metrics import truth_on_results_grid
from ptyjax.results import read_group

ALL = ("ni_mn_ratio", "edge_energy_Mn", "edge_energy_Ni", "electrons_per_metal")
# name: (features, options of cluster_features, drop_incomplete). drop_incomplete=True reproduces the
# former handling of missing features: a pixel with any NaN feature lost its whole data term.
VARIANTS = {
    "before: drop incomplete, BIC, strength 1": (ALL, dict(criterion="bic", spatial_strength=1.0), True),
    "marginalise missing, BIC, strength 1": (ALL, dict(criterion="bic", spatial_strength=1.0), False),
    "marginalise, ICL, strength 1": (ALL, dict(criterion="icl", spatial_strength=1.0), False),
    "marginalise, BIC, strength auto": (ALL, dict(criterion="bic", spatial_strength="auto"), False),
    "marginalise, ICL, strength auto (default)": (ALL, dict(), False),
    "default, no spatial prior": (ALL, dict(spatial_iterations=0, outliers="absorb"), False),
    "default, K fixed 3": (ALL, dict(n_groups=3), False),
    "default, without electrons_per_metal": (ALL[:3], dict(), False),
    "default, without edge_energy_Ni": (ALL[:2] + ALL[3:], dict(), False),
    "default, ratio + Mn edge only": (ALL[:2], dict(), False),
}


def score(labels, truth, eroded):
    inside = truth > 0
    return adjusted_rand_score(truth[eroded], labels[eroded]), adjusted_rand_score(truth[inside], labels[inside])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("truth")
    parser.add_argument("--analyze", action="store_true", help="recompute /chemistry on a temporary copy")
    parser.add_argument("--smooth", type=float, default=1.0, help="smooth_px of the analysis (default 1)")
    parser.add_argument("--variants", help="comma-separated indices of VARIANTS to run (default all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.results)
        if args.analyze:
            from ptyjax.chemistry import analyze

            path = Path(shutil.copy(path, Path(tmp) / "results.h5"))
            analyze(path, smooth_px=args.smooth)
        chem = read_group(path, "chemistry")
        truth = truth_on_results_grid(path, args.truth, ["phase_label"])["phase_label"]
    mask = np.asarray(chem["mask"], bool)
    truth = np.nan_to_num(truth, nan=0).astype(int)
    eroded = ndimage.binary_erosion((truth > 0) & mask, iterations=2)
    chosen = list(VARIANTS.items())
    if args.variants:
        chosen = [chosen[int(i)] for i in args.variants.split(",")]
    print("| variant | ARI (eroded 2 px) | ARI (all particle) | K | strength | BIC K=1.. | ICL K=1.. | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (features, options, drop_incomplete) in chosen:
        maps = {n: np.asarray(chem[n], float) for n in features}
        if drop_incomplete:
            incomplete = ~np.all([np.isfinite(m) for m in maps.values()], axis=0)
            maps = {n: np.where(incomplete, np.nan, m) for n, m in maps.items()}
        stds = {n: chem[f"{n}_std"] for n in features}
        start = time.perf_counter()
        res = cl.cluster_features(maps, mask, stds, seed=0, **options)
        seconds = time.perf_counter() - start
        eroded_ari, all_ari = score(res.labels, truth, eroded)
        fmt = lambda v: " ".join(f"{b - v.min():.0f}" for b in v)  # noqa: E731  relative to the minimum
        print(f"| {name} | {eroded_ari:.3f} | {all_ari:.3f} | {res.n_groups} | {res.spatial_strength:.2f} | {fmt(res.bic)} | {fmt(res.icl)} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
