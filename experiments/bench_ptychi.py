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
    times, losses = [], []
    with PtychographyTask(options) as task:
        for _ in range(epochs):
            t0 = time.perf_counter()
            task.iterate(1)
            times.append(time.perf_counter() - t0)
        try:
            losses = [float(x) for x in np.asarray(task.reconstructor.loss_tracker.table["loss"])]
        except Exception:
            losses = []
    print("RESULT" + json.dumps(dict(epoch_times=times, losses=losses, torch=torch.__version__)))
    """
)


def make_data(folder: Path):
    """The first energy of the tiny preset as arrays (frames, positions in pixels, true probe)."""
    from ptyjax.data import Dataset
    from ptyjax.simulate import PRESETS, load_truth, simulate

    preset = PRESETS["tiny"]
    truth_path = simulate(preset.replace(energies_ev=preset.energies_ev[:1]), folder / "data")
    truth = load_truth(truth_path)
    dataset = Dataset.open(folder / "data")
    dx = float(dataset.pixel_sizes_m[0])
    arrays = dict(frames=dataset.load_all(0), positions_px=dataset.positions_m(0) / dx,
                  probe=np.asarray(truth["probe"][0], np.complex64), pixel_size_m=dx)
    np.savez(folder / "data.npz", **arrays)
    return dataset, arrays


def run_ptyjax(dataset, probe, epochs, batch):
    from ptyjax import fit

    config = fit.FitConfig(epochs=epochs, batch_size=batch, refine_positions=False, priors={}, checkpoint_every=0)
    problem = fit.prepare(dataset)
    result = fit.run_fit(problem, config, params=fit.initial_params(problem, config, probe=probe[None]), progress=False)
    return dict(epoch_times=result.epoch_times, losses=result.loss_history)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/tmp/ptychi-venv/bin/python", help="interpreter with ptychi and torch")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=12, help="positions per minibatch (both engines)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("-o", "--output", default=str(HERE / "results" / "bench_ptychi.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, arrays = make_data(Path(tmp))
        mine = run_ptyjax(dataset, arrays["probe"], args.epochs, args.batch)
        t0 = time.perf_counter()
        proc = subprocess.run([args.python, "-c", PTYCHI, str(Path(tmp) / "data.npz"), str(args.epochs), str(args.batch), str(args.threads)],
                              capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
    rows = [("ptyjax", mine)]
    if "RESULT" in proc.stdout:
        rows.append(("Pty-chi LSQML", json.loads(proc.stdout.split("RESULT", 1)[1])))
        failure = ""
    else:
        failure = f"\n\nPty-chi failed ({wall:.0f} s): `{(proc.stderr.strip().splitlines() or ['no output'])[-1][:300]}`\n"
    lines = ["# ptyjax vs Pty-chi LSQML (CPU, same data)", "",
             f"Command: `python experiments/bench_ptychi.py --epochs {args.epochs} --batch {args.batch} --threads {args.threads}`", "",
             "Tiny preset, first energy: 36 positions, 32x32 frames, 1 mode; true probe start, positions fixed. "
             "Epoch = median after the first.", "",
             "| engine | first epoch (s) | epoch (s) | final loss (own metric) |", "|---|---|---|---|"]
    for name, r in rows:
        t = r["epoch_times"]
        loss = f"{r['losses'][-1]:.4g}" if r.get("losses") else "n/a"
        lines.append(f"| {name} | {t[0]:.3f} | {float(np.median(t[1:])):.4f} | {loss} |")
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
