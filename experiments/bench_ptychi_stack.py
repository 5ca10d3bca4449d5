"""ptyjax vs Pty-chi (LSQML) epoch time and accuracy on a whole multi-energy stack, side by side in one run.

Pty-chi reconstructs one energy at a time, so the stack costs it one run per energy; ptyjax fits all
energies jointly (one common grid, spectral prior). Both start from the simulator's true probes with
positions fixed (as ``bench_ptychi.py``); the table compares ptyjax's joint epoch with the sum over
energies of Pty-chi's epoch (each the median after the first), and both engines' accuracy per energy
after the same number of epochs (complex NRMSE and phase FRC against the simulator's truth).

    python experiments/bench_ptychi_stack.py --preset small --python /tmp/ptychi-venv/bin/python

(Pty-chi in its own virtual environment: see ``bench_ptychi.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_ptychi import PTYCHI, accuracy  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/tmp/ptychi-venv/bin/python", help="interpreter with ptychi and torch")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per engine (the first is not timed)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--sampling", default="auto,native-grid", help="comma-separated ptyjax frame samplers to time")
    parser.add_argument("--ptychi-malloc", default="system,kept",
                        help="Pty-chi's allocator runs: 'system' (as installed) and/or 'kept' (ptyjax.hostmemory's glibc settings)")
    parser.add_argument("-o", "--output", default=str(HERE / "results" / "bench_ptychi_stack.md"))
    args = parser.parse_args(argv)

    from ptyjax import fit, hostmemory
    from ptyjax.data import Dataset
    from ptyjax.simulate import PRESETS, load_truth, simulate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = load_truth(simulate(PRESETS[args.preset], tmp / "data"))
        dataset = Dataset.open(tmp / "data")
        probes = np.asarray(truth["probe"], np.complex64)  # (E, M, N, N)
        problem = fit.prepare(dataset)
        ours = {}
        for sampling in args.sampling.split(","):
            # The prior from the first epoch: every timed epoch pays for it, as a long run's epochs do.
            config = fit.FitConfig(epochs=args.epochs, converged_fall=0.0, batch_size=args.batch, refine_positions=False, checkpoint_every=0,
                                   sampling=sampling, prior_start_epoch=0)
            result = fit.run_fit(problem, config, params=fit.initial_params(problem, config, probe=probes), progress=False)
            scores = [accuracy(result.object()[e], truth, e) for e in range(len(dataset))]
            ours[problem.geometry.with_sampling(sampling).sampling] = (float(np.median(result.epoch_times[1:])), scores)
        theirs = {}
        for malloc in args.ptychi_malloc.split(","):
            env = dict(os.environ, **({k: str(v) for k, v in hostmemory.settings().items()} if malloc == "kept" else {}))
            times, scores = [], []
            for e in range(len(dataset)):
                dx = float(dataset.pixel_sizes_m[e])
                path = tmp / f"{malloc}-e{e}" / "data.npz"
                path.parent.mkdir()
                np.savez(path, frames=dataset.load_all(e), positions_px=dataset.positions_m(e) / dx, probe=probes[e], pixel_size_m=dx)
                proc = subprocess.run([args.python, "-c", PTYCHI, str(path), str(args.epochs), str(args.batch), str(args.threads),
                                       str(args.epochs)], capture_output=True, text=True, timeout=600, env=env)
                if "RESULT" not in proc.stdout:
                    raise SystemExit(f"Pty-chi failed on energy {e}: {proc.stderr[-2000:]}")
                times.append(float(np.median(json.loads(proc.stdout.split("RESULT", 1)[1])["epoch_times"][1:])))
                their_obj = np.load(path.parent / "ptychi_objects.npz")[str(args.epochs)]
                scores.append(accuracy(their_obj, truth, e, pixel_size_m=dx))
            theirs[malloc] = (times, scores)
    # The baseline: Pty-chi as installed if it ran, else with the same allocator settings as ptyjax.
    baseline = "system" if "system" in theirs else next(iter(theirs))
    total = float(np.sum(theirs[baseline][0]))
    rows = "".join(f"| ptyjax (joint, `{name}` sampling) | {t:.3f} | {t / total:.2f} | {_quality(scores)} |\n" for name, (t, scores) in ours.items())
    rows += "".join(f"| Pty-chi LSQML, {_MALLOC[m]} (sum of {len(t)} runs; per energy {np.min(t):.3f}-{np.max(t):.3f}) | {np.sum(t):.3f} | "
                    f"{np.sum(t) / total:.2f} | {_quality(sc)} |\n" for m, (t, sc) in theirs.items())
    text = (f"# ptyjax vs Pty-chi LSQML on a whole stack (CPU, same data)\n\n"
            f"Command: `python experiments/bench_ptychi_stack.py --preset {args.preset} --epochs {args.epochs} --batch {args.batch} "
            f"--threads {args.threads} --ptychi-malloc {args.ptychi_malloc}{_output_option(args.output)}`\n\n"
            f"{args.preset} preset: {len(dataset)} energies x {problem.point_valid.shape[1]} positions x {problem.geometry.frame_size}^2, "
            f"1 mode, true probes, positions fixed. ptyjax: one joint fit (spectral prior; `exact` is the default for this stack, "
            f"see ptyjax.sampling), with its glibc malloc settings (ptyjax.hostmemory); Pty-chi: one run per energy, as installed "
            f"and with the same malloc settings (`MALLOC_*` variables). Epoch = median after the first; ratios against "
            f"Pty-chi {_MALLOC[baseline]}.\n\n"
            f"Accuracy after the {args.epochs} epochs, per energy against the truth (`bench_ptychi.accuracy`: Pty-chi's objects "
            f"zoomed from each energy's pixel to the common one, both aligned by phase correlation): median (min-max) over energies.\n\n"
            f"| engine | epoch of the whole stack (s) | / Pty-chi (target <= 0.5) | NRMSE | phase FRC(0.5) (nm) |\n|---|---|---|---|---|\n{rows}")
    Path(args.output).write_text(text)
    print(text)


def _output_option(output):
    default = HERE / "results" / "bench_ptychi_stack.md"
    path = Path(output).resolve()
    if path == default:
        return ""
    return f" -o {path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path}"


_MALLOC = {"system": "as installed", "kept": "ptyjax's malloc settings"}


def _quality(scores):
    """'NRMSE median (min-max) | FRC median (min-max) nm' over energies of (nrmse, frc_m) pairs."""
    nrmse, frc = np.array(scores, float).T
    return (f"{np.median(nrmse):.3f} ({nrmse.min():.3f}-{nrmse.max():.3f}) | "
            f"{np.median(frc) * 1e9:.0f} ({frc.min() * 1e9:.0f}-{frc.max() * 1e9:.0f})")


if __name__ == "__main__":
    main()
