"""Time the vectorised edge fit on N synthetic Mn K spectra (default 10^6) and, if Larch is importable,
Larch's per-spectrum ``pre_edge`` on a sample, scaled to N.  Usage: python experiments/bench_edge_fit.py --n 100000"""

import argparse
import time

import jax.numpy as jnp
import numpy as np

from ptyjax import chemistry as ch


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of spectra")
    parser.add_argument("--larch-sample", type=int, default=200, help="spectra timed with Larch")
    args = parser.parse_args()
    e_tab = ch._tabulated_edge("Mn")
    energy = np.concatenate([np.arange(-40, -8, 4.0), np.arange(-8, 16, 0.8), np.arange(16, 70, 6.0)]) + 6548.0
    truth = np.array([0.3, 1e-3, 0.08, 6548.0 - e_tab, 1.16, 0.4, 3.0, 4.0, -2e-3], np.float32)
    clean = np.asarray(ch.xanes_model(jnp.asarray(truth), jnp.asarray(energy - e_tab)), dtype=np.float32)
    spectra = clean + np.random.default_rng(0).normal(0, 0.002, (args.n, len(energy))).astype(np.float32)
    ch.fit_edge(energy, spectra[:16], "Mn")  # compile outside the timing (small chunk shape differs: warm-up only)
    t0 = time.perf_counter()
    fit = ch.fit_edge(energy, spectra, "Mn")
    ours = time.perf_counter() - t0
    print(f"ptyjax fit_edge: {args.n} spectra x {len(energy)} energies in {ours:.2f} s "
          f"({args.n / ours:.0f} spectra/s), median E0 error {np.nanmedian(fit.edge_energy) - 6548.0:+.4f} eV")
    try:
        from larch.xafs import pre_edge
    except ImportError:
        print("larch not importable: no comparison (see tests/data/make_larch_reference.py for a throw-away venv)")
        return
    k = min(args.larch_sample, args.n)
    t0 = time.perf_counter()
    for mu in spectra[:k].astype(np.float64):
        pre_edge(energy, mu)
    larch = (time.perf_counter() - t0) * args.n / k
    print(f"larch pre_edge loop (scaled from {k}): {larch:.1f} s for {args.n}; ratio larch/ptyjax = {larch / ours:.1f}")


if __name__ == "__main__":
    main()
