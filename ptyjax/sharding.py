"""Many devices: the energy axis sharded across a device mesh.

Every array of a reconstruction with a leading energy axis (object, probe, drift, jitter, their
optimizer state, frames, pixel weights, point masks, minibatch indices) is split along that axis
over a 1-D :class:`jax.sharding.Mesh` with axis ``"energy"`` (:class:`jax.sharding.NamedSharding`);
everything else is replicated. The jitted step is unchanged: jit's sharding propagation runs each
energy's FFTs and interpolation on the device that holds it, and the couplings between energies
(the spectral prior's ``jnp.diff`` along the energy axis, the photon normalisation and other
global sums) become collectives across shard boundaries. The result equals the single-device
result up to float32 summation order.

The number of energies must be a multiple of the number of devices: padding with fake energies
would change the spectral prior, so :func:`energy_mesh` users pick a divisor (:func:`check_divisible`
says which ones fit).

Several hosts: start every process with ``jax.distributed.initialize(coordinator_address, num_processes,
process_id)`` (or with no arguments under SLURM / Open MPI / Cloud TPU, which it detects) *before*
any other JAX call, then call ``fit.reconstruct(dataset, config, devices=jax.device_count())`` in
every process with the same files. Arrays are built with :func:`jax.make_array_from_callback`, so
each process holds only its own energies (with ``stream=True`` it reads only their frames).
Host-side steps (energy registration, checkpoints, ``FitResult.object()``, ``save_reconstruction``)
gather the shards with :func:`to_host` in every process; only process 0 writes files. Tested with
two processes of two CPU devices each (gloo collectives, ``tests/test_sharding.py``).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import PtyjaxError

ENERGY_AXIS = "energy"


def energy_mesh(n_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh named ``"energy"`` over the first ``n_devices`` of ``devices`` (default all of
    :func:`jax.devices`, every host's devices in a multi-host run)."""
    devices = list(jax.devices() if devices is None else devices)
    n_devices = len(devices) if n_devices is None else int(n_devices)
    if not 1 <= n_devices <= len(devices):
        raise PtyjaxError(f"asked for {n_devices} devices but JAX sees {len(devices)} ({devices[0].platform})")
    return Mesh(np.array(devices[:n_devices]), (ENERGY_AXIS,))


def check_divisible(n_energies: int, mesh: Mesh) -> None:
    """Raise a :class:`PtyjaxError` unless ``n_energies`` splits evenly over the mesh's devices."""
    n_devices = mesh.devices.size
    if n_energies % n_devices:
        fits = [d for d in range(1, n_energies + 1) if n_energies % d == 0 and d <= len(jax.devices())]
        raise PtyjaxError(f"{n_energies} energies do not split evenly over {n_devices} devices; use one of {fits}")


def energy_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of an array along its leading (energy) axis, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(ENERGY_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place(x, sharding: NamedSharding) -> jax.Array:
    """``x`` (host or device array) as a global array with ``sharding``.

    One process: a device-to-device :func:`jax.device_put`. Several processes: each builds its own
    shards from its copy of ``x`` (:func:`jax.make_array_from_callback`); an array that is already
    global is resharded in place.
    """
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_energy_sharded(x, mesh: Mesh) -> jax.Array:
    """``x`` (E, ...) split along the energy axis over ``mesh``."""
    return place(x, energy_sharding(mesh))


def shard_energy_tree(tree, mesh: Mesh, n_energies: int):
    """Every array leaf of ``tree`` with leading size ``n_energies`` split along it, other array
    leaves (optimizer step counts, ...) replicated; non-array leaves unchanged.

    Meant for the parameters (every leaf has a leading energy axis) and their optimizer state.
    """

    def put(x):
        if not isinstance(x, (jax.Array, np.ndarray)):
            return x
        if x.ndim >= 1 and x.shape[0] == n_energies:
            return put_energy_sharded(x, mesh)
        return place(x, replicated(mesh))

    return jax.tree.map(put, tree)


def shard_problem(problem, mesh: Mesh):
    """A :class:`ptyjax.fit.Problem` with frames and pixel weights split along the energy axis.

    In-memory frames are moved; a streamed source (:class:`ptyjax.streaming.StreamedFrames`) is told
    the sharding of its batches instead.
    """
    check_divisible(problem.n_energies, mesh)
    sharding = energy_sharding(mesh)
    frames = problem.frames.with_sharding(sharding) if hasattr(problem.frames, "with_sharding") else place(problem.frames, sharding)
    return dataclasses.replace(problem, frames=frames, pixel_weight=place(problem.pixel_weight, sharding))


def to_host(x) -> np.ndarray:
    """``x`` as a NumPy array on this host: the whole array, also when it is split over several
    processes (then every process gathers every shard, :func:`multihost_utils.process_allgather`)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
