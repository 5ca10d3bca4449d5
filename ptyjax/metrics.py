"""Figures of merit: against a known truth (object NRMSE, Fourier ring correlation, position errors,
chemistry), and the loss trend of a reconstruction (:func:`loss_trend`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import ObjectGrid


def resample(image, source: ObjectGrid, target: ObjectGrid, order: int = 3):
    """Resample ``image`` (..., Ny, Nx) from grid ``source`` onto grid ``target`` (cubic spline).

    Complex images are resampled as real and imaginary parts; points outside become NaN.
    """
    image = np.asarray(image)
    if np.iscomplexobj(image):
        return resample(image.real, source, target, order) + 1j * resample(image.imag, source, target, order)
    ty, tx = target.coordinates()
    iy = (ty - source.origin[0]) / source.pixel_size
    ix = (tx - source.origin[1]) / source.pixel_size
    coords = np.stack(np.meshgrid(iy, ix, indexing="ij"))
    flat = image.reshape((-1,) + image.shape[-2:])
    out = np.stack([ndimage.map_coordinates(im, coords, order=order, mode="constant", cval=np.nan) for im in flat])
    return out.reshape(image.shape[:-2] + target.shape)


def complex_nrmse(estimate, truth, region=None):
    """NRMSE ``||c x - t|| / ||t||`` after the best global complex scale ``c`` (phase and amplitude).

    Computed over ``region`` (bool, broadcast over leading axes); per image when stacked (..., Ny, Nx).
    """
    x = np.asarray(estimate)
    t = np.asarray(truth)
    w = np.ones(t.shape[-2:], bool) if region is None else np.asarray(region, bool)
    w = np.broadcast_to(w, t.shape)
    x = np.where(w, x, 0)
    t = np.where(w, t, 0)
    axes = (-2, -1)
    c = np.sum(np.conj(x) * t, axis=axes) / np.maximum(np.sum(np.abs(x) ** 2, axis=axes), 1e-30)
    residual = c[..., None, None] * x - t
    return np.sqrt(np.sum(np.abs(residual) ** 2, axis=axes) / np.maximum(np.sum(np.abs(t) ** 2, axis=axes), 1e-30))


def fourier_ring_correlation(a, b, n_rings: int | None = None):
    """FRC of two images (Ny, Nx) (real or complex): (spatial frequency in 1/pixel, FRC, pixels per ring)."""
    a = np.asarray(a)
    b = np.asarray(b)
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa = np.fft.fftshift(np.fft.fft2((a - a.mean()) * window))
    fb = np.fft.fftshift(np.fft.fft2((b - b.mean()) * window))
    fy = np.fft.fftshift(np.fft.fftfreq(a.shape[0]))
    fx = np.fft.fftshift(np.fft.fftfreq(a.shape[1]))
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    n_rings = n_rings or min(a.shape) // 2
    edges = np.linspace(0, 0.5, n_rings + 1)
    ring = np.digitize(radius, edges) - 1
    num = np.zeros(n_rings, complex)
    den_a = np.zeros(n_rings)
    den_b = np.zeros(n_rings)
    count = np.zeros(n_rings)
    inside = (ring >= 0) & (ring < n_rings)
    np.add.at(num, ring[inside], (fa * np.conj(fb))[inside])
    np.add.at(den_a, ring[inside], np.abs(fa[inside]) ** 2)
    np.add.at(den_b, ring[inside], np.abs(fb[inside]) ** 2)
    np.add.at(count, ring[inside], 1)
    frc = np.real(num) / np.sqrt(np.maximum(den_a * den_b, 1e-300))
    return 0.5 * (edges[1:] + edges[:-1]), frc, count


def frc_resolution(a, b, pixel_size_m: float, threshold: float = 0.5):
    """Half-period resolution (m) where the FRC of ``a`` and ``b`` first drops below ``threshold``.

    Returns ``pixel_size_m`` (Nyquist) when it never drops below.
    """
    freq, frc, _ = fourier_ring_correlation(a, b)
    below = np.flatnonzero(frc < threshold)
    if below.size == 0:
        return float(pixel_size_m)
    i = below[0]
    if i == 0:
        return float("inf")
    # Linear interpolation of the crossing between rings i-1 and i.
    f = freq[i - 1] + (frc[i - 1] - threshold) * (freq[i] - freq[i - 1]) / (frc[i - 1] - frc[i])
    return float(pixel_size_m / (2.0 * f))


def rms_position_error(estimate_m, truth_m, valid=None):
    """RMS distance (m) between position sets (..., 2) after removing their mean offset."""
    d = np.asarray(estimate_m) - np.asarray(truth_m)
    if valid is not None:
        d = d[np.asarray(valid, bool)]
    d = d.reshape(-1, 2)
    d = d - d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=-1))))


def position_error_parts(estimate_m, truth_m):
    """RMS (m) of the two parts of the position errors (E, P, 2) after removing their mean offset:
    each energy's mean error (the stack's misregistration: drift errors) and the rest (per point)."""
    d = np.asarray(estimate_m) - np.asarray(truth_m)
    d = d - d.reshape(-1, 2).mean(axis=0)
    per_energy = d.mean(axis=1, keepdims=True)
    rms = lambda x: float(np.sqrt(np.mean(np.sum(x**2, axis=-1))))  # noqa: E731
    return rms(per_energy), rms(d - per_energy)


def compare_to_truth(results_path, truth_path, region_radius_fraction: float = 0.25) -> dict:
    """Figures of merit of a results file's ``/reconstruction`` against a simulator truth file.

    The truth object is resampled onto the reconstruction grid, after removing the one global shift
    the data cannot fix (a common translation of object and positions; found by phase correlation
    of the energy-averaged phase images). Compared inside the scanned region: points closer to a scan
    position than ``region_radius_fraction`` of the smallest frame window. Returns per-energy complex
    NRMSE (after a global complex scale per energy), phase FRC resolution at the 0.5 threshold (m),
    and RMS position errors (m) of nominal and refined positions (after removing the mean offset), the
    refined ones also split by :func:`position_error_parts`.
    """
    from . import results
    from .simulate import load_truth

    rec = results.read_group(results_path, "reconstruction")
    truth = load_truth(truth_path)
    obj = np.asarray(rec["object"])
    grid, truth_grid, shifted, shift = _aligned_grids(rec, truth)
    on_grid = resample(truth["object"], truth_grid, shifted)
    positions = np.asarray(rec["positions"])
    points = positions[np.isfinite(positions[..., 0])]
    radius = region_radius_fraction * float(np.min(rec["probe_pixel_size"])) * np.asarray(rec["probe"]).shape[-1]
    gy, gx = grid.coordinates()
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(points).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    region = (distance.reshape(grid.shape) < radius) & np.all(np.isfinite(on_grid), axis=0)
    nrmse = complex_nrmse(obj, np.nan_to_num(on_grid), region)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    frc = [frc_resolution(np.angle(o[box]), np.angle(np.nan_to_num(t[box], nan=1.0)), grid.pixel_size) for o, t in zip(obj, on_grid)]
    true_positions = np.asarray(truth["positions"])
    n = true_positions.shape[1]
    nominal = np.asarray(rec["nominal_positions"])[:, :n]
    refined = positions[:, :n]
    energy_part, point_part = position_error_parts(refined, true_positions)
    return {
        "energy_ev": np.asarray(rec["energy"]),
        "nrmse": nrmse,
        "frc_resolution_m": np.asarray(frc),
        "global_shift_px": shift,
        "position_rms_nominal_m": rms_position_error(nominal, true_positions),
        "position_rms_refined_m": rms_position_error(refined, true_positions),
        "position_rms_energy_m": energy_part,
        "position_rms_point_m": point_part,
        "pixel_size_m": grid.pixel_size,
    }


def _aligned_grids(rec: dict, truth: dict):
    """(results grid, truth grid, results grid shifted by the global shift, shift in px).

    The shift is the one translation the data cannot fix (object and positions together), found by
    phase correlation of the energy-averaged phase images of reconstruction and truth.
    """
    from .spectra import phase_correlation_shift

    obj = np.asarray(rec["object"])
    grid = ObjectGrid(obj.shape[-2:], float(rec["pixel_size"]), tuple(np.asarray(rec["origin"], float)))
    truth_grid = ObjectGrid(truth["object"].shape[-2:], float(truth["pixel_size"]), tuple(np.asarray(truth["origin"], float)))
    on_grid = resample(truth["object"], truth_grid, grid)
    valid = np.all(np.isfinite(on_grid), axis=0)
    mean_phase = lambda o: np.where(valid, np.angle(np.where(valid, o, 1).mean(axis=0)), 0.0)
    shift = phase_correlation_shift(mean_phase(obj), mean_phase(on_grid))
    origin = (grid.origin[0] - shift[0] * grid.pixel_size, grid.origin[1] - shift[1] * grid.pixel_size)
    return grid, truth_grid, ObjectGrid(grid.shape, grid.pixel_size, origin), shift


def truth_on_results_grid(results_path, truth_path, names, order=0):
    """Truth maps ``names`` resampled (nearest by default) onto the results' object grid, after the
    global shift of :func:`compare_to_truth`."""
    from . import results
    from .simulate import load_truth

    rec = results.read_group(results_path, "reconstruction")
    truth = load_truth(truth_path)
    _, truth_grid, shifted, _ = _aligned_grids(rec, truth)
    return {n: resample(np.asarray(truth[n], np.float64), truth_grid, shifted, order=order) for n in names}


def chemistry_errors(chemistry: dict, truth: dict, inside, names) -> dict:
    """Errors of the maps ``names`` of ``chemistry`` against ``truth`` (maps on the same grid) over
    the pixels ``inside`` where both are finite: ``<name>_pixels``; for edge energies the global
    offset (median, eV) and the RMSE after removing it (eV), for ratios the mean and median relative
    error; and ``<name>_coverage``, the share of pixels whose error (after the offset) is within the
    map's ``<name>_std``, when that map exists."""
    out = {}
    for name in names:
        estimate, true = np.asarray(chemistry[name], np.float64), np.asarray(truth[name], np.float64)
        ok = inside & np.isfinite(estimate) & np.isfinite(true)
        out[f"{name}_pixels"] = int(ok.sum())
        error = estimate[ok] - true[ok]
        if name.startswith("edge_energy"):
            out[f"{name}_offset_ev"] = float(np.median(error))
            error = error - out[f"{name}_offset_ev"]  # calibration is not what is tested
            out[f"{name}_rmse_ev"] = float(np.sqrt(np.mean(error**2)))
        else:
            relative = np.abs(error / true[ok])
            out[f"{name}_mean_relative_error"] = float(np.mean(relative))
            out[f"{name}_median_relative_error"] = float(np.median(relative))
        if f"{name}_std" in chemistry:
            out[f"{name}_coverage"] = float(np.mean(np.abs(error) < np.asarray(chemistry[f"{name}_std"])[ok]))
    return out


def compare_chemistry_to_truth(results_path, truth_path, erode_px: int = 2) -> dict:
    """Errors of the ``/chemistry`` (and ``/clustering``) maps against a simulator truth file.

    Compared inside the particle (truth ``phase_label > 0`` and the analysis mask, eroded by
    ``erode_px`` so that pixels mixing particle and vacuum do not dominate): RMSE of each edge-energy
    map after removing one global offset per element (eV; calibration is not what is tested), mean
    relative error of atomic ratios, and the adjusted Rand index of the groups (if clustered).
    """
    from scipy import ndimage
    from sklearn.metrics import adjusted_rand_score

    from . import results

    chemistry = results.read_group(results_path, "chemistry")
    names = ["phase_label"] + [n for n in ("edge_energy_Mn", "edge_energy_Ni", "ni_mn_ratio") if n in chemistry]
    truth = truth_on_results_grid(results_path, truth_path, names)
    label = np.nan_to_num(truth["phase_label"], nan=0).astype(int)
    inside = ndimage.binary_erosion((label > 0) & np.asarray(chemistry["mask"], bool), iterations=erode_px)
    out = {"pixels": int(inside.sum()), **chemistry_errors(chemistry, truth, inside, names[1:])}
    try:
        labels = np.asarray(results.read_group(results_path, "clustering")["labels"])
        ok = inside & (labels >= 0)
        out["adjusted_rand_index"] = float(adjusted_rand_score(label[ok], labels[ok]))
        out["n_groups"] = int(labels.max() + 1)
    except Exception:  # not clustered yet
        pass
    return out


def loss_trend(loss_history, k: int | None = None) -> tuple[float, int]:
    """(relative fall of the loss per epoch, k) over the last ``k`` epochs (default a tenth of them, at
    least 2): ``(L[-k-1] - L[-1]) / (k L[-1])``. Near 0 when converged; a reconstruction whose loss
    still falls by tenths of a percent per epoch changes with more epochs. NaN with ``k`` or fewer epochs."""
    loss = np.asarray(loss_history, np.float64)
    k = max(2, loss.size // 10) if k is None else int(k)
    if loss.size <= k:
        return float("nan"), k
    return float((loss[-k - 1] - loss[-1]) / (k * loss[-1])), k
