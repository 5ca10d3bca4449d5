"""Peak memory vs dataset size, in-memory vs streamed frames, under a memory limit.

Datasets: ``ENERGIES`` CXI files (``ptyjax.cxi.write_cxi``, uint16 counts) of FRAME x FRAME frames
at the tiny preset's detector geometry, growing in scan points: a denser Fermat spiral over the
*same* area (``simulate.nominal_positions``), so the object grid stays the same and only the data
grow. Frames are Poisson draws (fixed seed) of one known pattern: the far field of a pupil disk of
radius ``PUPIL_FRACTION`` of the frame holding ``PHOTONS`` photons, plus ``BACKGROUND`` per pixel. No simulator runs:
the benchmark measures memory, not reconstruction quality.

Each measurement runs in a child process that imports JAX and ptyjax, starts the CPU backend, then
limits its own address space with ``resource.setrlimit(RLIMIT_AS, (VmSize now + LIMIT, ...))`` (no
cgroups needed): LIMIT is what the run may use beyond the start-up reservation, for data,
compilation and work. It opens the dataset (one validating pass over every frame), runs
``fit.prepare`` (in-memory: every frame loaded; streamed: one chunked pass for the mean patterns)
and ``fit.run_fit`` for ``EPOCHS`` epochs over ``FIT_POINTS`` points per energy spread evenly over
the whole files (a minibatch still reads frames from everywhere in the files; a full epoch over
10^5 points per energy takes minutes on two CPU cores and tells nothing more about memory). It
reports VmHWM (peak resident memory) from /proc/self/status and the seconds of each phase.

    python experiments/bench_memory.py [--limit-mb 384] [--sizes-mb 32 128 512 1024 2048] [-o ...]
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
ENERGIES_EV = (6540.0, 6560.0)  # Mn K edge region (DESIGN.md); two energies keep the step cheap
FRAME = 64
PUPIL_FRACTION = 0.25  # pupil disk radius / frame size: a focused zone-plate far field
PHOTONS = 1e5  # per frame: the order of the tiny preset's fluence times its probe area
BACKGROUND = 1.0  # photons per pixel everywhere (air scattering, detector noise): keeps gzip honest
FIT_POINTS = 128
BATCH = 16
EPOCHS = 2
BYTES_PER_FRAME = FRAME * FRAME * 4  # float32 in memory
WRITE_CHUNK = 8192  # frames drawn at a time when writing (bounds the parent's memory)

CHILD = textwrap.dedent(
    """
    import dataclasses, json, resource, sys, time
    import jax, jax.numpy as jnp, numpy as np

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    class Spread:
        # Frame source over a subset ``keep`` (P',) of the points of ``frames`` (in-memory array or
        # StreamedFrames): fit indices i map to file points keep[i], so epochs have P'/B steps.
        def __init__(self, frames, keep):
            self.frames, self.keep = frames, keep
            self.shape = (frames.shape[0], len(keep)) + tuple(frames.shape[2:])
        def batch(self, indices):
            mapped = self.keep[np.asarray(indices)]
            if hasattr(self.frames, "batch"):
                return self.frames.batch(mapped)
            return fit.gather_frames(self.frames, jnp.asarray(mapped))
        def prefetch(self, indices):
            if hasattr(self.frames, "prefetch"):
                self.frames.prefetch(self.keep[np.asarray(indices)])

    path, stream, limit, fit_points, batch, epochs, defocus = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), \\
        int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
    jnp.zeros(1).block_until_ready()  # start the CPU backend (its thread pools reserve address space)
    from ptyjax import fit
    from ptyjax.data import Dataset
    base = status("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (base + limit, base + limit))
    out = dict(base_vmsize_mb=base / 2**20, base_rss_mb=status("VmRSS") / 2**20)
    t = time.perf_counter()
    try:
        dataset = Dataset.open(path)
        out["open_s"], t = time.perf_counter() - t, time.perf_counter()
        problem = fit.prepare(dataset, stream=stream)
        out["prepare_s"], t = time.perf_counter() - t, time.perf_counter()
        out["prepare_rss_mb"] = status("VmHWM") / 2**20
        keep = np.linspace(0, problem.point_valid.shape[1] - 1, fit_points).astype(int)
        problem = dataclasses.replace(problem, frames=Spread(problem.frames, keep), point_valid=problem.point_valid[:, keep],
                                      nominal_m=problem.nominal_m[:, keep])
        config = fit.FitConfig(epochs=epochs, converged_fall=0.0, batch_size=batch, defocus_m=defocus, checkpoint_every=0)
        result = fit.run_fit(problem, config, progress=False, defocus_m=defocus)
        out.update(ok=bool(np.isfinite(result.loss_history[-1])), loss=result.loss_history[-1], fit_s=time.perf_counter() - t)
    except Exception as error:  # MemoryError from numpy/h5py; XLA reports RESOURCE_EXHAUSTED as RuntimeError
        out.update(ok=False, error=f"{type(error).__name__}: {str(error).splitlines()[0][:100]}", failed_after_s=time.perf_counter() - t)
    out.update(peak_rss_mb=status("VmHWM") / 2**20)
    print("RESULT" + json.dumps(out))
    """
)


def mean_pattern() -> np.ndarray:
    """(FRAME, FRAME) expected counts: a defocused zone-plate probe's far field is its pupil disk;
    PHOTONS spread over the disk plus BACKGROUND in every pixel."""
    y, x = np.indices((FRAME, FRAME)) - FRAME // 2
    disk = (y**2 + x**2 <= (PUPIL_FRACTION * FRAME) ** 2).astype(np.float64)
    return PHOTONS * disk / disk.sum() + BACKGROUND


def make_dataset(folder: Path, n_points: int, seed: int = 0) -> Path:
    """Write one CXI file per energy with ``n_points`` Poisson frames each into ``folder``."""
    from ptyjax.cxi import write_cxi
    from ptyjax.simulate import PRESETS, nominal_positions

    preset = PRESETS["tiny"]
    positions = nominal_positions(preset.replace(n_positions=n_points))
    mean = mean_pattern()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for energy in ENERGIES_EV:
        frames = np.empty((n_points, FRAME, FRAME), np.uint16)
        for start in range(0, n_points, WRITE_CHUNK):
            stop = min(start + WRITE_CHUNK, n_points)
            frames[start:stop] = rng.poisson(mean, (stop - start, FRAME, FRAME))
        write_cxi(folder / f"e{energy:.0f}.cxi", frames, positions, energy, preset.detector_distance_m, preset.detector_pixel_m)
    return folder


def run_child(path, stream: bool, limit_bytes: int) -> dict:
    from ptyjax.simulate import PRESETS

    args = [str(path), "1" if stream else "0", str(limit_bytes), str(FIT_POINTS), str(BATCH), str(EPOCHS), str(PRESETS["tiny"].defocus_m)]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if "RESULT" not in proc.stdout:
        return dict(ok=False, error=(proc.stderr.strip().splitlines() or [f"killed (status {proc.returncode})"])[-1][:160],
                    peak_rss_mb=float("nan"))
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, default=384, help="address space allowed beyond the child's start-up (MiB)")
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[32, 128, 512, 1024, 2048],
                        help="datasets: frames as float32 in memory (MiB); the last should be >= 2x --limit-mb")
    parser.add_argument("--workdir", help="where to write the datasets (default: a temporary folder, removed)")
    parser.add_argument("-o", "--output", default=str(HERE / "results" / "bench_memory.md"))
    args = parser.parse_args(argv)
    limit = args.limit_mb * 2**20
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ptyjax-bench-memory-"))
    t0 = time.perf_counter()
    rows = []
    try:
        for size in args.sizes_mb:
            n = int(size * 2**20 / (len(ENERGIES_EV) * BYTES_PER_FRAME))
            tw = time.perf_counter()
            folder = make_dataset(work / f"p{n}", n)
            disk_mb = sum(f.stat().st_size for f in folder.glob("*.cxi")) / 2**20
            write_s = time.perf_counter() - tw
            for stream in (False, True):
                r = run_child(folder, stream, limit)
                rows.append(dict(points=n, dataset_mb=len(ENERGIES_EV) * n * BYTES_PER_FRAME / 2**20, disk_mb=disk_mb,
                                 write_s=write_s, mode="streamed" if stream else "in-memory", **r))
                print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(folder)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t0
    nan = float("nan")
    command = "python experiments/bench_memory.py" + " ".join(
        [""] + ([f"--limit-mb {args.limit_mb}"]) + ["--sizes-mb " + " ".join(f"{s:g}" for s in args.sizes_mb)])
    lines = [
        "# Peak memory vs dataset size: in-memory vs streamed frames",
        "",
        f"Command: `{command}`",
        "",
        f"{len(ENERGIES_EV)} energies x N points of {FRAME}x{FRAME} frames (uint16 CXI, gzip 1 on disk; float32 in memory). "
        f"Memory limit: RLIMIT_AS = the child's address space after JAX + ptyjax start-up + **{args.limit_mb} MiB** (set by "
        f"the child itself). peak RSS = VmHWM of the child (includes its ~{rows[0].get('base_rss_mb', nan):.0f} MiB at start). "
        f"Each run: `Dataset.open` + `fit.prepare` + {EPOCHS} epochs of `fit.run_fit` (batch {BATCH}) over {FIT_POINTS} points "
        f"per energy spread over the whole files. Total {total:.0f} s.",
        "",
        "| points/energy | frames (MiB, float32) | on disk (MiB) | frames / limit | mode | peak RSS (MiB) | RSS after prepare (MiB) "
        "| open s | prepare s | fit s | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        result = "ok" if r.get("ok") else r.get("error", "failed")
        lines.append(
            f"| {r['points']} | {r['dataset_mb']:.0f} | {r['disk_mb']:.0f} | {r['dataset_mb'] / args.limit_mb:.2f} | {r['mode']} | "
            f"{r['peak_rss_mb']:.0f} | {r.get('prepare_rss_mb', nan):.0f} | {r.get('open_s', nan):.1f} | {r.get('prepare_s', nan):.1f} | "
            f"{r.get('fit_s', nan):.1f} | {result} |")
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
