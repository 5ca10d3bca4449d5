"""How well can the analysis separate the phases at all? Chemistry + clustering of the simulator's
*true* object against the reconstruction, with the same analysis settings.

Usage: python experiments/cluster_ceiling.py RESULTS.h5 TRUTH.h5 [--noise 0.001,0.003,0.01] [--smooth 0,1]
       [--denoise none,mnf]

The true optical density and (unwrapped) phase stacks of TRUTH.h5 are resampled (linear) onto the
results grid of RESULTS.h5 (after the global shift, as the report does), given complex Gaussian noise
of the stated relative level (log-amplitude and phase, rad), and analysed (``analyze_stack``) and
clustered (``cluster_features``, defaults, then with K fixed at 3) exactly as the pipeline does. The
reconstruction's own stack goes through the same steps. Prints a Markdown table: ARI over all
particle pixels and over the particle eroded by 2 px, K, the fraction of particle pixels labelled
wrong (after the best one-to-one matching of groups to phases) and the share of those wrong pixels
that lie within 1 px of a boundary between two phases. A truth-object score well below 1 is the
analysis's ceiling on this phantom, not a property of the reconstruction.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from ptyjax import cluster as cl
from ptyjax.chemistry import analyze_stack
from ptyjax.metrics import truth_on_results_grid
from ptyjax.results import read_group


def truth_object(results, truth):
    """(true object on the results grid (E, Ny, Nx), its field of view): vacuum (1) outside the truth."""
    stacks = truth_on_results_grid(results, truth, ["optical_density", "phase"], order=1)
    fov = np.all(np.isfinite(stacks["optical_density"]) & np.isfinite(stacks["phase"]), axis=0)
    log_obj = np.where(fov, -0.5 * stacks["optical_density"] + 1j * stacks["phase"], 0.0)
    return log_obj, fov


def phase_boundary_distance(labels):
    """Distance (px) of each pixel to the nearest pixel of another phase inside the particle."""
    edge = np.zeros(labels.shape, bool)
    for k in np.unique(labels[labels > 0]):
        region = labels == k
        edge |= region & ~ndimage.binary_erosion(region, border_value=1) & ndimage.binary_dilation((labels > 0) & ~region)
    return ndimage.distance_transform_edt(~edge)


def matched_labels(labels, truth):
    """Labels mapped to the true phase each group overlaps most (one-to-one over the particle, truth > 0);
    negative labels (-1 outside the mask, -2 unassigned) are kept, groups left unmatched become -3."""
    inside = truth > 0
    phases, groups = np.unique(truth[inside]), np.unique(labels[inside & (labels >= 0)])
    table = np.array([[np.count_nonzero(inside & (truth == p) & (labels == g)) for g in groups] for p in phases])
    rows, cols = linear_sum_assignment(-table)
    lookup = {int(groups[c]): int(phases[r]) for r, c in zip(rows, cols)}
    return np.where(labels < 0, labels, np.vectorize(lambda g: lookup.get(int(g), -3))(labels))


def score(labels, truth, mask):
    inside = truth > 0
    eroded = ndimage.binary_erosion(inside & mask, iterations=2)
    wrong = inside & (matched_labels(labels, truth) != truth)
    near = phase_boundary_distance(truth) <= 1
    return dict(ari=adjusted_rand_score(truth[inside], labels[inside]), ari_eroded=adjusted_rand_score(truth[eroded], labels[eroded]),
                wrong=wrong.sum() / inside.sum(), wrong_near_boundary=(wrong & near).sum() / max(wrong.sum(), 1))


def cluster_like_pipeline(chemistry, n_groups=None):
    features = [n for n in cl.THICKNESS_INDEPENDENT if n in chemistry]
    result = cl.cluster_chemistry(chemistry, features, n_groups=n_groups, seed=0)
    return result.labels, result.n_groups


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("truth")
    parser.add_argument("--noise", default="0.001,0.003,0.01", help="relative noise levels added to the true object")
    parser.add_argument("--smooth", default="0,1", help="smooth_px values of the analysis (pipeline default 1)")
    parser.add_argument("--denoise", default="none,mnf", help="denoise values of the analysis (pipeline default mnf)")
    args = parser.parse_args(argv)
    rec = read_group(args.results, "reconstruction")
    energy, pixel = np.asarray(rec["energy"], float), float(rec["pixel_size"])
    truth = np.nan_to_num(truth_on_results_grid(args.results, args.truth, ["phase_label"])["phase_label"], nan=0).astype(int)
    log_obj, truth_fov = truth_object(args.results, args.truth)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(log_obj.shape) + 1j * rng.standard_normal(log_obj.shape)
    stacks = [(f"truth + {level:g} noise", np.exp(log_obj + level * noise), truth_fov) for level in map(float, args.noise.split(","))]
    stacks.append(("reconstruction", np.asarray(rec["object"]), np.all(np.asarray(rec["scanned"]), axis=0)))
    print("| object | denoise | smooth_px | K chosen | ARI | ARI eroded 2 px | wrong px | of which near a phase boundary | ARI K=3 | ARI eroded K=3 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, obj, fov in stacks:
        for denoise, smooth in itertools.product(args.denoise.split(","), map(float, args.smooth.split(","))):
            analysis = analyze_stack(obj, energy, pixel, smooth_px=smooth, field_of_view=fov, denoise=denoise)
            chemistry = {k: v[0] for k, v in analysis["chemistry"].items()}
            mask = np.asarray(chemistry["mask"], bool)
            labels, k = cluster_like_pipeline(chemistry)
            free = score(labels, truth, mask)
            fixed = score(cluster_like_pipeline(chemistry, 3)[0], truth, mask)
            print(f"| {name} | {denoise} | {smooth:g} | {k} | {free['ari']:.3f} | {free['ari_eroded']:.3f} | {free['wrong']:.1%} | {free['wrong_near_boundary']:.0%} "
                  f"| {fixed['ari']:.3f} | {fixed['ari_eroded']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
