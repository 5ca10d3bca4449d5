"""The CXI (HDF5) layout of one far-field ptychography scan at one photon energy.

Paths follow the Coherent X-ray Imaging format as written by PyNX and read by PtyPy and CDTools.
CXI stores the *sample* translation (x, y, z) in metres; the probe position in the object frame is
``-translation``. Energies are stored in joules.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .physics import JOULE_PER_EV

DATA_PATHS = ("entry_1/instrument_1/detector_1/data", "entry_1/data_1/data")
TRANSLATION_PATHS = ("entry_1/sample_1/geometry_1/translation", "entry_1/data_1/translation")
ENERGY_PATH = "entry_1/instrument_1/source_1/energy"
DETECTOR = "entry_1/instrument_1/detector_1"
DISTANCE_PATH = f"{DETECTOR}/distance"
X_PIXEL_PATH = f"{DETECTOR}/x_pixel_size"
Y_PIXEL_PATH = f"{DETECTOR}/y_pixel_size"
MASK_PATH = f"{DETECTOR}/mask"
DARK_PATH = f"{DETECTOR}/dark"
MONITOR_PATH = "entry_1/data_1/monitor"


def write_cxi(
    path,
    frames,
    probe_positions_m,
    energy_ev: float,
    distance_m: float,
    detector_pixel_m: float | tuple[float, float],
    mask=None,
    dark=None,
    monitor=None,
):
    """Write one energy's scan as a standard CXI file (atomically: write, then rename).

    ``frames``: (N, ny, nx) counts, zero frequency at the centre. ``probe_positions_m``: (N, 2) probe
    positions (y, x) in metres in the object frame; stored as the sample translation ``-position`` in
    (N, 3) = (x, y, z). ``mask``: (ny, nx), non-zero marks a bad pixel.
    """
    path = Path(path)
    frames = np.asarray(frames)
    pos = np.asarray(probe_positions_m, dtype=np.float64)
    translation = np.zeros((pos.shape[0], 3))
    translation[:, 0] = -pos[:, 1]
    translation[:, 1] = -pos[:, 0]
    py, px = (detector_pixel_m, detector_pixel_m) if np.isscalar(detector_pixel_m) else detector_pixel_m
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["creator"] = "ptyjax"
        f.create_dataset("cxi_version", data=150)
        entry = f.create_group("entry_1")
        entry.attrs["NX_class"] = "NXentry"
        data = f.create_dataset(DATA_PATHS[0], data=frames, chunks=(1,) + frames.shape[1:], compression="gzip", compression_opts=1)
        data.attrs["units"] = "counts"
        f[ENERGY_PATH] = float(energy_ev) * JOULE_PER_EV
        f[ENERGY_PATH].attrs["units"] = "J"
        for p, v in ((DISTANCE_PATH, distance_m), (X_PIXEL_PATH, px), (Y_PIXEL_PATH, py)):
            f[p] = float(v)
            f[p].attrs["units"] = "m"
        f[TRANSLATION_PATHS[0]] = translation
        f[TRANSLATION_PATHS[0]].attrs["units"] = "m"
        f["entry_1/data_1/data"] = h5py.SoftLink("/" + DATA_PATHS[0])
        f["entry_1/data_1/translation"] = h5py.SoftLink("/" + TRANSLATION_PATHS[0])
        if mask is not None:
            f[MASK_PATH] = np.asarray(mask).astype(np.uint32)
        if dark is not None:
            f[DARK_PATH] = np.asarray(dark, dtype=np.float32)
        if monitor is not None:
            f[MONITOR_PATH] = np.asarray(monitor, dtype=np.float64)
    os.replace(tmp, path)
    return path


# --- read side -------------------------------------------------------------------------------------


def first_present(h5file, paths):
    """The first of ``paths`` present in the open ``h5file`` (soft links resolved), or ``None``."""
    return next((p for p in paths if p in h5file), None)
