"""Where the refined positions' errors come from: the same data fitted three ways, errors every few epochs.

Usage: python experiments/position_refinement.py DATA_DIR [--epochs 40] [--every 5] [--out FILE.md]

``DATA_DIR``: CXI files and the simulator's ``truth.h5`` (``ptyjax simulate``). Cases, all with the
default configuration from nominal positions:

* ``positions only``: the true object and probe held fixed (object and probe steps 0), positions
  refined from the first epoch: how fast the position steps themselves converge;
* ``joint, true start``: everything refined, starting from the true object and probe;
* ``joint, default``: the default run (probe and defocus from the data, flat object).

Errors are split by :func:`ptyjax.metrics.position_error_parts` into each energy's mean (the stack's
registration) and the per-point rest, and set against the Cramer-Rao bound of the per-point error for
the true object and probe under Poisson noise (Fisher information ``4 sum (d sqrt(I) / dr)^2``).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ptyjax import fit, metrics
from ptyjax.data import Dataset
from ptyjax.geometry import ObjectGrid
from ptyjax.model import LogObjectStack, Probe, Reconstruction, ScanPositions, amplitude_position_derivatives, object_patches
from ptyjax.simulate import load_truth

from reconstruction_accuracy import RESULTS_DIR, command_line, markdown_table


def true_params(problem: fit.Problem, truth: dict, positions_px) -> Reconstruction:
    """The truth's object (resampled onto the problem's grid) and probes, at ``positions_px`` (E, P, 2)."""
    truth_grid = ObjectGrid(truth["object"].shape[-2:], float(truth["pixel_size"]), tuple(truth["origin"]))
    obj = metrics.resample(truth["object"], truth_grid, problem.grid)
    obj = np.where(np.isfinite(obj), obj, 1.0)
    log_object = LogObjectStack(jnp.asarray(np.log(np.abs(obj)), jnp.float32), jnp.asarray(np.angle(obj), jnp.float32))
    return Reconstruction(log_object, Probe.from_complex(truth["probe"]), ScanPositions.at_nominal(positions_px))


def cramer_rao_m(problem: fit.Problem, truth: dict, chunk: int = 20) -> np.ndarray:
    """Cramer-Rao bound (m) of each point's 2-D position error (E, P) for the true object and probe."""
    true_px = problem.grid.to_pixels(np.asarray(truth["positions"]))
    n_points = true_px.shape[1]
    nominal = problem.nominal_px.copy()
    nominal[:, :n_points] = true_px
    params = true_params(problem, truth, nominal)
    fisher = []
    for start in range(0, n_points, chunk):
        indices = jnp.asarray(np.tile(np.arange(start, min(start + chunk, n_points)), (problem.n_energies, 1)), jnp.int32)
        derivatives = amplitude_position_derivatives(params, object_patches(params, problem.geometry, indices), problem.geometry.scale)
        # Poisson noise: Var sqrt(I) = 1/4, so the Fisher information is 4 sum (d sqrt(I) / dr)^2.
        fisher.append(np.stack([4 * np.asarray(jnp.sum(problem.pixel_weight * d**2, axis=(-2, -1))) for d in derivatives], -1))
    variance = np.sum(1.0 / np.concatenate(fisher, axis=1), axis=-1) * problem.grid.pixel_size**2
    return np.sqrt(variance)


def track(problem, truth, config, params, defocus, epochs: int, every: int, workdir: Path, name: str):
    """Fit ``epochs`` epochs, continuing exactly from a checkpoint every ``every``; rows of
    (epoch, per-energy nm, per-point nm, loss), and the last result."""
    checkpoint = workdir / f"{name}.ckpt"
    true_positions = np.asarray(truth["positions"])
    rows, result = [], None
    for epoch in range(every, epochs + 1, every):
        result = fit.run_fit(problem, dataclasses.replace(config, epochs=epoch), params=params, checkpoint=checkpoint, resume=True,
                             progress=False, defocus_m=defocus)
        energy, point = metrics.position_error_parts(result.positions_m()[:, : true_positions.shape[1]], true_positions)
        rows.append((epoch, energy * 1e9, point * 1e9, result.loss_history[-1]))
        print(name, rows[-1], flush=True)
    return rows, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "position_refinement_small.md")
    args = parser.parse_args()
    truth = load_truth(args.data / "truth.h5")
    dataset = Dataset.open(args.data)
    problem = fit.prepare(dataset)
    config = fit.FitConfig(converged_fall=0.0)  # fixed lengths: the table follows the epochs
    truth_start = true_params(problem, truth, problem.nominal_px)  # true object and probe, nominal positions
    cases = {
        "positions only": (dataclasses.replace(config, object_step=0.0, probe_step=0.0, position_start_epoch=0), truth_start, 0.0),
        "joint, true start": (dataclasses.replace(config, position_start_epoch=0), truth_start, 0.0),
        "joint, default": (config, None, fit.choose_defocus(problem, config, dataset.edges)),
    }
    tables, finals = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (case_config, params, defocus) in cases.items():
            rows, result = track(problem, truth, case_config, params, defocus, args.epochs, args.every, Path(tmp), name.replace(" ", "_"))
            tables[name] = rows
            path = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.h5"
            fit.save_reconstruction(path, result)
            finals[name] = np.median(metrics.compare_to_truth(path, args.data / "truth.h5")["nrmse"])
    bound = cramer_rao_m(problem, truth)
    nominal_energy, nominal_point = metrics.position_error_parts(problem.nominal_m[:, : bound.shape[1]], np.asarray(truth["positions"]))
    header = ["epoch"] + [f"{name}: per energy / per point (nm)" for name in tables]
    body = [[str(row[0][0])] + [f"{r[1]:.1f} / {r[2]:.1f}" for r in row] for row in zip(*tables.values())]
    finals_rows = [(name, f"{tables[name][-1][3]:.4g}", f"{finals[name]:.4f}") for name in tables]
    text = (f"# Position refinement: where the errors come from\n\n```\n{command_line()}\n```\n\n"
            f"{problem.n_energies} energies x {problem.point_valid.shape[1]} points; nominal positions off by "
            f"{nominal_energy * 1e9:.1f} nm per energy (drift) and {nominal_point * 1e9:.1f} nm per point (jitter), RMS. "
            f"Cramer-Rao bound of the per-point error (true object and probe, Poisson noise): "
            f"{np.sqrt(np.mean(bound**2)) * 1e9:.2f} nm RMS, median {np.median(bound) * 1e9:.2f} nm.\n\n"
            + markdown_table(header, body) + "\n\n" + markdown_table(["case", "final loss", "object NRMSE (median)"], finals_rows) + "\n")
    args.out.write_text(text)
    print(text)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
