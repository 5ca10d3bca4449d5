"""Does the spectral-smoothness prior alone move the fitted edge energies? A noise-free toy.

Usage: python experiments/prior_edge_bias.py TRUTH.h5 [--ratios 0.3,1,3,10] [--deltas none,0.005,0.002]

The true optical-density spectrum of the thickest fifth of the core (phase 1 of a simulator
``truth.h5``) is smoothed along energy exactly as the ``spectral_smoothness`` prior would do it for one
pixel whose data term has unit curvature: ``x = argmin |x - y|^2 / 2 + r sum_e dE_e rho(dx/dE)`` on the
half-OD (the log-amplitude the prior acts on), with rho quadratic or Huber (threshold ``delta`` per eV,
by iteratively reweighted least squares). ``r`` (``--ratios``) is the prior-to-data ratio. Both spectra
go through ``chemistry.fit_edge``. Prints the shift of each edge's fitted energy and the ratio of its
fitted jump. It is a bias of the reconstruction, not of the analysis; the chemistry metrics remove one
global offset per element and do not show it.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from ptyjax.chemistry import detect_edges, edge_window, fit_edge

# Share of the core's pixels, the thickest, whose mean spectrum is the toy's truth.
THICK_SHARE = 0.2


def smoothed(y, energy_ev, ratio, delta=None, iterations=60):
    """The prior's smoothing of the spectrum ``y`` (E,) at prior/data ``ratio``; Huber if ``delta``."""
    spacing = np.diff(energy_ev)
    difference = np.diff(np.eye(len(energy_ev)), axis=0)  # (E-1, E): x[e+1] - x[e]
    weights = np.ones_like(spacing)
    for _ in range(iterations if delta is not None else 1):
        x = np.linalg.solve(np.eye(len(y)) + ratio * difference.T @ np.diag(weights / spacing) @ difference, y)
        if delta is not None:
            slope = np.abs(difference @ x) / spacing
            weights = np.where(slope <= delta, 1.0, delta / np.maximum(slope, 1e-300))  # Huber's IRLS weights
    return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("truth")
    parser.add_argument("--ratios", default="0.3,1,3,10")
    parser.add_argument("--deltas", default="none,0.005,0.002", help="Huber thresholds (1/eV); none = quadratic")
    args = parser.parse_args(argv)
    with h5py.File(args.truth, "r") as f:
        energy, od, label, thickness = f["energy"][()], f["optical_density"][()], f["phase_label"][()], f["thickness"][()]
    core = label == 1
    thick = core & (thickness >= np.quantile(thickness[core], 1.0 - THICK_SHARE))
    spectrum = od[:, thick].mean(axis=1)
    elements = detect_edges(energy)
    print("| prior | prior/data ratio | " + " | ".join(f"{el} E0 shift (eV) | {el} jump ratio" for el in elements) + " |")
    print("|---" * (2 + 2 * len(elements)) + "|")
    reference = {el: fit_edge(energy[edge_window(energy, el, elements)], spectrum[edge_window(energy, el, elements)][None], el) for el in elements}
    for delta in args.deltas.split(","):
        delta = None if delta == "none" else float(delta)
        for ratio in map(float, args.ratios.split(",")):
            x = 2.0 * smoothed(spectrum / 2.0, energy, ratio, delta)
            cells = []
            for el in elements:
                window = edge_window(energy, el, elements)
                fit = fit_edge(energy[window], x[window][None], el)
                cells += [f"{float(fit.edge_energy[0] - reference[el].edge_energy[0]):+.3f}", f"{float(fit.edge_jump[0] / reference[el].edge_jump[0]):.3f}"]
            name = "quadratic" if delta is None else f"Huber {delta:g}/eV"
            print(f"| {name} | {ratio:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
