"""Input data: lazy, validated reading of CXI scans (one file per photon energy).

:class:`ScanFile` holds the metadata of one CXI file and reads frames on demand; :class:`Dataset`
is a multi-energy set of scans sorted by energy, checked for a common detector geometry and grouped
by absorption edge. Frames are never all in memory at once except through :meth:`Dataset.load_all`.

Every problem with the input raises :class:`ptyjax.errors.DataError` naming the file, the dataset
path inside it and the problem. Layout and conventions: ``ptyjax.cxi`` and DESIGN.md section 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import xraydb
from scipy import ndimage

from . import cxi
from .errors import DataError, PtyjaxError
from .geometry import real_space_pixel_size
from .physics import JOULE_PER_EV

# CXI stores photon energies in joules; 1e-12 J (6 MeV) is far beyond any X-ray ptychography energy,
# so a larger value is not in joules (usually eV or keV written by mistake).
MAX_ENERGY_J = 1e-12
# Energies closer than this (eV) are the same energy twice: monochromator steps are >= ~0.1 eV.
DUPLICATE_ENERGY_EV = 1e-3
# Relative tolerance when comparing detector geometry (distance, pixel pitch) across files and the
# real-space pixel in y and x: far below any physical difference, above float round-off.
GEOMETRY_RTOL = 1e-6
# Frames per read when scanning a whole file: about this many bytes of float32 at a time.
CHUNK_BYTES = 8 * 2**20  # bounds the temporary copies of a validation or mean-pattern pass (~4 per chunk)
# Smallest median step between neighbouring scan positions, in real-space pixels: real scans step by
# a fraction of the probe (many pixels); a step of a tenth of a pixel means wrong length units.
MIN_STEP_PX = 0.1
# Default edges to group energies by: the K edges of the 3d transition metals (battery cathodes,
# catalysts). Their edges are >= 499 eV apart, wider than EDGE_WINDOW_EV, so groups never overlap.
DEFAULT_EDGES = tuple(f"{element}_K" for element in ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"))
# An energy belongs to an edge E0 if E - E0 lies in this window (eV): the XANES region, from the
# pre-edge to where EXAFS takes over.
EDGE_WINDOW_EV = (-100.0, 300.0)
# Group name for energies near none of the edges.
NO_EDGE = "none"


@dataclass(frozen=True, eq=False)
class ScanFile:
    """Metadata of one CXI scan, validated on :meth:`open`; frames stay on disk until read.

    Units: ``energy_ev`` eV; ``distance_m``, ``detector_pixel_m`` (y, x) and ``probe_positions_m``
    (N, 2) (y, x) in metres. ``probe_positions_m = -translation`` (CXI stores the sample motion).
    ``bad_pixels`` (ny, nx) bool, True = bad (non-zero in the CXI mask; all False without one).
    ``dark`` (ny, nx) float32 or None; ``monitor`` (N,) or None: not applied by :meth:`read_frames`;
    the engine models it (:attr:`relative_flux`).

    Rectangular detector frames (``detector_shape``, e.g. a 2:1 module) with square detector pixels
    are padded symmetrically to a square ``frame_shape`` (n = the larger side) with bad pixels, so
    the zero frequency stays at index n // 2 and the real-space pixel ``lambda z / (n p)`` is square:
    the padding is unmeasured, the loss ignores it, nothing is cropped away. ``bad_pixels`` and
    ``dark`` have the padded shape.
    """

    path: Path
    data_path: str
    energy_ev: float
    n_frames: int
    frame_shape: tuple[int, int]
    distance_m: float
    detector_pixel_m: tuple[float, float]
    probe_positions_m: np.ndarray
    bad_pixels: np.ndarray
    dark: np.ndarray | None
    monitor: np.ndarray | None
    good_pixel_counts: float
    detector_shape: tuple[int, int] | None = None  # as stored, when it differs from frame_shape

    @property
    def _padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((before, after) rows, (before, after) columns) that pad the stored frames to frame_shape."""
        stored = self.detector_shape or self.frame_shape
        return tuple(_centred_padding(m, n) for m, n in zip(stored, self.frame_shape))

    @classmethod
    def open(cls, path) -> ScanFile:
        """Open and validate the CXI file ``path``; reads metadata and scans the frames chunk by chunk."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "does not exist" if not path.exists() else "is not a file")
        try:
            with h5py.File(path, "r") as f:
                return _read_scan(path, f)
        except OSError as error:
            raise DataError(path, f"cannot be read as HDF5 (not HDF5, truncated or corrupt: {error})") from None

    @property
    def has_dark(self) -> bool:
        return self.dark is not None

    @property
    def has_monitor(self) -> bool:
        return self.monitor is not None

    @property
    def relative_flux(self) -> np.ndarray:
        """(N,) each frame's incident flux relative to the scan's mean: ``monitor / mean(monitor)``,
        ones without a monitor. The engine models frame ``i`` as ``relative_flux[i]`` times the
        mean-flux intensity (:attr:`ptyjax.fit.Problem.flux`)."""
        if self.monitor is None:
            return np.ones(self.n_frames)
        return self.monitor / self.monitor.mean()

    def at_mean_flux(self, frames, indices) -> np.ndarray:
        """``frames`` (k, ny, nx) of the frame numbers ``indices`` (k,) divided by their
        :attr:`relative_flux`: the counts each would hold at the scan's mean flux."""
        return frames / self.relative_flux[np.asarray(indices), None, None]

    @property
    def pixel_size_m(self) -> np.ndarray:
        """Real-space pixel size (y, x) in metres, ``lambda z / (N p)``: depends on the energy."""
        return real_space_pixel_size(self.energy_ev, self.distance_m, self.detector_pixel_m, self.frame_shape)

    @property
    def scan_extent_m(self) -> np.ndarray:
        """(y, x) extent of the probe positions in metres (max - min)."""
        return np.ptp(self.probe_positions_m, axis=0)

    def read_frames(self, indices) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as float32 (k, ny, nx), read from disk.

        Dark subtracted and clipped at 0 when the file has a dark frame; bad pixels set to 0 (raw files
        often mark them with -1 or NaN). Not monitor normalised: see ``monitor``.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < -self.n_frames or indices.max() >= self.n_frames):
            raise IndexError(f"frame indices out of range for {self.n_frames} frames")
        indices = indices % self.n_frames
        # h5py fancy indexing needs increasing, unique indices: read those, then reorder.
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            with h5py.File(self.path, "r") as f:
                raw = f[self.data_path][unique] if unique.size else np.zeros((0,) + (self.detector_shape or self.frame_shape))
        except OSError as error:
            raise DataError(self.path, f"cannot read frames from /{self.data_path} ({error})") from None
        return self._correct(raw)[inverse]

    def iter_chunks(self, chunk_frames: int | None = None):
        """Yield ``(start, frames)`` over the whole scan in contiguous chunks (float32, as read_frames)."""
        try:
            with h5py.File(self.path, "r") as f:
                for start, raw in _chunks(f[self.data_path], chunk_frames):
                    yield start, self._correct(raw)
        except OSError as error:
            raise DataError(self.path, f"cannot read frames from /{self.data_path} ({error})") from None

    def total_counts(self) -> float:
        """Total counts in good pixels over all frames (dark subtracted), computed chunk by chunk on open."""
        return self.good_pixel_counts

    def _correct(self, raw) -> np.ndarray:
        frames = np.asarray(raw, dtype=np.float32)
        if self.detector_shape is not None:
            frames = np.pad(frames, ((0, 0),) + self._padding)
        if self.dark is not None:
            frames = np.maximum(frames - self.dark, 0.0)
        return np.where(self.bad_pixels, np.float32(0.0), frames)


def _read_scan(path: Path, f: h5py.File) -> ScanFile:
    """Read and check the metadata of an open CXI file; scan its frames once (counts check, total)."""
    data_path = _require(path, f, cxi.DATA_PATHS)
    data = f[data_path]
    if not isinstance(data, h5py.Dataset) or data.ndim != 3 or data.shape[0] == 0:
        shape = getattr(data, "shape", "a group")
        raise DataError(path, f"/{data_path} is {shape}; expected frames (N, ny, nx) with N >= 1")
    n_frames, ny, nx = (int(s) for s in data.shape)

    energy_j = _positive_scalar(path, f, cxi.ENERGY_PATH)
    if energy_j > MAX_ENERGY_J:
        raise DataError(
            path, f"/{cxi.ENERGY_PATH} = {energy_j:g} is not a photon energy in joules (CXI unit); eV or keV written by mistake?"
        )
    distance_m = _positive_scalar(path, f, cxi.DISTANCE_PATH)
    detector_pixel_m = (_positive_scalar(path, f, cxi.Y_PIXEL_PATH), _positive_scalar(path, f, cxi.X_PIXEL_PATH))

    translation_name = _require(path, f, cxi.TRANSLATION_PATHS)
    translation = _read_translation(path, f, translation_name, data_path, n_frames)
    # CXI translation columns are (x, y, z) of the sample; the probe moves the other way: (y, x) = -(t_y, t_x).
    probe_positions_m = -translation[:, [1, 0]]

    bad_pixels = np.zeros((ny, nx), dtype=bool)
    if cxi.MASK_PATH in f:
        mask = _read_frame_like(path, f, cxi.MASK_PATH, (ny, nx))
        bad_pixels = mask != 0
    dark = None
    if cxi.DARK_PATH in f:
        dark = _read_frame_like(path, f, cxi.DARK_PATH, (ny, nx)).astype(np.float32)
        if not np.all(np.isfinite(dark[~bad_pixels])):
            raise DataError(path, f"/{cxi.DARK_PATH} has non-finite values in good pixels")
    monitor = None
    if cxi.MONITOR_PATH in f:
        monitor = np.asarray(f[cxi.MONITOR_PATH][()], dtype=np.float64)
        if monitor.shape != (n_frames,):
            raise DataError(path, f"/{cxi.MONITOR_PATH} has shape {monitor.shape}; expected ({n_frames},), one value per frame")
        if not np.all(np.isfinite(monitor) & (monitor > 0)):
            raise DataError(path, f"/{cxi.MONITOR_PATH} has non-positive or non-finite values")

    total, marked = _check_counts(path, data, bad_pixels, dark)
    bad_pixels = bad_pixels | marked
    detector_shape = None
    if ny != nx and np.isclose(*detector_pixel_m, rtol=GEOMETRY_RTOL, atol=0):
        detector_shape, n = (ny, nx), max(ny, nx)
        padding = (_centred_padding(ny, n), _centred_padding(nx, n))
        bad_pixels = np.pad(bad_pixels, padding, constant_values=True)
        dark = None if dark is None else np.pad(dark, padding)
        ny = nx = n
    scan = ScanFile(
        path=path,
        data_path=data_path,
        energy_ev=energy_j / JOULE_PER_EV,
        n_frames=n_frames,
        frame_shape=(ny, nx),
        distance_m=distance_m,
        detector_pixel_m=detector_pixel_m,
        probe_positions_m=probe_positions_m,
        bad_pixels=bad_pixels,
        dark=dark,
        monitor=monitor,
        good_pixel_counts=total,
        detector_shape=detector_shape,
    )
    _check_overlap(scan, translation_name)
    return scan


def _check_overlap(scan: ScanFile, name: str) -> None:
    """Raise unless the scan's step suits its frames: the median distance from each probe position to
    its nearest neighbour must be shorter than a frame's field of view (``n`` real-space pixels), else
    no two frames share illuminated area and there is no ptychography, and at least
    :data:`MIN_STEP_PX` real-space pixels, else the positions nearly coincide. Translations, detector
    distance or pixel pitch written in micrometres or millimetres instead of metres fail here (and
    would otherwise ask for an object grid of astronomical size, or collapse the scan into a pixel)."""
    if scan.n_frames < 2:
        return
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(scan.probe_positions_m).query(scan.probe_positions_m, k=2)
    step, pixel = float(np.median(distance[:, 1])), float(np.min(scan.pixel_size_m))
    field = scan.frame_shape[0] * pixel
    if step >= field or step < MIN_STEP_PX * pixel:
        problem = ("more than a frame's field of view, so the frames do not overlap" if step >= field
                   else f"less than {MIN_STEP_PX:g} of a pixel, so the positions nearly coincide")
        raise DataError(
            scan.path,
            f"/{name}: neighbouring positions are {step:.3g} m apart (median), {step / pixel:.3g} real-space pixels of "
            f"{pixel:.3g} m (from the energy, detector distance and pixel pitch; a frame is {scan.frame_shape[0]} pixels): "
            f"{problem}. CXI lengths are in metres: translations, distance or pixel pitch written in mm or um?",
        )


def _centred_padding(stored: int, padded: int) -> tuple[int, int]:
    """(before, after) that move index ``stored // 2`` (the zero frequency) to ``padded // 2``."""
    before = padded // 2 - stored // 2
    return before, padded - stored - before


def _require(path, f, candidates) -> str:
    """The first present of ``candidates`` in ``f``, or a DataError naming them all."""
    found = cxi.first_present(f, candidates)
    if found is None:
        names = " or ".join(f"/{c}" for c in candidates)
        raise DataError(path, f"missing required dataset {names}")
    return found


def _positive_scalar(path, f, name: str) -> float:
    value = np.asarray(f[_require(path, f, (name,))][()])
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise DataError(path, f"/{name} should be one number, found {value.dtype} of shape {value.shape}")
    value = float(value.reshape(()))
    if not np.isfinite(value) or value <= 0:
        raise DataError(path, f"/{name} must be positive and finite, found {value:g}")
    return value


def _read_translation(path, f, name: str, data_path: str, n_frames: int) -> np.ndarray:
    """Sample translations as (N, 3) = (x, y, z) metres, from either CXI path and either layout.

    CDTools and PtyPy store (N, 3), PyNX (3, N); the layout is found by matching N to the number of
    frames. With exactly 3 frames both match: the CXI standard (N, 3) is assumed. ``name``: the
    translation dataset's path in ``f``.
    """
    translation = np.asarray(f[name][()], dtype=np.float64)
    if translation.shape == (n_frames, 3):
        pass
    elif translation.shape == (3, n_frames):
        translation = translation.T
    else:
        raise DataError(
            path,
            f"shape mismatch: /{name} has shape {translation.shape} but /{data_path} has {n_frames} frames "
            f"(expected ({n_frames}, 3) or (3, {n_frames}))",
        )
    if not np.all(np.isfinite(translation)):
        raise DataError(path, f"/{name} has non-finite values")
    return translation


def _read_frame_like(path, f, name: str, frame_shape) -> np.ndarray:
    value = np.asarray(f[name][()])
    if value.shape != tuple(frame_shape):
        raise DataError(path, f"/{name} has shape {value.shape}; expected the frame shape {tuple(frame_shape)}")
    return value


def _chunks(data: h5py.Dataset, chunk_frames: int | None = None):
    """Yield ``(start, raw_frames)`` of an open (N, ny, nx) dataset in chunks of about CHUNK_BYTES."""
    n_frames, ny, nx = data.shape
    if chunk_frames is None:
        chunk_frames = max(1, CHUNK_BYTES // (4 * ny * nx))
    for start in range(0, n_frames, chunk_frames):
        yield start, data[start : start + chunk_frames]


def _check_counts(path, data: h5py.Dataset, bad_pixels, dark) -> tuple[float, np.ndarray]:
    """Check good pixels for NaN/inf and negative counts (first bad frame reported), for the integer
    type's maximum (:func:`_marker_pixels`) and that the frames are centred on the zero frequency
    (:func:`_check_centred`). Returns the total counts and the pixels to mask in addition."""
    good = ~bad_pixels
    pattern = np.zeros(int(good.sum()), np.float64)
    marker = np.iinfo(data.dtype).max if data.dtype.kind in "iu" else None
    at_marker = np.zeros(int(good.sum()), np.int64)
    for start, raw in _chunks(data):
        if marker is not None:
            at_marker += np.sum(np.asarray(raw)[:, good] == marker, axis=0)
        frames = np.asarray(raw, dtype=np.float32)[:, good]
        for problem, is_bad in (("non-finite counts (NaN or inf)", ~np.isfinite(frames)), ("negative counts", frames < 0)):
            bad_frames = np.flatnonzero(is_bad.any(axis=1))
            if bad_frames.size:
                raise DataError(path, f"{problem} in frame {start + bad_frames[0]} of {data.name}")
        if dark is not None:
            frames = np.maximum(frames - dark[good], 0.0)
        pattern += np.sum(frames, axis=0, dtype=np.float64)
    extra_bad = np.zeros(bad_pixels.shape, bool)
    if at_marker.any():
        extra_bad[good] = _marker_pixels(path, data, at_marker, good, marker)
        pattern = np.where(extra_bad[good], 0.0, pattern)
    _check_centred(path, data.name, pattern[~extra_bad[good]], good & ~extra_bad)
    return float(pattern.sum()), extra_bad


def _marker_pixels(path, data: h5py.Dataset, at_marker, good, marker) -> np.ndarray:
    """Detectors flag gaps and dead pixels with their integer type's maximum (e.g. 65535, 2^32 - 1),
    which read as counts would be silently wrong. ``at_marker``: frames at ``marker`` per good pixel.
    A pixel at the marker in every frame is masked (returned True); one at it in some frames only
    (a saturated or intermittently flagged pixel) raises, as the frames cannot be used as they are."""
    always = at_marker == data.shape[0]
    sometimes = (at_marker > 0) & ~always
    if sometimes.any():
        where = np.argwhere(good)[sometimes][0]  # boolean indexing keeps argwhere's row-major order
        raise DataError(
            path,
            f"{data.name}: {int(sometimes.sum())} pixels read {marker} (the {data.dtype} maximum, a detector's gap, dead-pixel "
            f"or saturation marker) in some frames only, e.g. pixel (row {where[0]}, column {where[1]}) in "
            f"{int(at_marker[sometimes][0])} of {data.shape[0]} frames: add them to the mask or correct the frames",
        )
    return always


def _check_centred(path, name: str, pattern, good) -> None:
    """Raise if the summed frames ``pattern`` (over the ``good`` pixels) are less than half as bright
    per pixel in the central half of the frame as outside it. A far-field pattern centred on the zero
    frequency is several times brighter there (the direct beam and the low angles carry most photons,
    a beamstop or not); a featureless one scores 1 and passes. Frames
    stored with the zero frequency at the corner (FFT order) or cropped off the beam centre fail:
    reconstructed as they are, they give wrong numbers, not an error. (Measured ratio on the tiny
    preset: 7-190 centred, below 1e-3 in FFT order.)"""
    ny, nx = good.shape
    central = np.zeros(good.shape, bool)
    central[ny // 4 : ny - ny // 4, nx // 4 : nx - nx // 4] = True
    inner, outer = central[good], ~central[good]
    if not inner.any() or not outer.any() or pattern.sum() <= 0:
        return
    ratio = pattern[inner].mean() / max(pattern[outer].mean(), 1e-300)
    if ratio < 0.5:
        flat = np.zeros(good.shape)
        flat[good] = pattern
        row, col = np.unravel_index(np.argmax(ndimage.uniform_filter(flat, max(3, min(ny, nx) // 8))), good.shape)
        raise DataError(
            path,
            f"{name}: the frames are not centred on the zero frequency (mean counts per pixel in the central half "
            f"{ratio:.2g}x those outside it; brightest region near row {row}, column {col} of {ny} x {nx}). "
            "Store the frames with the direct beam at the centre (index n // 2): undo an FFT shift "
            "(numpy.fft.fftshift) or crop around the beam centre",
        )


# --- absorption edges ------------------------------------------------------------------------------


def edge_energy_ev(edge: str) -> float:
    """Energy (eV) of an absorption edge named ``"<Element>_<level>"``, e.g. ``"Mn_K"``, ``"Ce_L3"`` (xraydb)."""
    element, _, level = edge.partition("_")
    try:
        found = xraydb.xray_edge(element, level)  # None for an unknown level
    except ValueError:  # unknown element
        found = None
    if found is None:
        raise PtyjaxError(f"unknown absorption edge {edge!r} (expected e.g. 'Mn_K' or 'Ce_L3')")
    return float(found.energy)


def group_by_edge(energies_ev, edges=DEFAULT_EDGES, window_ev=EDGE_WINDOW_EV) -> dict[str, list[int]]:
    """Group energy indices by absorption edge: ``{"Mn_K": [0, 1, ...], "Ni_K": [...], "none": [...]}``.

    Each energy (eV) goes to the edge ``E0`` closest to it among those with ``E - E0`` inside
    ``window_ev`` (eV, default the XANES region -100/+300 eV); energies near no edge go to ``"none"``.
    Only non-empty groups are returned, ordered by edge energy.
    """
    names = list(edges)
    edge_ev = np.array([edge_energy_ev(name) for name in names])
    groups: dict[str, list[int]] = {}
    for order in np.argsort(edge_ev, kind="stable"):
        groups[names[order]] = []
    groups[NO_EDGE] = []
    for index, energy in enumerate(np.asarray(energies_ev, dtype=np.float64)):
        offset = energy - edge_ev
        inside = (offset >= window_ev[0]) & (offset <= window_ev[1])
        if inside.any():
            best = np.flatnonzero(inside)[np.argmin(np.abs(offset[inside]))]
            groups[names[best]].append(index)
        else:
            groups[NO_EDGE].append(index)
    return {name: members for name, members in groups.items() if members}


# --- multi-energy dataset --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """Scans at several photon energies, sorted by energy, sharing one detector geometry.

    ``edges``: energy indices grouped by absorption edge (see :func:`group_by_edge`).
    """

    scans: tuple[ScanFile, ...]
    edges: dict[str, list[int]]

    @classmethod
    def open(cls, paths, edges=DEFAULT_EDGES) -> Dataset:
        """Open a folder (all ``*.cxi`` inside), a file, or a list of files and folders.

        ``edges``: absorption-edge names (``"Mn_K"``) to group energies by.
        """
        files = _resolve_paths(paths)
        scans = sorted((ScanFile.open(p) for p in files), key=lambda s: s.energy_ev)
        _check_consistent(scans)
        return cls(scans=tuple(scans), edges=group_by_edge([s.energy_ev for s in scans], edges))

    def __len__(self) -> int:
        return len(self.scans)

    @property
    def files(self) -> list[Path]:
        return [s.path for s in self.scans]

    @property
    def energies_ev(self) -> np.ndarray:
        """(E,) photon energies in eV, increasing."""
        return np.array([s.energy_ev for s in self.scans])

    @property
    def n_frames(self) -> np.ndarray:
        """(E,) number of frames per energy."""
        return np.array([s.n_frames for s in self.scans])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.scans[0].frame_shape

    @property
    def distance_m(self) -> float:
        return self.scans[0].distance_m

    @property
    def detector_pixel_m(self) -> tuple[float, float]:
        """(y, x) detector pixel pitch in metres."""
        return self.scans[0].detector_pixel_m

    @property
    def pixel_sizes_m(self) -> np.ndarray:
        """(E,) real-space pixel size in metres per energy (square pixels, checked on open)."""
        return np.array([s.pixel_size_m[1] for s in self.scans])

    def positions_m(self, energy_index: int) -> np.ndarray:
        """(N, 2) probe positions (y, x) in metres at one energy."""
        return self.scans[energy_index].probe_positions_m

    def iter_batches(self, energy_index: int, batch_size: int, shuffle: bool = False, rng=None, drop_last: bool = False):
        """Yield ``(indices, frames)`` of one energy, ``batch_size`` frames at a time, read lazily.

        ``shuffle`` draws a random order from ``rng`` (a ``numpy.random.Generator`` or a seed). The
        last batch is shorter unless ``drop_last``. Frames as :meth:`ScanFile.read_frames`.
        """
        if batch_size < 1:
            raise PtyjaxError(f"batch_size must be >= 1, got {batch_size}")
        scan = self.scans[energy_index]
        order = np.random.default_rng(rng).permutation(scan.n_frames) if shuffle else np.arange(scan.n_frames)
        stop = scan.n_frames - scan.n_frames % batch_size if drop_last else scan.n_frames
        for start in range(0, stop, batch_size):
            indices = order[start : start + batch_size]
            yield indices, scan.read_frames(indices)

    def load_all(self, energy_index: int) -> np.ndarray:
        """All frames of one energy, float32 (N, ny, nx): the one call that loads a whole scan."""
        scan = self.scans[energy_index]
        return scan.read_frames(np.arange(scan.n_frames))


def _resolve_paths(paths) -> list[Path]:
    """CXI files from a path or a list of paths; a folder stands for its ``*.cxi`` files, sorted."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.cxi"))
            if not found:
                raise DataError(p, "contains no .cxi files")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DataError(p, "does not exist")
    if not files:
        raise PtyjaxError("no input files given")
    return files


def _check_consistent(scans: list[ScanFile]) -> None:
    """Energies distinct, one detector geometry for all, square real-space pixels (energy-sorted scans)."""
    for lower, upper in zip(scans, scans[1:]):
        if upper.energy_ev - lower.energy_ev < DUPLICATE_ENERGY_EV:
            raise DataError(upper.path, f"duplicate energy {upper.energy_ev:.3f} eV (also in {lower.path})")
    first = scans[0]
    for scan in scans:
        for what, value, reference in (
            ("frame shape", scan.detector_shape or scan.frame_shape, first.detector_shape or first.frame_shape),
            ("detector distance (m)", scan.distance_m, first.distance_m),
            ("detector pixel size (y, x) (m)", scan.detector_pixel_m, first.detector_pixel_m),
        ):
            if np.shape(value) != np.shape(reference) or not np.allclose(value, reference, rtol=GEOMETRY_RTOL, atol=0):
                raise DataError(scan.path, f"inconsistent detector geometry: {what} {value} differs from {reference} in {first.path}")
        dy, dx = scan.pixel_size_m
        if not np.isclose(dy, dx, rtol=GEOMETRY_RTOL, atol=0):
            raise DataError(
                scan.path,
                f"non-square real-space pixels ({dy:.4g} m x {dx:.4g} m): detector pixels of "
                f"{scan.detector_pixel_m[0]:.4g} m x {scan.detector_pixel_m[1]:.4g} m; ptyjax needs equal x/y detector pixels",
            )
