"""Detector and object-grid geometry.

The real-space pixel size of a far-field ptychography frame is ``dx = lambda z / (N p)``: it changes
with photon energy, so every energy has its own native grid and ptyjax reconstructs all energies on
one common object grid (:class:`ObjectGrid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .physics import wavelength


def real_space_pixel_size(energy_ev, distance_m, detector_pixel_m, n_pixels):
    """Real-space pixel size (m) of an ``n_pixels``-wide far-field frame.

    ``dx = lambda(E) z / (N p)`` for detector distance ``z`` (m) and detector pixel pitch ``p`` (m).
    Works elementwise on arrays.
    """
    return wavelength(energy_ev) * np.asarray(distance_m) / (np.asarray(n_pixels) * np.asarray(detector_pixel_m))


@dataclass(frozen=True)
class ObjectGrid:
    """A regular 2-D grid in the probe-position frame.

    ``origin`` is the (y, x) position in metres of pixel [0, 0]; ``pixel_size`` in metres; ``shape``
    is (Ny, Nx). Pixel [i, j] sits at ``origin + (i, j) * pixel_size``.
    """

    shape: tuple[int, int]
    pixel_size: float
    origin: tuple[float, float]

    def coordinates(self):
        """(y, x) 1-D coordinate vectors in metres."""
        y = self.origin[0] + self.pixel_size * np.arange(self.shape[0])
        x = self.origin[1] + self.pixel_size * np.arange(self.shape[1])
        return y, x

    def to_pixels(self, positions_m):
        """Convert (..., 2) positions (y, x) in metres to fractional pixel indices."""
        return (np.asarray(positions_m) - np.asarray(self.origin)) / self.pixel_size

    @classmethod
    def covering(cls, positions_m, window_m, pixel_size, margin_px=2):
        """The smallest grid holding every window of size ``window_m`` (y, x) centred on a position.

        ``positions_m``: (..., 2) probe positions (y, x) in metres, any leading shape.
        """
        pos = np.asarray(positions_m).reshape(-1, 2)
        half = np.asarray(window_m, dtype=float) / 2.0
        lo = pos.min(axis=0) - half - margin_px * pixel_size
        hi = pos.max(axis=0) + half + margin_px * pixel_size
        shape = tuple(int(n) for n in np.ceil((hi - lo) / pixel_size).astype(int) + 1)
        return cls(shape=shape, pixel_size=float(pixel_size), origin=(float(lo[0]), float(lo[1])))
