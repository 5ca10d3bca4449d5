"""Spectral denoising before the edge fits (``--denoise none|mnf``) against a simulated truth.

Usage: python experiments/denoise_chemistry.py RESULTS.h5 TRUTH.h5 [RESULTS.h5 TRUTH.h5 ...] [--smooth PX]
       [--edge-spectra od,od+phase]

For each reconstruction (a ``ptyjax run``/``ptyjax demo`` results file and its simulator
``truth.h5``), the stored object stack is analysed as ``ptyjax analyze`` does (``analyze_stack``
with the measured field of view, ``--smooth`` px, default 1 as the pipeline) once per denoise
method and ``--edge-spectra`` value (default od), and clustered as the pipeline does. Prints a Markdown
table: groups (ICL, boundary groups merged), ARI over all particle pixels and over the particle
eroded by 2 px, share of wrong pixels (best one-to-one matching), and against the truth inside
the particle eroded by 2 px: RMSE of the Mn and Ni edge energies (after one global offset), mean
and median relative error of Ni/Mn, and how often the 1-sigma interval covers the error of each.
The files are not modified.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy import ndimage

from ptyjax.chemistry import DENOISE_METHODS, analyze_stack
from ptyjax.metrics import chemistry_errors, truth_on_results_grid
from ptyjax.results import read_group

from cluster_ceiling import cluster_like_pipeline, score


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="RESULTS.h5 TRUTH.h5 pairs")
    parser.add_argument("--smooth", type=float, default=1.0, help="smooth_px of the analysis (pipeline default 1)")
    parser.add_argument("--edge-spectra", default="od", help="comma-separated edge_spectra values (od, od+phase)")
    args = parser.parse_args(argv)
    if len(args.files) % 2:
        parser.error("give RESULTS.h5 TRUTH.h5 pairs")
    print("| reconstruction | denoise | edge spectra | K | ARI | ARI eroded | wrong px | Mn E0 RMSE (eV) | Ni E0 RMSE (eV) "
          "| Ni/Mn mean / median rel. error | 1-sigma coverage Mn E0, Ni E0, Ni/Mn |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for results, truth_path in zip(args.files[::2], args.files[1::2]):
        rec = read_group(results, "reconstruction")
        fov = np.all(np.asarray(rec["scanned"]), axis=0)
        truth = truth_on_results_grid(results, truth_path, ["phase_label", "edge_energy_Mn", "edge_energy_Ni", "ni_mn_ratio"])
        labels_true = np.nan_to_num(truth["phase_label"], nan=0).astype(int)
        for denoise, spectra in itertools.product(DENOISE_METHODS, args.edge_spectra.split(",")):
            analysis = analyze_stack(np.asarray(rec["object"]), np.asarray(rec["energy"], float), float(rec["pixel_size"]),
                                     smooth_px=args.smooth, field_of_view=fov, denoise=denoise, edge_spectra=spectra)
            chemistry = {k: v[0] for k, v in analysis["chemistry"].items()}
            mask = np.asarray(chemistry["mask"], bool)
            labels, k = cluster_like_pipeline(chemistry)
            s = score(labels, labels_true, mask)
            inside = ndimage.binary_erosion((labels_true > 0) & mask, iterations=2)
            e = chemistry_errors(chemistry, truth, inside, ("edge_energy_Mn", "edge_energy_Ni", "ni_mn_ratio"))
            print(f"| {results} | {denoise} | {spectra} | {k} | {s['ari']:.3f} | {s['ari_eroded']:.3f} | {s['wrong']:.1%} | {e['edge_energy_Mn_rmse_ev']:.3f} "
                  f"| {e['edge_energy_Ni_rmse_ev']:.3f} | {e['ni_mn_ratio_mean_relative_error']:.1%} / "
                  f"{e['ni_mn_ratio_median_relative_error']:.1%} | {e['edge_energy_Mn_coverage']:.2f}, "
                  f"{e['edge_energy_Ni_coverage']:.2f}, {e['ni_mn_ratio_coverage']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
