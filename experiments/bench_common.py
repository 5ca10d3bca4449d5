"""Shared pieces of the benchmarks: a synthetic problem built on the device, and one timed measurement.

``synthetic_problem`` lays out E energies x P positions x N x N frames with M probe modes the way
:func:`ptyjax.fit.prepare` does, but computes the frames on the device with ptyjax's own forward model
from a random smooth object (no simulator, no files), so realistic sizes can be timed anywhere.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ptyjax import fit, simulate
from ptyjax.geometry import ObjectGrid
from ptyjax.model import FrameGeometry, LogObjectStack, Probe, Reconstruction, ScanPositions, predict_intensity
from ptyjax.physics import wavelength
from ptyjax.sharding import energy_mesh

# Geometry of the "medium" preset (zone plate, detector pitch, Mn K edge), with the detector distance
# chosen so that the pupil's radius is PUPIL_FRACTION of the frame whatever N, and the scan disk
# growing as sqrt(P) so that the overlap stays that of "medium" (400 points in a 1.5 um radius with
# a 2.8 um wide frame: radius = 0.53 frame widths at 400 points).
BASE = simulate.PRESETS["medium"]
PUPIL_FRACTION = 0.3
SCAN_RADIUS_PER_WIDTH = 0.53
ENERGY_RANGE_EV = (6500.0, 6600.0)  # Mn K edge region
# Positions per forward-model call when computing the synthetic frames (bounds device memory).
FRAME_CHUNK = 32


def synthetic_config(n_energies, n_positions, frame_size, n_modes=1):
    energies = tuple(float(e) for e in np.linspace(*ENERGY_RANGE_EV, n_energies))
    lam = float(wavelength(energies[0]))
    # Pupil radius in detector pixels is lambda z / (2 dr p) (see simulate.make_probe): solve for z.
    distance = 2 * PUPIL_FRACTION * frame_size * BASE.outer_zone_width_m * BASE.detector_pixel_m / lam
    width = lam * distance / BASE.detector_pixel_m
    return BASE.replace(energies_ev=energies, frame_size=frame_size, n_positions=n_positions, n_modes=n_modes,
                        detector_distance_m=distance, scan_radius_m=SCAN_RADIUS_PER_WIDTH * width * np.sqrt(n_positions / 400))


def synthetic_problem(n_energies, n_positions, frame_size, n_modes=1, seed=0):
    """(problem, true probe (E, M, N, N)): frames computed on the default device."""
    config = synthetic_config(n_energies, n_positions, frame_size, n_modes)
    rng = np.random.default_rng(seed)
    native = simulate.native_pixel_sizes(config)
    nominal = np.broadcast_to(simulate.nominal_positions(config), (n_energies, n_positions, 2)).copy()
    probe = np.stack([simulate.make_probe(config, e, dx, rng) for e, dx in zip(config.energies_ev, native)])
    # Common grid and frame geometry exactly as fit.prepare lays them out.
    dx0 = float(native.min())
    geometry = FrameGeometry.create(native / dx0, frame_size)
    grid = ObjectGrid.covering(nominal.reshape(-1, 2), (frame_size * native.max(),) * 2, pixel_size=dx0,
                               margin_px=geometry.reach + fit.GRID_MARGIN_PX)
    # Random smooth object: low-passed noise, OD up to ~0.2 and phase up to ~1 rad, slowly varying in E.
    key_a, key_p = jax.random.split(jax.random.PRNGKey(seed))
    ky, kx = (jnp.fft.fftfreq(n) for n in grid.shape)
    lowpass = jnp.exp(-((ky[:, None] ** 2 + kx[None, :] ** 2) / (2 * 0.03**2)))
    smooth = lambda key: jnp.real(jnp.fft.ifft2(jnp.fft.fft2(jax.random.normal(key, grid.shape)) * lowpass))  # noqa: E731
    a, p = smooth(key_a), smooth(key_p)
    a, p = -0.1 * jnp.abs(a) / jnp.abs(a).max(), p / jnp.abs(p).max()
    ramp = jnp.linspace(0.8, 1.2, n_energies)[:, None, None]
    truth = Reconstruction(LogObjectStack(ramp * a, ramp * p), Probe.from_complex(probe),
                           ScanPositions.at_nominal(grid.to_pixels(nominal)))
    forward = jax.jit(predict_intensity)
    chunks = [forward(truth, geometry, jnp.tile(jnp.arange(s, min(s + FRAME_CHUNK, n_positions)), (n_energies, 1)))
              for s in range(0, n_positions, FRAME_CHUNK)]
    frames = jnp.concatenate(chunks, axis=1)
    problem = fit.Problem(
        energies_ev=np.asarray(config.energies_ev), frames=frames,
        pixel_weight=jnp.ones((n_energies, 1, frame_size, frame_size), jnp.float32),
        point_valid=np.ones((n_energies, n_positions), bool), nominal_m=nominal, native_pixel_size=native,
        grid=grid, geometry=geometry, mean_patterns=np.asarray(frames.mean(axis=1)),
        bad_pixels=np.zeros((n_energies, frame_size, frame_size), bool),
    )
    return problem, probe, config


def fft_epoch_seconds(shape, n_batches, repeats=3):
    """Seconds of the FFTs one epoch needs: a forward and an inverse 2-D FFT of ``shape`` (E, B, M, N, N)
    complex64 per minibatch, ``n_batches`` minibatches; the fastest of jax.numpy.fft and (on the CPU)
    scipy.fft with all cores. Returns (seconds, which)."""
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float32).astype(jnp.complex64)
    round_trip = jax.jit(lambda v: jnp.fft.ifft2(jnp.fft.fft2(v)))
    round_trip(x).block_until_ready()
    best = {}
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n_batches):
            y = round_trip(x)
        y.block_until_ready()
        t.append(time.perf_counter() - t0)
    best["jax"] = min(t)
    if jax.default_backend() == "cpu":
        import scipy.fft

        h = np.asarray(x)
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n_batches):
                scipy.fft.ifft2(scipy.fft.fft2(h, workers=os.cpu_count()), workers=os.cpu_count())
            t.append(time.perf_counter() - t0)
        best["scipy"] = min(t)
    which = min(best, key=best.get)
    return best[which], which


def measure(n_energies, n_positions, frame_size, n_modes=1, epochs=3, batch_size=16, roofline=True, seed=0, devices=None, sampling="auto"):
    """Build a synthetic problem, fit ``epochs`` epochs (the first includes compilation) and return
    a dict: epoch seconds (median after the first), FFT-roofline seconds and ratio, memory.
    ``devices``: split the energies over this many devices (:mod:`ptyjax.sharding`). ``sampling``: the
    frame sampler (:mod:`ptyjax.sampling`; "auto" takes per-frame matrices for these 100 eV scans)."""
    t0 = time.perf_counter()
    problem, _, sim = synthetic_problem(n_energies, n_positions, frame_size, n_modes, seed)
    jax.block_until_ready(problem.frames)
    setup = time.perf_counter() - t0
    config = fit.FitConfig(epochs=epochs, converged_fall=0.0, batch_size=batch_size, n_modes=n_modes, defocus_m=sim.defocus_m, checkpoint_every=0,
                           sampling=sampling)
    mesh = None if devices is None else energy_mesh(devices)
    result = fit.run_fit(problem, config, progress=False, defocus_m=sim.defocus_m, mesh=mesh)
    epoch = float(np.median(result.epoch_times[1:])) if len(result.epoch_times) > 1 else float(result.epoch_times[0])
    out = dict(energies=n_energies, positions=n_positions, frame=frame_size, modes=n_modes, batch=batch_size,
               sampling=problem.geometry.with_sampling(sampling).sampling,
               frames_gb=problem.frames.size * 4 / 1e9, setup_s=setup, first_epoch_s=result.epoch_times[0], epoch_s=epoch,
               loss_first=result.loss_history[0], loss_last=result.loss_history[-1],
               device=f"{jax.devices()[0].device_kind} x{1 if devices is None else devices}")
    if roofline:
        n_batches = -(-n_positions // batch_size)
        fft_s, which = fft_epoch_seconds((n_energies, batch_size, n_modes, frame_size, frame_size), n_batches)
        out.update(fft_epoch_s=fft_s, fft_lib=which, epoch_over_fft=epoch / fft_s)
    out.update(memory())
    return out


def memory():
    """Peak memory: the process's VmHWM (host) and, where the backend reports it, the device's."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            out["host_peak_gb"] = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1e6
    except (OSError, StopIteration):
        pass
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_gb"] = stats["peak_bytes_in_use"] / 1e9
        out["device_limit_gb"] = stats.get("bytes_limit", 0) / 1e9
    return out


if __name__ == "__main__":  # one measurement, JSON on stdout (used by bench_epoch in a child process)
    import sys

    print("RESULT" + json.dumps(measure(**json.loads(sys.argv[1]))))
