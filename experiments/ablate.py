"""Ablation grid runner: model recipes x fluence x seeds x any FitConfig option, scored against truth.

Each cell (one reconstruction, then ``ptyjax.chemistry.analyze`` and ``ptyjax.cluster.cluster`` on it)
runs in its own subprocess, so a crash or a hang loses only that cell; its row is appended to
``OUT.csv`` as soon as it finishes. Rerunning the same command skips the cells that already have a
row without error (resumable) and retries failed ones (a cell whose clustering fails keeps its other
scores and a ``note``). Simulated data (preset, fluence, seed) are made
once per (fluence, seed) in ``--workdir`` and reused; ``--data DIR [--truth FILE]`` scores a given
dataset instead. After every cell ``OUT.md`` (the command, every cell, means over seeds, the best model
per fluence and metric) is rewritten; ``OUT.png`` plots each metric against fluence at the end.

Columns: object NRMSE (median over energies, ``ptyjax.metrics.compare_to_truth``), OD spectral error
(RMS over energies and particle pixels, ``reconstruction_accuracy.od_spectrum_error``), E0 RMSE per edge
after one global offset, Ni/Mn mean relative error and adjusted Rand index of the clustering against
the truth phases (``ptyjax.metrics.compare_chemistry_to_truth``), the median Ni/Mn relative error, the
same scores of the best constant map (reference), epochs, final loss, wall time (fit only). Chemistry
and clustering run on the truth particle mask (the same pixels for every model).

Usage:
  python experiments/ablate.py --models independent,joint-smooth --fluences 3e6,1e5 --seeds 0,1 \
      --preset tiny --epochs 20 [--set KEY=V1,V2 ...] [--plugin FILE.py] [--out STEM]
  (``--set`` values are Python literals; lists of values, comma-separated at the top level, span the
  grid: ``--set object_step=0.5,1.0 --set 'object_options={"rank": 5}'``.)
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
FIELDS = ("preset", "fluence", "seed", "model", "options", "epochs", "nrmse_median", "od_rms", "e0_rmse_Mn_ev",
          "e0_rmse_Ni_ev", "ni_mn_rel_err", "ni_mn_median_rel_err", "ari", "n_groups", "final_loss", "wall_s", "e0_const_Mn_ev", "e0_const_Ni_ev", "ni_mn_const_median_rel_err",
          "error", "note")
# Metrics of the summary: (column, header, format, True if larger is better).
METRICS = (("nrmse_median", "NRMSE", ".4f", False), ("od_rms", "OD RMS", ".4f", False),
           ("e0_rmse_Mn_ev", "E0 RMSE Mn (eV)", ".2f", False), ("e0_rmse_Ni_ev", "E0 RMSE Ni (eV)", ".2f", False),
           ("ni_mn_rel_err", "Ni/Mn rel. err. (mean)", ".3f", False),
           ("ni_mn_median_rel_err", "Ni/Mn rel. err. (median)", ".3f", False), ("ari", "ARI", ".3f", True),
           ("wall_s", "wall (s)", ".0f", False))
# Reference scores of the best constant map (truth spread over the scored pixels), for the summary.
REFERENCES = (("e0_const_Mn_ev", "E0 RMSE Mn (eV)", ".2f"), ("e0_const_Ni_ev", "E0 RMSE Ni (eV)", ".2f"),
              ("ni_mn_const_median_rel_err", "Ni/Mn rel. err. (median)", ".3f"))
REFERENCE_OF = {"e0_rmse_Mn_ev": "e0_const_Mn_ev", "e0_rmse_Ni_ev": "e0_const_Ni_ev",
                "ni_mn_median_rel_err": "ni_mn_const_median_rel_err"}


# ---------------------------------------------------------------------------------------------------
# Grid


def split_top_level(text: str) -> list[str]:
    """Split ``text`` at commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    return parts + [current]


def literal(text: str):
    """A Python literal (number, bool, None, dict, ...), or the text itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_settings(assignments) -> dict[str, list]:
    """``["key=v1,v2", ...]`` -> ``{key: [v1, v2]}`` (values as Python literals)."""
    grid = {}
    for text in assignments:
        key, sep, values = text.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set expects KEY=V1,V2,..., got {text!r}")
        grid[key.strip()] = [literal(v) for v in split_top_level(values)]
    return grid


def cells(models, datasets, settings_grid: dict[str, list]):
    """Every (dataset, model, options) of the grid, datasets outermost (one simulation each)."""
    keys = list(settings_grid)
    for dataset in datasets:
        for model in models:
            for values in itertools.product(*(settings_grid[k] for k in keys)):
                yield dataset, model, dict(zip(keys, values))


def cell_key(row) -> tuple:
    return (str(row["preset"]), f"{float(row['fluence']):g}" if row["fluence"] not in ("", None) else "",
            str(row["seed"]), row["model"], row["options"])


def options_text(options: dict) -> str:
    return json.dumps(options, sort_keys=True)


# ---------------------------------------------------------------------------------------------------
# One cell (runs in a subprocess)


def chemistry_scores(results_path, truth_path) -> dict:
    """E0 RMSE per edge (eV, after one global offset), Ni/Mn relative error and ARI vs truth, from
    :func:`ptyjax.metrics.compare_chemistry_to_truth`, plus the scores of the best *constant* map on the
    same pixels (the truth's spread: a model at that level recovered no contrast) and the median
    Ni/Mn relative error (the mean is dominated by thin pixels).

    The chemistry uses the truth particle mask (resampled onto the reconstruction grid), so that every
    model is analysed on the same pixels and a failed automatic mask does not hide the model's effect.
    """
    from scipy import ndimage

    from ptyjax import results
    from ptyjax.chemistry import analyze
    from ptyjax.cluster import cluster
    from ptyjax.errors import PtyjaxError
    from ptyjax.metrics import truth_on_results_grid, compare_chemistry_to_truth

    names = ("phase_label", "edge_energy_Mn", "edge_energy_Ni", "ni_mn_ratio")
    truth = truth_on_results_grid(results_path, truth_path, names)
    label = np.nan_to_num(truth["phase_label"]).astype(int)
    analyze(results_path, mask=label > 0)
    out = {}
    try:
        cluster(results_path, seed=0)
    except PtyjaxError as error:  # e.g. no pixel with every feature finite: the other scores still count
        out["note"] = f"cluster: {error}"[:200]
    scores = compare_chemistry_to_truth(results_path, truth_path)
    out.update(e0_rmse_Mn_ev=scores.get("edge_energy_Mn_rmse_ev"), e0_rmse_Ni_ev=scores.get("edge_energy_Ni_rmse_ev"),
               ni_mn_rel_err=scores.get("ni_mn_ratio_mean_relative_error"), ari=scores.get("adjusted_rand_index"),
               n_groups=scores.get("n_groups"))
    # The same pixels as compare_chemistry_to_truth (default erosion of 2 px).
    chem = results.read_group(results_path, "chemistry")
    inside = ndimage.binary_erosion((label > 0) & np.asarray(chem["mask"], bool), iterations=2)
    for element in ("Mn", "Ni"):
        t, e = truth[f"edge_energy_{element}"], np.asarray(chem.get(f"edge_energy_{element}", np.nan), float)
        ok = inside & np.isfinite(t) & np.isfinite(e)
        out[f"e0_const_{element}_ev"] = float(np.sqrt(np.mean((t[ok] - np.median(t[ok])) ** 2))) if ok.any() else None
    t, r = truth["ni_mn_ratio"], np.asarray(chem.get("ni_mn_ratio", np.nan), float)
    ok = inside & np.isfinite(t) & np.isfinite(r)
    if ok.any():
        out["ni_mn_median_rel_err"] = float(np.median(np.abs(r[ok] / t[ok] - 1)))
        out["ni_mn_const_median_rel_err"] = float(np.median(np.abs(np.median(t[ok]) / t[ok] - 1)))
    return {k: v for k, v in out.items() if v is not None}


def run_cell(spec: dict) -> dict:
    """Reconstruct ``spec["data"]`` with ``spec["model"]`` and ``spec["options"]``; score if a truth is given."""
    sys.path.insert(0, str(HERE))
    from reconstruction_accuracy import od_spectrum_error

    from ptyjax import plugins, recipes
    from ptyjax.fit import reconstruct, save_reconstruction
    from ptyjax.metrics import compare_to_truth

    plugins.load_all(spec["plugins"])
    overrides = dict(spec["options"])
    if spec.get("epochs"):
        overrides["epochs"] = spec["epochs"]
    config = recipes.fit_config(spec["model"], **overrides)
    t0 = time.perf_counter()
    result = reconstruct(spec["data"], config, progress=False)
    row = dict(wall_s=time.perf_counter() - t0, epochs=len(result.loss_history), final_loss=result.loss_history[-1])
    path = Path(spec["results"])
    path.unlink(missing_ok=True)
    save_reconstruction(path, result, extra_config={"model": spec["model"]})
    if spec.get("truth"):
        scores = compare_to_truth(path, spec["truth"])
        row.update(nrmse_median=float(np.median(scores["nrmse"])),
                   od_rms=od_spectrum_error(path, spec["truth"], scores["global_shift_px"]))
        row.update(chemistry_scores(path, spec["truth"]))
    return row


def run_in_subprocess(spec: dict, timeout_s: float) -> dict:
    """:func:`run_cell` in a fresh Python; a crash, a timeout or a non-zero exit becomes ``error``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--cell", json.dumps(spec)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return dict(error=f"timeout after {timeout_s:g} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("ROW "):
            return json.loads(line[4:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return dict(error=f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"[:300])


# ---------------------------------------------------------------------------------------------------
# Outputs


def read_rows(csv_path: Path) -> list[dict]:
    """Rows of the CSV, the last row of each cell only."""
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    latest = {cell_key(r): r for r in rows}
    return list(latest.values())


def append_row(csv_path: Path, row: dict):
    new = not csv_path.exists()
    if not new:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            old_rows, old_fields = list(reader), tuple(reader.fieldnames or ())
        if old_fields != FIELDS:  # written by an older version of this script: rewrite with today's columns
            with open(csv_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows({k: r.get(k) or "" for k in FIELDS} for r in old_rows)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: _csv_value(row.get(k, "")) for k in FIELDS})


def _csv_value(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _number(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return np.nan
    return x


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _fmt(v, spec):
    x = _number(v)
    return "" if not np.isfinite(x) else format(x, spec)


def summarise(rows: list[dict]):
    """Means over seeds: ``{(preset, fluence, model, options): {metric: (mean, min, max, n)}}``."""
    groups: dict = {}
    for r in rows:
        if r.get("error"):
            continue
        groups.setdefault((r["preset"], r["fluence"], r["model"], r["options"]), []).append(r)
    out = {}
    for key, members in groups.items():
        stats = {}
        for column, *_ in METRICS + REFERENCES:
            values = np.array([_number(m.get(column)) for m in members])
            values = values[np.isfinite(values)]
            stats[column] = (values.mean(), values.min(), values.max(), values.size) if values.size else (np.nan,) * 3 + (0,)
        out[key] = stats
    return out


def varying_options(rows) -> list[str]:
    """Option names whose value differs between cells (the others are shown once)."""
    values: dict = {}
    for r in rows:
        for k, v in json.loads(r["options"] or "{}").items():
            values.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    return sorted(k for k, v in values.items() if len(v) > 1)


def _label(model, options, varying):
    extra = {k: v for k, v in json.loads(options or "{}").items() if k in varying}
    return model + ("" if not extra else " " + json.dumps(extra, sort_keys=True))


def write_markdown(stem: Path, rows: list[dict], command: str, title: str) -> str:
    varying = varying_options(rows)
    fixed = {}
    for r in rows:
        fixed.update({k: v for k, v in json.loads(r["options"] or "{}").items() if k not in varying})
    order = sorted(rows, key=lambda r: (-_number(r["fluence"]) if r["fluence"] else 0, r["model"], r["options"], r["seed"]))
    cell_rows = [(r["preset"], r["fluence"], r["seed"], _label(r["model"], r["options"], varying), r["epochs"],
                  *(_fmt(r[c], f) for c, _, f, _ in METRICS), (r["error"] or r.get("note") or "")[:80]) for r in order]
    summary = summarise(rows)
    keys = sorted(summary, key=lambda k: (-_number(k[1]) if k[1] else 0, k[2], k[3]))
    summary_rows = [(k[1], _label(k[2], k[3], varying), summary[k][METRICS[0][0]][3],
                     *(_fmt(summary[k][c][0], f) for c, _, f, _ in METRICS)) for k in keys]
    reference_rows = []
    for fluence in sorted({k[1] for k in keys}, key=lambda f: -_number(f) if f else 0):
        values = [[summary[k][c][0] for k in keys if k[1] == fluence] for c, _, _ in REFERENCES]
        reference_rows.append((fluence, *(_fmt(np.nanmean(v) if np.isfinite(v).any() else np.nan, f)
                                          for v, (_, _, f) in zip(values, REFERENCES))))
    best_lines = []
    for fluence in sorted({k[1] for k in keys}, key=lambda f: -_number(f) if f else 0):
        at = [k for k in keys if k[1] == fluence]
        parts = []
        for column, header, _, larger in METRICS[:-1]:
            scored = [(summary[k][column][0], k) for k in at if np.isfinite(summary[k][column][0])]
            if scored:
                value, k = (max if larger else min)(scored, key=lambda s: s[0])
                parts.append(f"{header}: **{_label(k[2], k[3], varying)}**")
        best_lines.append(f"- fluence {fluence or 'given data'}: " + "; ".join(parts))
    text = (f"# {title}\n\n```\n{command}\n```\n\n"
            + (f"Fixed options: `{json.dumps(fixed, sort_keys=True)}`\n\n" if fixed else "")
            + "## Mean over seeds\n\n"
            + markdown_table(["fluence (ph/frame)", "model", "seeds", *(h for _, h, _, _ in METRICS)], summary_rows)
            + "\n\nBest (mean over seeds) per fluence:\n\n" + "\n".join(best_lines)
            + "\n\nReference: the best *constant* map scores (the truth's own spread over the same pixels, mean "
            "over cells); a model at or above these values has recovered no contrast in that map.\n\n"
            + markdown_table(["fluence (ph/frame)", *(h for _, h, _ in REFERENCES)], reference_rows)
            + "\n\n## Every cell\n\n"
            + markdown_table(["preset", "fluence", "seed", "model", "epochs", *(h for _, h, _, _ in METRICS), "error / note"], cell_rows)
            + "\n")
    stem.with_suffix(".md").write_text(text)
    return text


def write_plot(stem: Path, rows: list[dict]):
    """Each metric against fluence, one line per model (mean over seeds, bars: min to max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    if not summary:
        return
    varying = varying_options(rows)
    metrics = METRICS[:-1]
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), constrained_layout=True)
    for ax, (column, header, _, larger) in zip(axes.flat, metrics):
        for model, options in sorted({(k[2], k[3]) for k in summary}):
            keys = sorted((k for k in summary if (k[2], k[3]) == (model, options) and k[1]), key=lambda k: _number(k[1]))
            x = np.array([_number(k[1]) for k in keys])
            mean, low, high = (np.array([summary[k][column][i] for k in keys]) for i in range(3))
            if np.isfinite(mean).any():
                ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=_label(model, options, varying))
        reference = REFERENCE_OF.get(column)
        if reference:
            level = np.nanmean([_number(r.get(reference)) for r in rows if not r.get("error")])
            if np.isfinite(level):
                line = ax.axhline(level, color="k", linestyle="--", linewidth=1, label="best constant map")
                ax.legend(handles=[line], fontsize=7, loc="upper right")
        ax.set_xscale("log")
        ax.set_xlabel("fluence (photons per frame)")
        ax.set_title(header + (" (higher is better)" if larger else " (lower is better)"), fontsize=10)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="independent,joint-smooth,low-rank,chemical-basis")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--fluences", default="3e6,1e5", help="photons per frame, comma-separated (simulated data)")
    parser.add_argument("--seeds", default="0,1", help="simulation seeds, comma-separated")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipes')")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="FitConfig option and its values")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help="plugin loaded in every cell")
    parser.add_argument("--data", help="a given dataset (CXI folder) instead of simulations")
    parser.add_argument("--truth", help="truth file of --data, for the scores")
    parser.add_argument("--out", help="output stem (default experiments/results/ablation_PRESET)")
    parser.add_argument("--workdir", help="simulated data and results files (default: a folder in the temp dir)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per cell before it is killed")
    parser.add_argument("--title", default="Ablation")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        print("ROW " + json.dumps(run_cell(json.loads(args.cell))), flush=True)
        return 0

    stem = Path(args.out or RESULTS_DIR / f"ablation_{args.preset}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_suffix(".csv")
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / f"ptyjax-ablate-{stem.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + sys.argv[1:])
    models = [m for m in args.models.split(",") if m]
    settings = parse_settings(args.set)
    if args.data:
        datasets = [dict(preset="", fluence="", seed="", data=str(Path(args.data).resolve()),
                         truth=str(Path(args.truth).resolve()) if args.truth else "")]
    else:
        datasets = [dict(preset=args.preset, fluence=float(f), seed=int(s)) for f in args.fluences.split(",") if f
                    for s in args.seeds.split(",") if s]
    done = {cell_key(r) for r in read_rows(csv_path) if not r["error"]}
    for dataset, model, options in cells(models, datasets, settings):
        row = dict(preset=dataset["preset"], fluence=dataset["fluence"], seed=dataset["seed"], model=model, options=options_text(options))
        if cell_key(row) in done:
            continue
        if "data" not in dataset:
            dataset.update(simulated(args.preset, dataset["fluence"], dataset["seed"], workdir))
        label = f"{dataset['preset'] or 'data'} fluence {dataset['fluence']} seed {dataset['seed']} {model} {row['options']}"
        tag = hashlib.sha1(label.encode()).hexdigest()[:10]
        spec = dict(data=dataset["data"], truth=dataset.get("truth", ""), model=model, options=options, epochs=args.epochs,
                    plugins=[str(Path(p).resolve()) for p in args.plugin], results=str(workdir / f"cell_{tag}.h5"))
        t0 = time.perf_counter()
        row.update(run_in_subprocess(spec, args.timeout))
        row.setdefault("error", "")
        append_row(csv_path, row)
        print(f"{label}: {time.perf_counter() - t0:.0f} s {row.get('error') or ''}", flush=True)
        write_markdown(stem, read_rows(csv_path), command, args.title)
    rows = read_rows(csv_path)
    print(write_markdown(stem, rows, command, args.title))
    write_plot(stem, rows)
    return 0


def simulated(preset: str, fluence: float, seed: int, workdir: Path) -> dict:
    """Simulate ``preset`` at ``fluence`` and ``seed`` once into ``workdir`` (reused when present)."""
    from ptyjax.simulate import PRESETS, simulate

    folder = workdir / f"{preset}_f{fluence:g}_s{seed}"
    truth = folder / "truth.h5"
    if not truth.exists():
        truth = simulate(PRESETS[preset].replace(fluence=fluence, seed=seed), folder)
    return dict(data=str(folder), truth=str(truth))


if __name__ == "__main__":
    sys.exit(main())
