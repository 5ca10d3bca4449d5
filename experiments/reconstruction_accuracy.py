"""Reconstruction accuracy on a simulated dataset: simulate a preset, reconstruct it with the default
recipe and tabulate object NRMSE, phase FRC resolution, timing and position errors against the truth.

Usage: python experiments/reconstruction_accuracy.py [--preset small] [--epochs N] [--sampling S]
       [--max-energy EV] [--out FILE.md]

``--max-energy 7000`` keeps the Mn-edge energies only (one edge: the case where ``--sampling auto``
takes the native grid); ``--sampling exact|native-grid`` forces a sampler (ptyjax.sampling).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ptyjax import recipes, results, spectra
from ptyjax.fit import reconstruct, save_reconstruction
from ptyjax.geometry import ObjectGrid
from ptyjax.metrics import compare_to_truth, resample
from ptyjax.simulate import PRESETS, load_truth, simulate

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command that started this script, for the top of the report."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def fit_and_score(data_dir, truth_path, model: str, results_path, **overrides) -> dict:
    """Reconstruct the CXI files in ``data_dir`` with recipe ``model`` (``overrides``: FitConfig fields),
    write ``results_path`` and return :func:`ptyjax.metrics.compare_to_truth` plus timing (s), epochs
    and the OD-spectrum RMS error (:func:`od_spectrum_error`)."""
    config = recipes.fit_config(model, **overrides)
    t0 = time.perf_counter()
    result = reconstruct(data_dir, config, progress=False)
    wall = time.perf_counter() - t0
    save_reconstruction(results_path, result, extra_config={"model": model})
    scores = compare_to_truth(results_path, truth_path)
    scores.update(
        wall_s=wall,
        epoch_s=np.asarray(result.epoch_times),
        epochs=config.epochs,
        batch_size=config.batch_size,
        sampling=result.problem.geometry.with_sampling(config.sampling).sampling,
        od_rms=od_spectrum_error(results_path, truth_path, scores["global_shift_px"]),
    )
    return scores


def od_spectrum_error(results_path, truth_path, shift_px=(0.0, 0.0)) -> float:
    """RMS error of the per-pixel OD spectra inside the particle (truth ``phase_label > 0``).

    The reconstruction's OD is referenced per energy to its own background (complement of
    :func:`ptyjax.spectra.particle_mask`, inside the measured field ``/reconstruction/scanned``), which removes the one global complex offset the data cannot
    fix; the truth OD (absolute, empty region = 0) is resampled onto the reconstruction grid moved by
    ``shift_px`` (the global translation from :func:`compare_to_truth`); labels use nearest neighbour.
    """
    rec = results.read_group(results_path, "reconstruction")
    truth = load_truth(truth_path)
    obj = np.asarray(rec["object"])
    pixel = float(rec["pixel_size"])
    origin = np.asarray(rec["origin"], float) - np.asarray(shift_px, float) * pixel
    grid = ObjectGrid(obj.shape[-2:], pixel, tuple(origin))
    truth_grid = ObjectGrid(truth["optical_density"].shape[-2:], float(truth["pixel_size"]), tuple(np.asarray(truth["origin"], float)))
    od_truth = resample(truth["optical_density"], truth_grid, grid, order=1)
    label = resample(truth["phase_label"].astype(float), truth_grid, grid, order=0)
    inside = np.nan_to_num(label) > 0
    # Mask and background from the measured field only, as the pipeline's analysis takes them.
    fov = np.all(np.asarray(rec["scanned"]), axis=0) if "scanned" in rec else None
    background = spectra.background_region(spectra.particle_mask(obj, field_of_view=fov), field_of_view=fov)
    od = spectra.optical_density_stack(obj, background)
    residual = (od - od_truth)[:, inside]
    return float(np.sqrt(np.mean(residual**2)))


def summary_rows(s: dict) -> list[tuple[str, str]]:
    """(quantity, value) rows of the report table for the scores of :func:`fit_and_score`."""
    frc = np.asarray(s["frc_resolution_m"])
    frc_med = float(np.median(frc))
    epoch_s = np.asarray(s["epoch_s"])
    return [
        ("energies", f"{len(s['nrmse'])}"),
        ("object NRMSE, median over energies", f"{np.median(s['nrmse']):.4f}"),
        ("object NRMSE, min / max", f"{np.min(s['nrmse']):.4f} / {np.max(s['nrmse']):.4f}"),
        ("phase FRC(0.5) resolution, median", f"{frc_med * 1e9:.1f} nm = {frc_med / s['pixel_size_m']:.2f} px"),
        ("phase FRC(0.5) resolution, min / max", f"{frc.min() * 1e9:.1f} / {frc.max() * 1e9:.1f} nm"),
        ("object pixel size", f"{s['pixel_size_m'] * 1e9:.2f} nm"),
        ("OD spectra RMS error inside particle", f"{s['od_rms']:.4f}"),
        ("epochs (batch size)", f"{s['epochs']} ({s['batch_size']})"),
        ("wall time, total (incl. defocus trials + compile)", f"{s['wall_s']:.1f} s"),
        ("wall time per epoch, median (first epoch incl. compile)", f"{np.median(epoch_s):.2f} s ({epoch_s[0]:.2f} s)"),
        ("position RMS error, nominal -> refined", f"{s['position_rms_nominal_m'] * 1e9:.1f} -> {s['position_rms_refined_m'] * 1e9:.1f} nm"),
        ("refined: per-energy mean (stack registration) / per point", f"{s['position_rms_energy_m'] * 1e9:.1f} / {s['position_rms_point_m'] * 1e9:.1f} nm"),
        ("global shift found (px)", f"({s['global_shift_px'][0]:+.2f}, {s['global_shift_px'][1]:+.2f})"),
    ]


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    parser.add_argument("--model", default=recipes.DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--sampling", default="auto", choices=["auto", "exact", "native-grid"], help="frame sampler")
    parser.add_argument("--max-energy", type=float, help="simulate only the preset's energies up to this (eV)")
    parser.add_argument("--out", help="Markdown report (default experiments/results/reconstruction_PRESET.md)")
    args = parser.parse_args()
    out = Path(args.out or RESULTS_DIR / f"reconstruction_{args.preset}.md")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        preset = PRESETS[args.preset].replace(seed=args.seed)
        if args.max_energy is not None:
            preset = preset.replace(energies_ev=tuple(e for e in preset.energies_ev if e <= args.max_energy))
        truth = simulate(preset, Path(tmp) / "data")
        sim_s = time.perf_counter() - t0
        scores = fit_and_score(Path(tmp) / "data", truth, args.model, Path(tmp) / "results.h5", epochs=args.epochs,
                               sampling=args.sampling)
    rows = summary_rows(scores) + [("frame sampling", scores["sampling"]), ("simulation time", f"{sim_s:.1f} s")]
    text = (f"# Reconstruction accuracy: preset `{args.preset}`, model `{args.model}`, seed {args.seed}\n\n"
            f"```\n{command_line()}\n```\n\n" + markdown_table(["quantity", "value"], rows) + "\n\n"
            + markdown_table(["energy (eV)", "NRMSE", "FRC res. (nm)"],
                             [(f"{e:.1f}", f"{n:.4f}", f"{r * 1e9:.1f}") for e, n, r in
                              zip(scores["energy_ev"], scores["nrmse"], scores["frc_resolution_m"])]) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
