"""Larger-than-memory reconstructions: frames stay in the CXI files and are read per minibatch.

:class:`StreamedFrames` is a frame source for :class:`ptyjax.fit.Problem`: ``batch(indices)`` reads
only the frames of one minibatch (``indices`` (E, B): point index per energy) from the files, and
``prefetch(indices)`` starts reading the *next* minibatch in a background thread while the device
computes the current step (the engine knows the order in advance from :func:`ptyjax.fit.epoch_batches`).
Peak memory is then the parameters, the optimizer state and a few batches, whatever the dataset size.
:func:`mean_patterns` gives the per-energy mean pattern (for the probe start) chunk by chunk.

Use it through ``fit.reconstruct(dataset, config, stream=True)`` or ``ptyjax reconstruct --stream``;
``fit.prepare(dataset, stream=True)`` builds the streamed problem.
"""

from __future__ import annotations

import collections
import weakref
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

# Batches read ahead: one overlaps the file reads with the current step; more only cost memory.
PREFETCH_DEPTH = 1


class StreamedFrames:
    """Frames (E, P, N, N) float32 photons of a :class:`ptyjax.data.Dataset`, left on disk.

    ``scans``: one :class:`ptyjax.data.ScanFile` per energy; ``n_points``: P, the padded number of
    points (points beyond a scan's own frame count read as zero frames, like the in-memory padding).
    ``sharding``: optional :class:`jax.sharding.Sharding` of a batch (E, B, N, N); each process then
    reads only the energies of its own devices (see :mod:`ptyjax.sharding`).
    Indexing ``frames[energies]`` or ``frames[energies][:, :k]`` gives a lazy view (used by
    :meth:`ptyjax.fit.Problem.subset`).
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, scans, n_points: int, sharding=None, depth: int = PREFETCH_DEPTH):
        self.scans = tuple(scans)
        self.n_points = int(n_points)
        self.sharding = sharding
        self.depth = int(depth)
        self._pending: collections.OrderedDict = collections.OrderedDict()
        self._executor = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.scans), self.n_points) + tuple(self.scans[0].frame_shape)

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, key):
        """Lazy view: ``key`` = energies (array, list or slice), optionally ``(energies, :k)``."""
        energies, points = key if isinstance(key, tuple) else (key, slice(None))
        chosen = np.arange(len(self.scans))[energies]
        if chosen.ndim != 1:
            raise TypeError("index StreamedFrames with a 1-D array, list or slice of energies (no scalar)")
        start, stop, step = points.indices(self.n_points)
        if start != 0 or step != 1:
            raise TypeError("StreamedFrames views keep the first k points only (frames[e][:, :k])")
        return StreamedFrames([self.scans[e] for e in chosen], stop, self.sharding, self.depth)

    def with_sharding(self, sharding) -> StreamedFrames:
        """The same frames, batches placed with ``sharding`` (E, B, N, N)."""
        return StreamedFrames(self.scans, self.n_points, sharding, self.depth)

    def read(self, indices, energies=None) -> np.ndarray:
        """Host frames (len(energies), B, N, N) of the points ``indices`` (E, B), read from the files.

        ``energies``: which rows of ``indices`` to read (default all). Padding points (index beyond
        a scan's frames) give zero frames; the engine weights them 0.
        """
        indices = np.asarray(indices)
        energies = range(len(self.scans)) if energies is None else energies
        out = np.zeros((len(energies), indices.shape[1]) + tuple(self.scans[0].frame_shape), np.float32)
        for row, e in enumerate(energies):
            scan = self.scans[e]
            real = indices[e] < scan.n_frames
            # At the scan's mean flux, as the in-memory frames (ptyjax.fit.Problem.flux).
            out[row, real] = scan.at_mean_flux(scan.read_frames(indices[e][real]), indices[e][real])
        return out

    def load(self, indices) -> jax.Array:
        """Frames (E, B, N, N) of ``indices`` (E, B) on the device(s), read now (no prefetch)."""
        indices = np.asarray(indices)
        if self.sharding is None:
            return jax.device_put(self.read(indices))
        shape = (len(self.scans), indices.shape[1]) + tuple(self.scans[0].frame_shape)
        # Read only the energies this process's devices hold: on several hosts each reads its share.
        index_map = self.sharding.addressable_devices_indices_map(shape)
        mine = sorted({e for index in index_map.values() for e in range(shape[0])[index[0]]})
        host = np.zeros(shape, np.float32)
        host[mine] = self.read(indices, mine)
        return jax.make_array_from_callback(shape, self.sharding, lambda index: host[index])

    def prefetch(self, indices) -> None:
        """Start reading the batch ``indices`` (E, B) in the background; :meth:`batch` collects it."""
        key = _key(indices)
        if key in self._pending:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptyjax-prefetch")
            weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)
        self._pending[key] = self._executor.submit(self.load, np.array(indices, copy=True))
        while len(self._pending) > self.depth:
            self._pending.popitem(last=False)[1].cancel()

    def batch(self, indices) -> jax.Array:
        """Frames (E, B, N, N) of the points ``indices`` (E, B): the prefetched batch if there is one."""
        future = self._pending.pop(_key(indices), None)
        return future.result() if future is not None else self.load(indices)


def _key(indices):
    indices = np.asarray(indices, np.int64)
    return indices.shape, indices.tobytes()


def mean_patterns(dataset) -> np.ndarray:
    """(E, N, N) float32: each energy's mean frame in photons (frames divided by their relative flux, as the
    engine sees them), summed chunk by chunk (float64).

    Bad pixels included as read (zero), as for the in-memory mean of :func:`ptyjax.fit.prepare`.
    """
    means = []
    for scan in dataset.scans:
        total = np.zeros(scan.frame_shape, np.float64)
        for start, chunk in scan.iter_chunks():
            total += scan.at_mean_flux(chunk, np.arange(start, start + len(chunk))).sum(axis=0, dtype=np.float64)
        means.append(total / scan.n_frames)
    return np.stack(means).astype(np.float32)
