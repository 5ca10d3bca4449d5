"""Epoch time and peak memory vs positions, frame size, probe modes and energies, with the FFT roofline.

Each configuration runs in its own child process (clean peak memory, no shared compilation cache)
on a synthetic problem (``bench_common.synthetic_problem``). The FFT roofline is the time of only the
FFTs one epoch needs: a forward and an inverse 2-D FFT per position, mode and energy, batched as
ptyjax batches them, with the fastest FFT available (jax.numpy.fft, or scipy.fft on all cores).

    python experiments/bench_epoch.py [--quick] [-o experiments/results/bench_epoch.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = dict(n_energies=8, n_positions=64, frame_size=64, n_modes=1, malloc="kept")
# "sampling": the base case with the native-grid sampler against the per-frame matrices that
# "auto" picks for these one-edge scans (ptyjax.sampling).
# "malloc": the base case with the C library's default allocator instead of ptyjax.hostmemory's
# settings (PTYJAX_SYSTEM_MALLOC=1): freed XLA temporaries unmapped and faulted in again every step.
VARY = {"malloc": ("system",), "sampling": ("native-grid",), "n_positions": (32, 128), "frame_size": (32, 128), "n_modes": (3,), "n_energies": (4, 16)}
COLUMNS = ("energies", "positions", "frame", "modes", "sampling", "malloc", "frames_gb", "first_epoch_s", "epoch_s", "fft_epoch_s", "fft_lib",
           "epoch_over_fft", "host_peak_gb")


# Further pairs with the base case: the largest frames with the default allocator (its memory cost).
EXTRA = (dict(frame_size=128, malloc="system"),)


def configurations(quick: bool):
    yield dict(BASE)
    for name, values in VARY.items():
        for value in values[:1] if quick else values:
            yield dict(BASE, **{name: value})
    if not quick:
        for extra in EXTRA:
            yield dict(BASE, **extra)


def run_child(config: dict, epochs: int) -> dict:
    config = dict(config)
    malloc = config.pop("malloc", "kept")
    env = dict(os.environ, PTYJAX_SYSTEM_MALLOC="1" if malloc == "system" else "")
    proc = subprocess.run([sys.executable, str(HERE / "bench_common.py"), json.dumps(dict(config, epochs=epochs))],
                          capture_output=True, text=True, cwd=HERE, env=env)
    if proc.returncode != 0:
        return dict(config, malloc=malloc, error=proc.stderr.strip().splitlines()[-1])
    return dict(json.loads(proc.stdout.split("RESULT", 1)[1]), malloc=malloc)


def table(rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, r.get("error", ""))) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one value per varied parameter")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first includes compilation)")
    parser.add_argument("-o", "--output", default=str(HERE / "results" / "bench_epoch.md"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for config in configurations(args.quick):
        rows.append(run_child(config, args.epochs))
        print(json.dumps(rows[-1]), flush=True)
    text = (f"# Epoch time vs problem size\n\nCommand: `python experiments/bench_epoch.py{' --quick' if args.quick else ''} "
            f"--epochs {args.epochs}`\n\nDevice: {rows[0].get('device', '?')}; batch {rows[0].get('batch', '?')} points per "
            f"energy per step; epoch_s = median epoch after the first (which includes compilation); fft_epoch_s = only the "
            f"FFTs of one epoch (fastest library, `fft_lib`); malloc = `kept` (ptyjax.hostmemory) or `system` (the C library's default, "
            f"`PTYJAX_SYSTEM_MALLOC=1`); host_peak_gb = child's VmHWM. Total {time.perf_counter() - t0:.0f} s.\n\n"
            + table(rows) + "\n")
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
