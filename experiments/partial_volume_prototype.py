"""Prototype (not in the library): a Gaussian mixture with partial-volume classes for mixed pixels.

Usage: python experiments/partial_volume_prototype.py RESULTS.h5 TRUTH.h5 [--denoise none|mnf]

Pixels at a boundary between two phases mix them, and with sharp enough chemistry (``--denoise
mnf``) they form groups of their own, which ICL counts (4-6 groups where the truth has 3). Here
every pair of pure groups (A, B) gets a partial-volume class: the features a pixel would have with
a metal fraction beta of A mixed with B (beta on a 9-point grid in 0.1..0.9), along the physical
mixing path. Ni/Mn comes from the mixed amounts, each edge energy is weighted by its element's
amount, and electrons per metal is linear. The covariance is ``beta^2 C_A + (1 - beta)^2 C_B``
plus each pixel's noise. It follows MRI partial-volume tissue models (Shattuck et al., NeuroImage
13, 856 (2001)). EM fits pure weights, means and covariances (the covariances with the mean pixel
noise subtracted, not the full deconvolution) and the weights of the partial-volume classes.
Partial-volume pixels are labelled with the phase they hold most of. There is no spatial prior and
no missing features: only pixels with every feature measured are scored, so the ARI is not
comparable to the pipeline's. Prints BIC, ICL, the smallest pure weight and the ARI per K, with and
without the partial-volume classes.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from ptyjax import cluster as cl
from ptyjax.chemistry import analyze_stack
from ptyjax.metrics import truth_on_results_grid
from ptyjax.results import read_group

FEATURES = ("ni_mn_ratio", "edge_energy_Mn", "edge_energy_Ni", "electrons_per_metal")
BETA = np.linspace(0.1, 0.9, 9)  # metal fraction of A in a partial-volume pixel


def mixing_path(a, b):
    """Features (len(BETA), 4) of a pixel with metal fraction beta of phase ``a`` and 1 - beta of ``b``
    (physical feature vectors in the order of :data:`FEATURES`)."""
    ni_a, mn_a = a[0] / (1 + a[0]), 1 / (1 + a[0])
    ni_b, mn_b = b[0] / (1 + b[0]), 1 / (1 + b[0])
    beta = BETA[:, None]
    ni, mn = beta * ni_a + (1 - beta) * ni_b, beta * mn_a + (1 - beta) * mn_b
    e_mn = (beta * mn_a * a[1] + (1 - beta) * mn_b * b[1]) / mn  # amount-weighted edge positions
    e_ni = (beta * ni_a * a[2] + (1 - beta) * ni_b * b[2]) / ni
    return np.concatenate([ni / mn, e_mn, e_ni, beta * a[3] + (1 - beta) * b[3]], axis=1)


class Problem:
    def __init__(self, x_phys, std_phys):
        self.center, self.scale = cl.robust_standardisation(x_phys)
        self.x = (x_phys - self.center) / self.scale
        self.noise = (std_phys / self.scale) ** 2

    def partial_volume(self, means, covs, a, b):
        """Standardised path means (len(BETA), F) and covariances between groups ``a`` and ``b``."""
        phys = means * self.scale + self.center
        path = (mixing_path(phys[a], phys[b]) - self.center) / self.scale
        return path, np.array([t**2 * covs[a] + (1 - t) ** 2 * covs[b] for t in BETA])

    def pv_log_density(self, means, covs, pairs):
        out = [logsumexp(cl.component_log_likelihood(self.x, self.noise, *self.partial_volume(means, covs, a, b))[0], axis=1)
               - np.log(len(BETA)) for a, b in pairs]
        return np.array(out).T if out else np.zeros((len(self.x), 0))

    def fit(self, k, partial_volume, iterations=40):
        n, f = self.x.shape
        with threadpool_limits(limits=1):
            weights, means, covs, _, _ = cl._best_fit(self.x, self.noise, np.ones(n, bool), k, 0, 4, 0.01)
        pairs = list(itertools.combinations(range(k), 2)) if partial_volume else []
        w = np.concatenate([weights * 0.9, np.full(len(pairs), 0.1 / len(pairs))]) if pairs else weights
        for _ in range(iterations):
            joint = np.concatenate([cl.component_log_likelihood(self.x, self.noise, means, covs)[0],
                                    self.pv_log_density(means, covs, pairs)], axis=1) + np.log(w)
            total = logsumexp(joint, axis=1)
            resp = np.exp(joint - total[:, None])
            w = resp.mean(axis=0)
            pure = resp[:, :k]
            mass = pure.sum(axis=0) + 1e-12
            means = pure.T @ self.x / mass[:, None]
            for j in range(k):
                d = self.x - means[j]
                c = (d * pure[:, j : j + 1]).T @ d / mass[j] - np.diag((pure[:, j : j + 1] * self.noise).sum(0) / mass[j])
                values, vectors = np.linalg.eigh(c)
                covs[j] = (vectors * np.maximum(values, 1e-3)) @ vectors.T
        n_params = k * (f + f * (f + 1) // 2) + len(w) - 1
        bic = -2 * total.sum() + n_params * np.log(n)
        icl = bic - 2 * np.sum(np.log(np.maximum(resp.max(axis=1), 1e-300)))
        labels = np.argmax(resp, axis=1)
        for p, (a, b) in enumerate(pairs):
            mixed = labels == k + p
            if mixed.any():
                loglik = cl.component_log_likelihood(self.x[mixed], self.noise[mixed], *self.partial_volume(means, covs, a, b))[0]
                post = np.exp(loglik - logsumexp(loglik, axis=1, keepdims=True))
                labels[mixed] = np.where(post[:, BETA > 0.5].sum(axis=1) > 0.5, a, b)
        return bic, icl, w[:k].min() / w[:k].sum(), labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("truth")
    parser.add_argument("--denoise", default="mnf", choices=["none", "mnf"])
    args = parser.parse_args(argv)
    rec = read_group(args.results, "reconstruction")
    analysis = analyze_stack(np.asarray(rec["object"]), np.asarray(rec["energy"], float), float(rec["pixel_size"]), smooth_px=1.0,
                             field_of_view=np.all(np.asarray(rec["scanned"]), axis=0), denoise=args.denoise)
    chemistry = {k: v[0] for k, v in analysis["chemistry"].items()}
    mask = np.asarray(chemistry["mask"], bool)
    silent = ~cl.absorber_detected(chemistry)
    x = np.stack([np.where(silent, np.nan, chemistry[n])[mask] for n in FEATURES], axis=1)
    std = np.stack([chemistry[n + "_std"][mask] for n in FEATURES], axis=1)
    complete = np.all(np.isfinite(x) & np.isfinite(std), axis=1)
    truth = np.nan_to_num(truth_on_results_grid(args.results, args.truth, ["phase_label"])["phase_label"], nan=0).astype(int)
    truth = truth[mask][complete]
    problem = Problem(x[complete], std[complete])
    print(f"{complete.sum()} pixels with every feature, denoise {args.denoise}")
    print("| partial-volume classes | K | BIC | ICL | smallest pure weight | ARI |")
    print("|---|---|---|---|---|---|")
    for partial_volume in (False, True):
        rows = [(k, *problem.fit(k, partial_volume)) for k in range(1, 6)]
        for k, bic, icl, w_min, labels in rows:
            print(f"| {'yes' if partial_volume else 'no'} | {k} | {bic:.0f} | {icl:.0f} | {w_min:.3f} | {adjusted_rand_score(truth, labels):.3f} |")
        allowed = [r for r in rows if r[3] >= 0.02 or r[0] == 1]
        print(f"| {'yes' if partial_volume else 'no'} | chosen: BIC {min(allowed, key=lambda r: r[1])[0]}, ICL {min(allowed, key=lambda r: r[2])[0]} | | | | |", flush=True)


if __name__ == "__main__":
    main()
