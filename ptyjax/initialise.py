"""Starting values that need no hand-tuning: probes from the data alone.

The far-field amplitude of the probe is the square root of the mean diffraction pattern (bad pixels
filled from their neighbours, never used as they are). Its phase is not in the data: a focused beam
measured out of focus has a curvature whose magnitude *and sign* matter (a flat or wrongly signed
start leaves conventional engines stalled at several times their final error). ptyjax therefore
tries a small set of defocus distances of both signs, chosen from the pupil size and the scan step,
runs a few epochs with each and keeps the one with the lowest loss (:func:`ptyjax.fit.choose_defocus`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .propagation import fresnel_propagate, to_sample_plane


def fill_bad_pixels(pattern, bad_pixels, size: int = 5):
    """Replace bad pixels of ``pattern`` (ny, nx) by the median of the good ones around them."""
    pattern = np.asarray(pattern, dtype=np.float64)
    bad = np.asarray(bad_pixels, dtype=bool)
    if not bad.any():
        return pattern
    masked = np.where(bad, np.nan, pattern)
    filled = ndimage.generic_filter(masked, np.nanmedian, size=size, mode="nearest")
    out = np.where(bad, filled, pattern)
    return np.nan_to_num(out, nan=0.0)


def pupil_radius(mean_pattern, fraction: float = 0.9) -> float:
    """Radius (detector pixels, from the centre) holding ``fraction`` of the mean pattern's photons."""
    n_y, n_x = mean_pattern.shape
    y, x = np.indices(mean_pattern.shape)
    r = np.hypot(y - n_y // 2, x - n_x // 2).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(mean_pattern.ravel()[order])
    return float(r[order][np.searchsorted(cumulative, fraction * cumulative[-1])])


def defocus_candidates(mean_pattern, pixel_size_m: float, wavelength_m: float, scan_step_m: float, window_m: float):
    """Defocus distances (m) to try: beam diameters of 0 to 3 scan steps, both signs.

    A pupil of radius ``q`` (1/m) defocused by ``z`` gives a beam of diameter ``~2 lambda q |z|``.
    """
    n = mean_pattern.shape[0]
    q_max = max(pupil_radius(mean_pattern), 1.0) / (n * pixel_size_m)
    diameters = np.array([0.5, 1.0, 2.0, 3.0]) * scan_step_m
    diameters = diameters[diameters < 0.8 * window_m]
    distances = diameters / (2.0 * wavelength_m * q_max)
    return [0.0] + [float(s * z) for z in distances for s in (1.0, -1.0)]


def probe_from_pattern(mean_pattern, bad_pixels, n_modes: int, defocus_m: float, pixel_size_m: float, wavelength_m: float, mode_power=0.1, seed: int = 0):
    """Probe modes (M, N, N) complex64 on the native grid from a frame's mean diffraction pattern.

    The first mode has the far-field amplitude ``sqrt(mean pattern)`` and the given defocus; further
    modes are the first one times low-order phase patterns (distinct and roughly orthogonal), with
    ``mode_power`` of the photons shared among them. Total ``sum |P|^2`` equals the mean photons per
    frame (bad pixels filled, not counted as measured).
    """
    pattern = fill_bad_pixels(mean_pattern, bad_pixels)
    amplitude = np.sqrt(np.maximum(pattern, 0.0))
    focus = np.asarray(to_sample_plane(amplitude.astype(np.complex64)))
    probe = np.asarray(fresnel_propagate(focus, pixel_size_m, wavelength_m, defocus_m))
    n = probe.shape[-1]
    modes = [probe]
    y, x = (np.indices((n, n)) - n // 2) / (n / 2)
    patterns = [x, y, x * y, x**2 - y**2]
    for m in range(1, n_modes):
        modes.append(probe * patterns[(m - 1) % len(patterns)] * (1 + (m - 1) // len(patterns)))
    modes = np.stack(modes)
    total = pattern.sum()
    weights = np.array([1.0 - mode_power] + [mode_power / max(n_modes - 1, 1)] * (n_modes - 1))
    power = np.sum(np.abs(modes) ** 2, axis=(-2, -1))
    modes = modes * np.sqrt(weights * total / np.maximum(power, 1e-30))[:, None, None]
    return modes.astype(np.complex64)


def mean_scan_step(positions_m) -> float:
    """Median distance (m) from each scan point to its nearest neighbour."""
    pos = np.asarray(positions_m, dtype=np.float64)
    d = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))
