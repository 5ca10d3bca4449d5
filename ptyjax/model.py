"""The differentiable forward model: object stack, probes and scan positions -> detector intensities.

All energies share one common object grid of pixel size ``dx0`` (metres). Energy ``e`` has its own
native real-space pixel size ``dx_e = lambda_e z / (N p)`` (see :mod:`ptyjax.geometry`); its exit wave
is formed on that native grid, so the object is *resampled* from the common grid at the native sample
points ``r_j + (i - N//2) dx_e`` of every frame. The resampling is separable windowed-sinc (Lanczos)
interpolation, written as two small matrices per frame (``W_y @ crop @ W_x^T``) whose entries depend
smoothly on the position: one operation that handles the energy-dependent pixel size, sub-pixel
positions and their gradients together. When ``dx_e > dx0`` the kernel is stretched by ``dx_e/dx0`` so
that the object is low-passed to the band the detector sees at that energy instead of aliased.

Units: positions and drift/jitter parameters are in *common-grid pixels* inside the model (well
scaled for optimisers); :mod:`ptyjax.fit` converts to metres at the boundary.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .propagation import farfield_intensity

# Lanczos-3: the usual compromise between ringing and sharpness for image resampling.
LANCZOS_A = 3


class ObjectStack(eqx.Module):
    """Base class of object parametrisations: calling it gives the complex stack (E, Ny, Nx)."""

    def __call__(self) -> jax.Array:
        raise NotImplementedError

    def log_object(self) -> jax.Array:
        """``log O = ln|O| + i phase`` (E, Ny, Nx), with the phase continuous (not wrapped)."""
        return jnp.log(self())

    def curvature(self, h):
        """Diagonal curvature of the objective w.r.t. this module's leaves, given its curvature ``h``
        (E, Ny, Nx) w.r.t. the real and imaginary parts of the log-object (the preconditioner).

        The default is safe but slow (the largest value everywhere); parametrisations override it
        with the Gauss-Newton diagonal of their map to the log-object.
        """
        peak = jnp.max(h)
        return jax.tree.map(lambda x: jnp.full(x.shape, peak, x.dtype), self)


class LogObjectStack(ObjectStack):
    """Object stored as log-amplitude and (unwrapped) phase per energy: ``O = exp(a + i phi)``.

    For a thin object ``a = -k beta t`` and ``phi = -k delta t`` are linear in the projected
    material, which makes spectral priors and spectra natural in this parametrisation.
    """

    log_amplitude: jax.Array
    phase: jax.Array

    @classmethod
    def ones(cls, n_energies: int, shape: tuple[int, int]):
        zeros = jnp.zeros((n_energies,) + tuple(shape), jnp.float32)
        return cls(zeros, zeros)

    def __call__(self):
        return jnp.exp(jax.lax.complex(self.log_amplitude, self.phase))

    def log_object(self):
        return jax.lax.complex(self.log_amplitude, self.phase)

    def curvature(self, h):
        return LogObjectStack(h, h)


# Object parametrisations by name: ``create(n_energies, shape, energies_ev, **options) -> ObjectStack``
# starting at transmission one. Register new ones with :func:`register_object_model`.
OBJECT_MODELS: dict = {}


def register_object_model(name: str):
    """Decorator registering an object-parametrisation constructor under ``name``."""

    def wrap(create):
        OBJECT_MODELS[name] = create
        return create

    return wrap


@register_object_model("log")
def _log_object_stack(n_energies, shape, energies_ev=None):
    return LogObjectStack.ones(n_energies, shape)


class Probe(eqx.Module):
    """Per-energy probe with incoherent modes, (E, M, N, N) complex, on each energy's native grid.

    Stored as real and imaginary parts so every optimiser sees real parameters.
    """

    real: jax.Array
    imag: jax.Array

    @classmethod
    def from_complex(cls, probe):
        probe = jnp.asarray(probe)
        return cls(jnp.real(probe).astype(jnp.float32), jnp.imag(probe).astype(jnp.float32))

    def __call__(self):
        return jax.lax.complex(self.real, self.imag)


class ScanPositions(eqx.Module):
    """Probe positions = nominal + per-energy drift + per-point jitter, in common-grid pixels (y, x).

    ``nominal`` (E, P, 2) is data, not a parameter (its optimiser sets updates to zero). The
    decomposition is made unique by :meth:`canonical`.
    """

    nominal: jax.Array
    drift: jax.Array
    jitter: jax.Array

    @classmethod
    def at_nominal(cls, nominal_px):
        nominal_px = jnp.asarray(nominal_px, jnp.float32)
        n_e = nominal_px.shape[0]
        return cls(nominal_px, jnp.zeros((n_e, 2), jnp.float32), jnp.zeros_like(nominal_px))

    def __call__(self):
        return self.nominal + self.drift[:, None, :] + self.jitter

    def canonical(self, valid):
        """Project jitter onto zero mean over the real points (``valid`` (E, P)) of each energy.

        The common translation of each energy is the drift; the translation of everything is fixed
        by keeping each probe centred (:func:`centre_probe`), not here.
        """
        w = valid[..., None].astype(self.jitter.dtype)
        jitter_mean = jnp.sum(self.jitter * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        return ScanPositions(self.nominal, self.drift + jitter_mean, (self.jitter - jitter_mean[:, None, :]) * w)


class Reconstruction(eqx.Module):
    """All fitted parameters as one pytree."""

    object: ObjectStack
    probe: Probe
    positions: ScanPositions


class FrameGeometry(eqx.Module):
    """Static description of how each energy's frames sample the common grid.

    ``scale`` (E,): native pixel size over common pixel size, ``dx_e / dx0`` (>= ~1). ``frame_size``:
    N. ``window``: side of the object crop that holds every frame's interpolation support.
    """

    scale: jax.Array
    frame_size: int = eqx.field(static=True)
    window: int = eqx.field(static=True)

    @classmethod
    def create(cls, scale, frame_size: int):
        scale = np.asarray(scale, dtype=np.float64)
        support = max(1.0, float(scale.max()))
        window = int(math.ceil((frame_size - 1) * float(scale.max()) + 2 * LANCZOS_A * support)) + 2
        return cls(jnp.asarray(scale, jnp.float32), int(frame_size), window)


def lanczos(x, a: int = LANCZOS_A):
    """Lanczos kernel ``sinc(x) sinc(x/a)`` for ``|x| < a``, else 0."""
    return jnp.where(jnp.abs(x) < a, jnp.sinc(x) * jnp.sinc(x / a), 0.0)


def _interpolation_matrix(centre, start, scale, frame_size: int, window: int):
    """Weights (N, W) mapping a 1-D object crop starting at pixel ``start`` to the N native samples
    at ``centre + (i - N//2) * scale`` (common-grid pixel units)."""
    stretch = jnp.maximum(scale, 1.0)
    samples = centre + (jnp.arange(frame_size) - frame_size // 2) * scale
    distance = samples[:, None] - (start + jnp.arange(window))[None, :].astype(samples.dtype)
    weights = lanczos(distance / stretch)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def extract_patch(obj, centre, scale, frame_size: int, window: int):
    """Object (Ny, Nx) resampled on the native N x N frame grid centred at ``centre`` (y, x) pixels."""
    half = (frame_size // 2) * scale + LANCZOS_A * jnp.maximum(scale, 1.0)
    limit = jnp.array(obj.shape) - window
    start = jnp.clip(jnp.floor(centre - half).astype(jnp.int32), 0, limit)
    crop = jax.lax.dynamic_slice(obj, (start[0], start[1]), (window, window))
    w_y = _interpolation_matrix(centre[0], start[0], scale, frame_size, window)
    w_x = _interpolation_matrix(centre[1], start[1], scale, frame_size, window)
    return _real_matmul(w_x.T, _real_matmul(w_y, crop), right=True)


def _real_matmul(weights, z, right: bool = False):
    """``weights @ z`` (or ``z @ weights``) for real weights and complex ``z``: two real products,
    half the arithmetic of promoting the weights to complex."""
    product = (lambda a: a @ weights.astype(a.dtype)) if right else (lambda a: weights.astype(a.dtype) @ a)
    if not jnp.iscomplexobj(z):
        return product(z)
    return jax.lax.complex(product(jnp.real(z)), product(jnp.imag(z)))


def extract_patches(objects, centres, geometry: FrameGeometry):
    """Patches (E, B, N, N) of ``objects`` (E, Ny, Nx) at ``centres`` (E, B, 2) pixels."""
    per_energy = jax.vmap(extract_patch, in_axes=(None, 0, None, None, None))
    return jax.vmap(per_energy, in_axes=(0, 0, 0, None, None))(
        objects, centres, geometry.scale, geometry.frame_size, geometry.window
    )


def object_patches(params: Reconstruction, geometry: FrameGeometry, indices):
    """Object patches (E, B, N, N) seen by the frames ``indices`` (E, B) on their native grids."""
    centres = jnp.take_along_axis(params.positions(), indices[..., None], axis=1)
    return extract_patches(params.object(), centres, geometry)


def exit_waves(params: Reconstruction, geometry: FrameGeometry, indices, patches=None):
    """Exit waves (E, B, M, N, N) of the frames ``indices`` (E, B) (point index per energy)."""
    patches = object_patches(params, geometry, indices) if patches is None else patches
    return params.probe()[:, None] * patches[:, :, None]


def predict_intensity(params: Reconstruction, geometry: FrameGeometry, indices, patches=None):
    """Model detector intensities (E, B, N, N), zero frequency centred, summed over probe modes."""
    return farfield_intensity(exit_waves(params, geometry, indices, patches), mode_axis=-3)


def patch_gradient(patches, scale):
    """Spatial derivatives (dy, dx) of patches (E, B, N, N) per *common-grid* pixel, by spectral
    differentiation on the native grid (``scale`` (E,): native over common pixel size)."""
    n = patches.shape[-1]
    f = jnp.fft.fftfreq(n)
    spectrum = jnp.fft.fft2(patches)
    per_common = (1.0 / scale)[:, None, None, None]
    dy = jnp.fft.ifft2(spectrum * (2j * jnp.pi * f)[:, None]) * per_common
    dx = jnp.fft.ifft2(spectrum * (2j * jnp.pi * f)[None, :]) * per_common
    return dy, dx


def insert_patches(patches, centres, geometry: FrameGeometry, object_shape):
    """Adjoint of :func:`extract_patches` for real patches (E, B, N, N): their sum on the grid (E, Ny, Nx)."""
    template = jnp.zeros((centres.shape[0],) + tuple(object_shape), patches.dtype)
    transpose = jax.linear_transpose(lambda o: extract_patches(o, centres, geometry), template)
    return transpose(patches)[0]


def illumination(params: Reconstruction, geometry: FrameGeometry, indices, object_shape):
    """Probe intensity of the frames ``indices`` summed onto the common grid, (E, Ny, Nx).

    The adjoint of patch extraction applied to ``sum_modes |P|^2``: the weights with which those
    frames' data enter each object pixel.
    """
    centres = jax.lax.stop_gradient(jnp.take_along_axis(params.positions(), indices[..., None], axis=1))
    probe_intensity = jnp.sum(jnp.abs(params.probe()) ** 2, axis=1)  # (E, N, N)
    stacked = jnp.broadcast_to(probe_intensity[:, None], centres.shape[:2] + probe_intensity.shape[1:])
    illum = insert_patches(stacked, centres, geometry, object_shape)
    # Lanczos weights dip slightly below zero; the row-sum form W^T |P|^2 is a majoriser of the
    # Gauss-Newton diagonal, which is what a step-size preconditioner needs.
    return jnp.maximum(illum, 0.0)


def probe_centre(probe):
    """Intensity centroid (y, x) of ``probe`` (E, M, N, N) relative to pixel N//2, native pixels (E, 2)."""
    intensity = jnp.sum(jnp.abs(probe) ** 2, axis=1)
    n = probe.shape[-1]
    coordinate = jnp.arange(n) - n // 2
    total = jnp.sum(intensity, axis=(-2, -1))
    cy = jnp.sum(intensity * coordinate[:, None], axis=(-2, -1)) / total
    cx = jnp.sum(intensity * coordinate[None, :], axis=(-2, -1)) / total
    return jnp.stack([cy, cx], axis=-1)


@jax.jit
def centre_probe(params: Reconstruction, scale):
    """Move each energy's probe so its intensity centroid sits on the frame centre, and its drift
    by the same amount (``scale`` (E,): native over common pixel size): the model is unchanged
    while the beam position becomes the scan position, which makes drift identifiable.
    """
    probe = params.probe()
    shift = probe_centre(probe)  # native pixels
    n = probe.shape[-1]
    f = jnp.fft.fftfreq(n)
    ramp = jnp.exp(2j * jnp.pi * (f[None, :, None] * shift[:, 0, None, None] + f[None, None, :] * shift[:, 1, None, None]))
    moved = jnp.fft.ifft2(jnp.fft.fft2(probe) * ramp[:, None])
    positions = params.positions
    positions = ScanPositions(positions.nominal, positions.drift + shift * scale[:, None], positions.jitter)
    return eqx.tree_at(lambda p: (p.probe, p.positions), params, (Probe.from_complex(moved.astype(probe.dtype)), positions))
