"""``smooth_px = "auto"`` against a simulated truth: the criterion and the ARI of every candidate.

Usage: python experiments/smoothing_choice.py RESULTS.h5 TRUTH.h5 [RESULTS.h5 TRUTH.h5 ...] [--candidates 0.5,0.75,1,1.5]

For each reconstruction (``ptyjax run``/``ptyjax demo`` results and the simulator's ``truth.h5``),
``ptyjax.pipeline.choose_smoothing`` analyses and clusters the stored object once per candidate, as the
pipeline does, and picks the candidate with the lowest mean posterior entropy. The script prints, per
candidate: the number of groups, the ARI against the true phases, and the criterion; the chosen
candidate is marked. The files are not modified.
"""

from __future__ import annotations

import argparse

import numpy as np

from ptyjax.cluster import adjusted_rand_index_inside
from ptyjax.metrics import truth_on_results_grid
from ptyjax.pipeline import SMOOTHING_CANDIDATES_PX, choose_smoothing
from ptyjax.results import read_group


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="RESULTS.h5 TRUTH.h5 pairs")
    parser.add_argument("--candidates", default=",".join(f"{c:g}" for c in SMOOTHING_CANDIDATES_PX))
    args = parser.parse_args(argv)
    if len(args.files) % 2:
        parser.error("give RESULTS.h5 TRUTH.h5 pairs")
    candidates = [float(c) for c in args.candidates.split(",")]
    print("| reconstruction | " + " | ".join(f"{c:g} px: K / ARI / entropy" for c in candidates) + " | chosen |")
    print("|---" * (len(candidates) + 2) + "|")
    for results, truth_path in zip(args.files[::2], args.files[1::2]):
        rec = read_group(results, "reconstruction")
        truth = np.nan_to_num(truth_on_results_grid(results, truth_path, ["phase_label"])["phase_label"], nan=0).astype(int)
        choice = choose_smoothing(np.asarray(rec["object"]), np.asarray(rec["energy"], float), float(rec["pixel_size"]),
                                  candidates=candidates, field_of_view=np.all(np.asarray(rec["scanned"]), axis=0))
        cells = [f"{g.n_groups} / {adjusted_rand_index_inside(g.labels, truth):.3f} / {choice.entropy[s]:.4f}" for s, g in choice.groups.items()]
        print(f"| {results} | " + " | ".join(cells) + f" | {choice.smooth_px:g} px |", flush=True)


if __name__ == "__main__":
    main()
