"""Where do the clustering's wrong pixels come from? An error budget of the groups in a results file
against a simulated truth.

Usage: python experiments/cluster_error_budget.py RESULTS.h5 TRUTH.h5 [RESULTS.h5 TRUTH.h5 ...]

For each pair (a ``ptyjax run``/``ptyjax demo`` results file with ``/chemistry`` and ``/clustering``,
and its simulator ``truth.h5``) prints, in Markdown:

1. the ARI of the stored groups and the confusion table (true phase x group; -2 = unassigned,
   e.g. no edge detected; -1 = outside the analysis mask);
2. *oracle* ARIs: the same labels with one kind of error corrected from the truth (unassigned
   pixels; pixels given another phase's group; the outer 2 px of the particle), i.e. what each kind
   of error costs;
3. per depth from the particle's edge (px, outside the phase-3 patches): the share of each true
   phase, the median signal-to-noise of each edge's jump (``edge_jump / edge_jump_std``) and of the
   Mn edge-energy contrast between the two phases present (true shift / ``edge_energy_Mn_std``),
   and the share of wrong pixels. Where the per-pixel contrast is a few sigma, a per-pixel
   classifier *must* mislabel a few per cent of the pixels whatever the clustering: the budget
   tells whether a gap to ARI 1 is the analysis's or the data's.

Groups are matched to phases one-to-one by the largest overlap (``cluster_ceiling.matched_labels``).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

from ptyjax.metrics import truth_on_results_grid
from ptyjax.results import read_group

from cluster_ceiling import matched_labels

DEPTH_BINS_PX = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 1000)


def budget(results, truth_path):
    chemistry, clustering = read_group(results, "chemistry"), read_group(results, "clustering")
    truth = truth_on_results_grid(results, truth_path, ["phase_label", "edge_energy_Mn"])
    phase = np.nan_to_num(truth["phase_label"], nan=0).astype(int)
    labels = np.asarray(clustering["labels"])
    inside = phase > 0
    as_phase = matched_labels(labels, phase)
    wrong = inside & (as_phase != phase)
    depth = ndimage.distance_transform_edt(inside)

    def ari(lab):
        return adjusted_rand_score(phase[inside], lab[inside])

    print(f"\n## {results}\n")
    print(f"ARI {ari(labels):.3f}, {wrong.sum() / inside.sum():.1%} of {inside.sum()} particle pixels wrong\n")
    groups = np.unique(labels[inside])
    print("| true phase | " + " | ".join(f"group {g}" for g in groups) + " |")
    print("|---" * (len(groups) + 1) + "|")
    for p in np.unique(phase[inside]):
        print(f"| {p} | " + " | ".join(str(np.count_nonzero(inside & (phase == p) & (labels == g))) for g in groups) + " |")
    oracles = {
        "unassigned (-2) and outside (-1) pixels corrected": np.where(labels < 0, phase, as_phase),
        "pixels in another phase's group corrected": np.where((as_phase > 0) & (as_phase != phase), phase, as_phase),
        "outer 2 px of the particle corrected": np.where(depth <= 2, phase, as_phase),
    }
    print("\n| oracle | ARI |\n|---|---|")
    for name, lab in oracles.items():
        print(f"| {name} | {ari(lab):.3f} |")

    # Rim-like profile: outside the patches (phase 3), by depth from the particle edge.
    shift = np.asarray(truth["edge_energy_Mn"], float)
    core_e0 = np.nanmedian(shift[phase == 1])
    print("\n| depth (px) | pixels | share per phase 1/2 | Mn jump SNR | Ni jump SNR | Mn E0 contrast of phase 2 (sigma) | wrong |")
    print("|---|---|---|---|---|---|---|")
    for lo, hi in zip(DEPTH_BINS_PX[:-1], DEPTH_BINS_PX[1:]):
        sel = inside & (phase != 3) & (depth > lo) & (depth <= hi)
        if not sel.any():
            continue
        snr = {el: np.nanmedian(chemistry[f"edge_jump_{el}"][sel] / chemistry[f"edge_jump_{el}_std"][sel]) for el in ("Mn", "Ni")}
        rim = sel & (phase == 2)
        contrast = np.nanmedian(np.abs(shift[rim] - core_e0) / chemistry["edge_energy_Mn_std"][rim]) if rim.any() else np.nan
        shares = "/".join(f"{np.mean(phase[sel] == p):.2f}" for p in (1, 2))
        hi_text = "inf" if hi == DEPTH_BINS_PX[-1] else hi
        print(f"| ({lo}, {hi_text}] | {sel.sum()} | {shares} | {snr['Mn']:.1f} | {snr['Ni']:.1f} | {contrast:.1f} | {wrong[sel].mean():.1%} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="RESULTS.h5 TRUTH.h5 pairs")
    args = parser.parse_args(argv)
    if len(args.files) % 2:
        parser.error("give RESULTS.h5 TRUTH.h5 pairs")
    with np.errstate(invalid="ignore", divide="ignore"):
        for results, truth_path in zip(args.files[::2], args.files[1::2]):
            budget(results, truth_path)


if __name__ == "__main__":
    main()
