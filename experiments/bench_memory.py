"""Peak memory vs dataset size, in-memory vs streamed frames, under a memory limit.

Datasets: CXI files (``ptyjax.cxi.write_cxi``) of the tiny preset's geometry (32x32 frames) at
``ENERGIES`` energies, growing in scan points: a denser Fermat spiral over the *same* area, so the
object grid stays the same and only the data (and the per-point jitter parameters) grow. Frames are
Poisson counts of the tiny simulation's mean pattern at that energy.

Each measurement runs in a child process that imports JAX, starts its CPU backend, then limits its
own address space with ``resource.setrlimit(RLIMIT_AS, (VmSize now + LIMIT, ...))`` (no cgroups
needed): LIMIT is the memory the run may use beyond the JAX runtime's start-up reservation, for
data, compilation and work. It then runs ``fit.prepare`` (in-memory: every frame loaded; streamed:
one chunked pass over every frame for the mean patterns) and ``fit.run_fit`` for ``EPOCHS`` epochs
over ``FIT_POINTS`` scan points per energy spread over the whole files (a full epoch over GBs of
frames takes hours on two CPU cores; batches still read frames from everywhere in the files), and
reports VmHWM (peak resident memory) from /proc/self/status.

    python experiments/bench_memory.py [--limit-mb 1024] [-o experiments/results/bench_memory.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENERGIES = 4  # the first two energies of each edge of the tiny preset
FIT_POINTS = 64
EPOCHS = 2
BYTES_PER_FRAME = 32 * 32 * 4  # float32 in memory

CHILD = textwrap.dedent(
    """
    import dataclasses, json, resource, sys, time
    import jax, jax.numpy as jnp, numpy as np

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    path, stream, limit, fit_points, epochs = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    jnp.zeros(1).block_until_ready()  # start the CPU backend (its thread pools reserve address space)
    from ptyjax import fit
    from ptyjax.data import Dataset
    base = status("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (base + limit, base + limit))
    out = dict(base_vmsize_mb=base / 2**20, base_rss_mb=status("VmRSS") / 2**20)
    t0 = time.perf_counter()
    try:
        problem = fit.prepare(Dataset.open(path), stream=stream)
        p = problem.point_valid.shape[1]
        keep = np.zeros(p, bool)
        keep[np.linspace(0, p - 1, fit_points).astype(int)] = True
        problem = dataclasses.replace(problem, point_valid=problem.point_valid & keep)
        config = fit.FitConfig(epochs=epochs, defocus_m=270e-6, checkpoint_every=0)
        result = fit.run_fit(problem, config, progress=False, defocus_m=270e-6)
        out.update(ok=True, loss=result.loss_history[-1])
    except (MemoryError, RuntimeError, Exception) as error:  # XLA reports RESOURCE_EXHAUSTED as RuntimeError
        out.update(ok=False, error=f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
    out.update(seconds=time.perf_counter() - t0, peak_rss_mb=status("VmHWM") / 2**20)
    print("RESULT" + json.dumps(out))
    """
)


def make_dataset(folder: Path, n_points: int, seed: int = 0) -> float:
    """Write ENERGIES CXI files with ``n_points`` frames each; return the frames' size in MB (float32)."""
    from ptyjax.cxi import write_cxi
    from ptyjax.simulate import PRESETS, nominal_positions, simulate

    preset = PRESETS["tiny"]
    energies = preset.energies_ev[:2] + preset.energies_ev[6:8]
    template = folder / "template"
    if not (template / "truth.h5").exists():
        simulate(preset.replace(energies_ev=energies), template)
    from ptyjax.data import Dataset

    small = Dataset.open(template)
    rng = np.random.default_rng(seed)
    out = folder / f"p{n_points}"
    out.mkdir(exist_ok=True)
    positions = nominal_positions(preset.replace(n_positions=n_points))
    for e, scan in enumerate(small.scans):
        mean = small.load_all(e).mean(axis=0)
        frames = rng.poisson(mean, (n_points,) + mean.shape).astype(np.int32)
        write_cxi(out / f"e{e}.cxi", frames, positions, scan.energy_ev, scan.distance_m, scan.detector_pixel_m,
                  mask=scan.bad_pixels)
    return ENERGIES * n_points * BYTES_PER_FRAME / 2**20


def run_child(path, stream: bool, limit_bytes: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if stream else "0", str(limit_bytes), str(FIT_POINTS), str(EPOCHS)],
                          capture_output=True, text=True)
    if "RESULT" not in proc.stdout:
        return dict(ok=False, error=(proc.stderr.strip().splitlines() or ["killed"])[-1][:160], peak_rss_mb=float("nan"))
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, default=1024, help="address space allowed beyond JAX start-up (MiB)")
    parser.add_argument("--points", type=int, nargs="+", help="scan points per energy of each dataset")
    parser.add_argument("--workdir", help="where to write the datasets (default: a temporary folder, removed)")
    parser.add_argument("-o", "--output", default=str(HERE / "results" / "bench_memory.md"))
    args = parser.parse_args(argv)
    limit = args.limit_mb * 2**20
    # Dataset sizes from 1/16 of the limit to 2.2x the limit (float32 frames in memory).
    points = args.points or [int(f * limit / (ENERGIES * BYTES_PER_FRAME)) for f in (1 / 16, 1 / 4, 1 / 2, 2.2)]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ptyjax-bench-memory-"))
    t0 = time.perf_counter()
    rows = []
    try:
        for n in points:
            size_mb = make_dataset(work, n)
            for stream in (False, True):
                r = run_child(work / f"p{n}", stream, limit)
                rows.append(dict(points=n, dataset_mb=size_mb, mode="streamed" if stream else "in-memory", **r))
                print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(work / f"p{n}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# Peak memory vs dataset size: in-memory vs streamed frames",
        "",
        f"Command: `python experiments/bench_memory.py --limit-mb {args.limit_mb}" + (f" --points {' '.join(map(str, points))}`" if args.points else "`"),
        "",
        f"{ENERGIES} energies x N points of 32x32 frames (float32 in memory). Memory limit: RLIMIT_AS = the child's address "
        f"space after JAX start-up + {args.limit_mb} MiB (set by the child itself). peak RSS = VmHWM. Each run: prepare + "
        f"{EPOCHS} epochs over {FIT_POINTS} points per energy spread over the files. Total {time.perf_counter() - t0:.0f} s.",
        "",
        "| points/energy | dataset (MiB) | dataset / limit | mode | peak RSS (MiB) | RSS at start (MiB) | s | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        result = "ok" if r.get("ok") else r.get("error", "failed")
        lines.append(f"| {r['points']} | {r['dataset_mb']:.0f} | {r['dataset_mb'] / args.limit_mb:.2f} | {r['mode']} | "
                     f"{r['peak_rss_mb']:.0f} | {r.get('base_rss_mb', float('nan')):.0f} | {r.get('seconds', float('nan')):.1f} | {result} |")
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
