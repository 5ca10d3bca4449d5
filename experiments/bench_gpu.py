"""One realistic-size run on the accelerator: epoch time and memory.

60 energies x 500 positions x 128x128 frames (1 probe mode, 16 points per energy per step), frames
computed on the device by ptyjax's forward model from a random object (no simulator, no files; see
``bench_common.synthetic_problem``), then ``fit.run_fit`` for a few epochs. Prints the epoch time
(median after the first, which includes compilation), the FFT-only time of one epoch and the
device's peak memory (``jax.devices()[0].memory_stats()``), and appends them with the card name to
``experiments/results/bench_gpu.md``.

    python experiments/bench_gpu.py                 # on a CUDA machine (pip install -U "jax[cuda12]")
    python experiments/bench_gpu.py --devices 4     # energies split over 4 GPUs (60 = 4 x 15)
    python experiments/bench_gpu.py --small         # CPU-sized check: 6 x 50 x 64x64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import measure  # noqa: E402

REALISTIC = dict(n_energies=60, n_positions=500, frame_size=128, n_modes=1)
SMALL = dict(n_energies=6, n_positions=50, frame_size=64, n_modes=1)


def _block(sampling_name, frame_size):
    from ptyjax import sampling

    return f" (blocks of {sampling.exact_block(frame_size)})" if sampling_name == "exact" else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized problem")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="points per energy per step")
    parser.add_argument("--modes", type=int, default=1)
    parser.add_argument("--devices", type=int, help="split the energies over this many devices")
    parser.add_argument("--sampling", default="auto", help="frame sampler: auto | exact | native-grid (ptyjax.sampling)")
    parser.add_argument("--exact-block", type=int, help="samples per block of the exact sampler's banded products "
                        "(ptyjax.sampling.EXACT_BLOCK; 0: the frame size, i.e. the former dense product)")
    parser.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "results" / "bench_gpu.md"))
    args = parser.parse_args(argv)
    size = dict(SMALL if args.small else REALISTIC, n_modes=args.modes)
    if args.exact_block is not None:
        from ptyjax import sampling

        sampling.EXACT_BLOCK = args.exact_block or size["frame_size"]
    t0 = time.perf_counter()
    r = measure(**size, epochs=args.epochs, batch_size=args.batch, devices=args.devices, sampling=args.sampling)
    r["total_s"] = time.perf_counter() - t0
    print(json.dumps(r, indent=1))
    command = "python experiments/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    line = (f"| {jax.devices()[0].device_kind} x{args.devices or 1} | {r['energies']}x{r['positions']}x{r['frame']}^2, "
            f"{r['modes']} mode(s), batch {r['batch']}, {r['sampling']}{_block(r['sampling'], size['frame_size'])} | {r['first_epoch_s']:.2f} | {r['epoch_s']:.3f} | "
            f"{r['fft_epoch_s']:.4f} | {r['epoch_over_fft']:.1f} | {r.get('device_peak_gb', float('nan')):.2f} | "
            f"{r.get('host_peak_gb', float('nan')):.2f} | `{command.strip()}` |\n")
    out = Path(args.output)
    if not out.exists():
        out.write_text("# Realistic-size epoch time and memory\n\nepoch = median after the first (which compiles); FFT = only "
                       "the FFTs of one epoch; memory = peak (device from memory_stats, host VmHWM).\n\n"
                       "| device | size | first epoch (s) | epoch (s) | FFT epoch (s) | epoch / FFT | device peak (GB) | "
                       "host peak (GB) | command |\n|---|---|---|---|---|---|---|---|---|\n")
    with out.open("a") as f:
        f.write(line)


if __name__ == "__main__":
    main()
