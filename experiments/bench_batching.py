"""Minibatch layout: points spread evenly over ceil(P / B) batches (ptyjax) against the earlier layout,
whose last batch was padded up to B with empty frames. Epoch time and loss, side by side in one process.

Usage: python experiments/bench_batching.py DATA_DIR [--batch 16] [--epochs 8] [--repeats 2]

DATA_DIR: CXI files (e.g. the ``data`` folder of ``ptyjax demo``). Each layout runs ``--repeats`` times,
alternating, with the default recipe and the defocus fixed (so only the layout differs); the median
epoch excludes each run's first (compiling) epoch. Prints a Markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from ptyjax import fit, recipes


def padded_last_batch(point_valid, batch_size, seed, epoch):
    """The earlier layout (baseline only): ceil(P / B) batches of exactly B, the last one padded."""
    rng = np.random.default_rng([seed, epoch])
    n_e, p_max = point_valid.shape
    n_batches = max(1, math.ceil(p_max / batch_size))
    indices = np.zeros((n_e, n_batches * batch_size), np.int32)
    weights = np.zeros((n_e, n_batches * batch_size), np.float32)
    for e in range(n_e):
        order = rng.permutation(np.flatnonzero(point_valid[e]))
        indices[e, : len(order)], indices[e, len(order):], weights[e, : len(order)] = order, order[0], 1.0
    shape = (n_e, n_batches, batch_size)
    return indices.reshape(shape).transpose(1, 0, 2), weights.reshape(shape).transpose(1, 0, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--defocus", type=float, default=2.2e-4, help="fixed probe defocus (m), skipping the trials")
    args = parser.parse_args(argv)
    layouts = {"padded last batch (before)": padded_last_batch, "even batches (ptyjax)": fit.epoch_batches}
    epochs, losses = {k: [] for k in layouts}, {k: [] for k in layouts}
    for _ in range(args.repeats):
        for name, layout in layouts.items():
            fit.epoch_batches = layout  # the engine looks it up at run time
            config = recipes.fit_config(recipes.DEFAULT_MODEL, epochs=args.epochs, batch_size=args.batch,
                                        defocus_m=args.defocus, checkpoint_every=0)
            result = fit.reconstruct(args.data, config, progress=False)
            epochs[name] += list(result.epoch_times[1:])
            losses[name].append(result.loss_history[-1])
    fit.epoch_batches = layouts["even batches (ptyjax)"]
    print(f"| layout (batch {args.batch}) | median epoch (s) | loss after {args.epochs} epochs |\n|---|---|---|")
    for name in layouts:
        print(f"| {name} | {np.median(epochs[name]):.3f} | {np.median(losses[name]):.3g} |")
    ratio = np.median(epochs["even batches (ptyjax)"]) / np.median(epochs["padded last batch (before)"])
    print(f"\nepoch ratio even / padded: {ratio:.3f}")


if __name__ == "__main__":
    main()
