"""ptyjax vs Pty-chi (LSQML) epoch time on the same data and CPU, side by side in one run.

Data: one energy (the first) of the tiny simulated preset: 36 positions, 32x32 frames, one probe mode.
Both engines start from the same probe (the simulator's truth) and flat object, with positions fixed
and the same minibatch size; each runs ``--epochs`` epochs; the table reports the median epoch time
after the first (which includes JAX compilation / torch warm-up), and each engine's own final loss.

Pty-chi is a benchmark-only dependency in its own virtual environment, never in ptyjax's install
(its unpinned torchvision would pull a multi-GB CUDA build):

    python -m venv /tmp/ptychi-venv
    /tmp/ptychi-venv/bin/pip install numpy h5py torch==2.13.0          # the CPU wheel on this disk
    /tmp/ptychi-venv/bin/pip install --no-deps ptychi
    /tmp/ptychi-venv/bin/pip install pandas "pydantic<3,>=2" scikit-image scikit-learn scipy tqdm "matplotlib>=3.10.6"
    python experiments/bench_ptychi.py --python /tmp/ptychi-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PTYCHI = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    torch.set_num_threads(int(sys.argv[4]))
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask
    from ptychi.utils import get_suggested_object_size, get_default_complex_dtype

    d = np.load(sys.argv[1])
    CHECKPOINTS = [int(c) for c in sys.argv[5].split(",")]
    epochs, batch = int(sys.argv[2]), int(sys.argv[3])
    pos = d["positions_px"] - d["positions_px"].mean(axis=0)
    options = api.LSQMLOptions()
    options.data_options.data = d["frames"]
    options.object_options.initial_guess = torch.ones([1, *get_suggested_object_size(pos, d["probe"].shape[-2:], extra=16)],
                                                      dtype=get_default_complex_dtype())
    options.object_options.pixel_size_m = float(d["pixel_size_m"])
    options.object_options.optimizable = True
    options.probe_options.initial_guess = d["probe"][None]  # (opr modes, incoherent modes, N, N)
    options.probe_options.optimizable = True
    options.probe_position_options.position_x_px = pos[:, 1]
    options.probe_position_options.position_y_px = pos[:, 0]
    options.probe_position_options.optimizable = False
    options.reconstructor_options.batch_size = batch
    options.reconstructor_options.num_epochs = epochs
    options.reconstructor_options.default_device = api.Devices.CPU
    times, losses, objects = [], [], {}
    with PtychographyTask(options) as task:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            task.run(1)
            times.append(time.perf_counter() - t0)
            if epoch + 1 in CHECKPOINTS:
                objects[str(epoch + 1)] = np.asarray(task.get_data_to_cpu("object", as_numpy=True)).reshape(-1, *np.shape(task.get_data_to_cpu("object", as_numpy=True))[-2:])[0]
        try:
            losses = [float(x) for x in np.asarray(task.reconstructor.loss_tracker.table["loss"])]
        except Exception:
            losses = []
    np.savez(sys.argv[1].replace("data.npz", "ptychi_objects.npz"), **objects)
    print("RESULT" + json.dumps(dict(epoch_times=times, losses=losses, torch=torch.__version__)))
    """
)


def make_data(folder: Path, preset_name: str = "tiny"):
    """The first energy of a preset as arrays (frames, positions in pixels, true probe)."""
    from ptyjax.data import Dataset
    from ptyjax.simulate import PRESETS, load_truth, simulate

    preset = PRESETS[preset_name]
    truth_path = simulate(preset.replace(energies_ev=preset.energies_ev[:1]), folder / "data")
    truth = load_truth(truth_path)
    dataset = Dataset.open(folder / "data")
    dx = float(dataset.pixel_sizes_m[0])
    arrays = dict(frames=dataset.load_all(0), positions_px=dataset.positions_m(0) / dx,
                  probe=np.asarray(truth["probe"][0], np.complex64), pixel_size_m=dx)
    np.savez(folder / "data.npz", **arrays)
    return dataset, arrays


def accuracy(obj, truth, energy_index: int = 0, pixel_size_m: float | None = None):
    """Complex NRMSE and phase FRC(0.5) resolution (m) of an object of any origin against the truth
    at ``energy_index``.

    Each engine has its own object frame, so the object is first brought to the truth's pixel (cubic
    zoom from ``pixel_size_m``, default: already on it), then aligned by sub-pixel phase correlation of
    the phase images on a common canvas; compared where the truth was scanned (closer to a true
    position than a quarter frame).
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from ptyjax import metrics
    from ptyjax.spectra import fourier_shift, phase_correlation_shift

    t = np.asarray(truth["object"][energy_index])
    dx = float(truth["pixel_size"])
    if pixel_size_m is not None and abs(pixel_size_m / dx - 1) > 1e-6:
        obj = np.asarray(obj)
        zoom = pixel_size_m / dx
        obj = ndimage.zoom(obj.real, zoom, order=3) + 1j * ndimage.zoom(obj.imag, zoom, order=3)
    shape = tuple(max(a, b) for a, b in zip(t.shape, obj.shape))
    canvas = lambda image: np.pad(image, [(0, n - m) for n, m in zip(shape, image.shape)], constant_values=1.0)
    t, o = canvas(t), canvas(np.asarray(obj))
    o = fourier_shift(o, phase_correlation_shift(np.angle(t), np.angle(o)))
    yy, xx = np.indices(shape)
    points = (np.asarray(truth["positions"][energy_index]) - np.asarray(truth["origin"])) / dx
    distance, _ = cKDTree(points).query(np.stack([yy.ravel(), xx.ravel()], 1))
    region = distance.reshape(shape) < 0.25 * np.asarray(truth["probe"]).shape[-1]
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    nrmse = float(metrics.complex_nrmse(o, t, region))
    frc = metrics.frc_resolution(np.angle(o[box]), np.angle(t[box]), dx)
    return nrmse, frc


def run_ptyjax(dataset, probe, epochs, batch, checkpoints):
    from ptyjax import fit

    problem = fit.prepare(dataset)
    objects = {}
    for n in checkpoints:  # same seed and batches: run n epochs is the first n epochs of a longer run
        config = fit.FitConfig(epochs=n, converged_fall=0.0, batch_size=batch, refine_positions=False, priors={}, checkpoint_every=0)
        result = fit.run_fit(problem, config, params=fit.initial_params(problem, config, probe=probe[None]), progress=False)
        objects[n] = result.object()[0]
    return dict(epoch_times=result.epoch_times, losses=result.loss_history, objects=objects)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/tmp/ptychi-venv/bin/python", help="interpreter with ptychi and torch")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=12, help="positions per minibatch (both engines)")
    parser.add_argument("--preset", default="tiny", help="simulator preset whose first energy is used")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("-o", "--output", default=str(HERE / "results" / "bench_ptychi.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, arrays = make_data(Path(tmp), args.preset)
        from ptyjax.simulate import load_truth

        truth = load_truth(Path(tmp) / "data" / "truth.h5")
        checkpoints = sorted({5, 10, args.epochs})
        mine = run_ptyjax(dataset, arrays["probe"], args.epochs, args.batch, checkpoints)
        t0 = time.perf_counter()
        proc = subprocess.run([args.python, "-c", PTYCHI, str(Path(tmp) / "data.npz"), str(args.epochs), str(args.batch), str(args.threads),
                               ",".join(map(str, checkpoints))], capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        rows, failure = [("ptyjax", mine)], ""
        if "RESULT" in proc.stdout:
            theirs = json.loads(proc.stdout.split("RESULT", 1)[1])
            saved = np.load(Path(tmp) / "ptychi_objects.npz")
            theirs["objects"] = {int(k): saved[k] for k in saved.files}
            rows.append(("Pty-chi LSQML", theirs))
        else:
            failure = f"\n\nPty-chi failed ({wall:.0f} s): `{(proc.stderr.strip().splitlines() or ['no output'])[-1][:300]}`\n"
        for _, r in rows:
            r["accuracy"] = {n: accuracy(o, truth) for n, o in r["objects"].items()}
    lines = ["# ptyjax vs Pty-chi LSQML (CPU, same data)", "",
             f"Command: `python experiments/bench_ptychi.py --preset {args.preset} --epochs {args.epochs} --batch {args.batch} --threads {args.threads}`", "",
             f"{args.preset} preset, first energy: {arrays['frames'].shape[0]} positions, {arrays['frames'].shape[1]}x{arrays['frames'].shape[2]} frames, 1 mode; "
             "true probe start, positions fixed (both engines at their default steps). "
             "Epoch = median after the first.", "",
             "| engine | first epoch (s) | epoch (s) | final loss (own metric) |", "|---|---|---|---|"]
    for name, r in rows:
        t = r["epoch_times"]
        loss = f"{r['losses'][-1]:.4g}" if r.get("losses") else "n/a"
        lines.append(f"| {name} | {t[0]:.3f} | {float(np.median(t[1:])):.4f} | {loss} |")
    lines += ["", "Accuracy against the simulator's truth (complex NRMSE after a global complex scale; phase FRC at 0.5) "
              "after n epochs, and the time to reach it (n x median epoch):", "",
              "| engine | epochs | NRMSE | FRC (nm) | time (s) |", "|---|---|---|---|---|"]
    for name, r in rows:
        epoch = float(np.median(r["epoch_times"][1:]))
        for n, (nrmse, frc) in sorted(r["accuracy"].items()):
            lines.append(f"| {name} | {n} | {nrmse:.4f} | {frc * 1e9:.1f} | {n * epoch:.3f} |")
    if len(rows) == 2:
        ratio = float(np.median(rows[0][1]["epoch_times"][1:]) / np.median(rows[1][1]["epoch_times"][1:]))
        lines += ["", f"ptyjax epoch / Pty-chi epoch = {ratio:.2f} (target <= 0.5)"]
    text = "\n".join(lines) + failure + "\n"
    Path(args.output).write_text(text)
    print(text)
    if failure:
        print(proc.stderr[-3000:])


if __name__ == "__main__":
    main()
