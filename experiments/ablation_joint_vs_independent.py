"""Ablation: joint reconstruction with the spectral prior (``joint-smooth``) against every energy on
its own (``independent``), at high and low fluence, on the same simulated data, epochs and batch size.

Reports the median-over-energies object NRMSE and the RMS error of the per-pixel OD spectra inside
the particle (see ``reconstruction_accuracy.od_spectrum_error``). Writes CSV and Markdown.

Usage: python experiments/ablation_joint_vs_independent.py [--preset tiny] [--fluences 3e6,1e5] [--seeds 0] [--epochs N]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconstruction_accuracy import RESULTS_DIR, command_line, fit_and_score, markdown_table  # noqa: E402

from ptyjax.simulate import PRESETS, simulate  # noqa: E402

MODELS = ("independent", "joint-smooth")
FIELDS = ("preset", "fluence", "seed", "model", "epochs", "nrmse_median", "od_rms", "frc_median_nm",
          "position_rms_refined_nm", "wall_s", "error")


def run_cell(data_dir, truth, model, results_path, epochs, batch_size) -> dict:
    """One reconstruction; a failure becomes a row with ``error`` set instead of stopping the sweep."""
    try:
        s = fit_and_score(data_dir, truth, model, results_path, epochs=epochs, batch_size=batch_size)
        return dict(epochs=s["epochs"], nrmse_median=float(np.median(s["nrmse"])), od_rms=s["od_rms"],
                    frc_median_nm=float(np.median(s["frc_resolution_m"])) * 1e9,
                    position_rms_refined_nm=s["position_rms_refined_m"] * 1e9, wall_s=s["wall_s"], error="")
    except Exception as exc:  # noqa: BLE001 -- keep the other cells
        traceback.print_exc()
        return dict(error=f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--fluences", default="3e6,1e5", help="photons per frame, comma-separated")
    parser.add_argument("--seeds", default="0", help="simulation seeds, comma-separated")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipes')")
    parser.add_argument("--batch", type=int, dest="batch_size", help="batch size (default: the recipes')")
    parser.add_argument("--out", help="output stem (default experiments/results/ablation_PRESET)")
    args = parser.parse_args()
    fluences = [float(f) for f in args.fluences.split(",") if f]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    stem = Path(args.out or RESULTS_DIR / f"ablation_{args.preset}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for fluence in fluences:
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "data"
                try:
                    truth = simulate(PRESETS[args.preset].replace(fluence=fluence, seed=seed), data)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    rows += [dict(preset=args.preset, fluence=fluence, seed=seed, model=m, error=f"simulate: {exc}") for m in MODELS]
                    continue
                for model in MODELS:
                    t0 = time.perf_counter()
                    row = dict(preset=args.preset, fluence=fluence, seed=seed, model=model)
                    row.update(run_cell(data, truth, model, Path(tmp) / f"{model}.h5", args.epochs, args.batch_size))
                    rows.append(row)
                    print(f"fluence {fluence:g} seed {seed} {model}: {row} ({time.perf_counter() - t0:.0f} s)", flush=True)
                    write(stem, rows)
    text = write(stem, rows)
    print(text)


def write(stem: Path, rows) -> str:
    """Write ``stem``.csv and ``stem``.md (rewritten after every cell, so a killed run keeps its rows)."""
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)

    def fmt(v, spec):
        return "" if v in ("", None) else format(v, spec)

    table = [(r["preset"], f"{r['fluence']:g}", r["seed"], r["model"], r.get("epochs", ""), fmt(r.get("nrmse_median"), ".4f"),
              fmt(r.get("od_rms"), ".4f"), fmt(r.get("frc_median_nm"), ".1f"), fmt(r.get("position_rms_refined_nm"), ".1f"),
              fmt(r.get("wall_s"), ".0f"), r.get("error", "")) for r in rows]
    text = (f"# Joint (spectral prior) vs independent reconstruction\n\n```\n{command_line()}\n```\n\n"
            + markdown_table(["preset", "fluence (ph/frame)", "seed", "model", "epochs", "NRMSE median", "OD RMS in particle",
                              "FRC median (nm)", "pos. RMS refined (nm)", "wall (s)", "error"], table) + "\n")
    stem.with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    main()
