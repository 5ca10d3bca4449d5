"""The differentiable forward model: object stack, probes and scan positions -> detector intensities.

All energies share one common object grid of pixel size ``dx0`` (metres). Energy ``e`` has its own
native real-space pixel size ``dx_e = lambda_e z / (N p)`` (see :mod:`ptyjax.geometry`); its exit waves
are formed on that native grid, from the object sampled at each frame's native points
(:mod:`ptyjax.sampling`: per-frame Lanczos matrices, or a per-step native-grid resampling with the
sub-pixel rest of each position moved into the probe). Exit wave = probe modes x object patch;
detector intensity = far-field intensity summed over the incoherent modes.

Units: positions and drift/jitter parameters are in *common-grid pixels* inside the model (well
scaled for optimisers); :mod:`ptyjax.fit` converts to metres at the boundary.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .propagation import farfield, intensity
from .sampling import FrameGeometry, bilinear_shift, extract_patches, footprints, fourier_translate, frame_patches, spread_tiles  # noqa: F401 (extract_patches re-exported)


def transmission(log_amplitude, phase):
    """``exp(a + i phi)`` from real ``a`` (log-amplitude) and ``phi`` (phase, rad) as
    ``e^a (cos phi + i sin phi)``: one real exponential, where ``jnp.exp`` of a complex number adds
    two more to guard ``e^a`` against overflow (a log-transmission is far from it). On the whole
    object stack that guard was ~8 % of a CPU step's thread time (JAX profiler, small preset)."""
    scale = jnp.exp(log_amplitude)
    return jax.lax.complex(scale * jnp.cos(phase), scale * jnp.sin(phase))


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
        return transmission(self.log_amplitude, self.phase)

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


def shift_probes(probe, shifts):
    """Probes (E, M, N, N) translated by ``shifts`` (E, B, 2) native pixels, one per frame:
    (E, B, M, N, N), by a Fourier phase ramp (exact for a band-limited probe, periodic in the frame).

    A frame whose origin has the sub-pixel rest ``f`` sees ``P(r) O(r + f)``; translated by ``f``
    that exit wave is ``P(r - f) O(r)``, with the same far-field intensity. So the probe moves by
    ``f`` and the object needs only a whole-pixel crop (native-grid sampling).
    """
    return fourier_translate(probe[:, None], shifts[:, :, None])  # one FFT per mode, a ramp per frame


def object_patches(params: Reconstruction, geometry: FrameGeometry, indices):
    """What the frames ``indices`` (E, B) see of the object: patches (E, B, N, N) and the probes'
    sub-pixel rests (E, B, 2) or ``None`` (:func:`ptyjax.sampling.frame_patches`)."""
    centres = jnp.take_along_axis(params.positions(), indices[..., None], axis=1)
    return frame_patches(params.object(), centres, geometry)


def exit_waves(params: Reconstruction, geometry: FrameGeometry, indices, patches=None):
    """Exit waves (E, B, M, N, N) of the frames ``indices`` (E, B) (point index per energy), up to a
    sub-pixel translation that leaves their far-field intensities unchanged. ``patches``: the
    output of :func:`object_patches`, if already computed."""
    patches, rests = object_patches(params, geometry, indices) if patches is None else patches
    return frame_probes(params, rests) * patches[:, :, None]


def farfield_waves(params: Reconstruction, geometry: FrameGeometry, indices, patches=None):
    """Far-field waves (E, B, M, N, N) of the frames ``indices``, zero frequency centred."""
    return farfield(exit_waves(params, geometry, indices, patches))


def predict_intensity(params: Reconstruction, geometry: FrameGeometry, indices, patches=None):
    """Model detector intensities (E, B, N, N), zero frequency centred, summed over probe modes."""
    return intensity(farfield_waves(params, geometry, indices, patches))


def frame_probes(params: Reconstruction, rests):
    """The probe each frame meets: (E, 1, M, N, N), or (E, B, M, N, N) moved by the sub-pixel
    ``rests`` (E, B, 2) of native-grid sampling (``None`` for exact sampling)."""
    return params.probe()[:, None] if rests is None else shift_probes(params.probe(), rests)


def amplitude_position_derivatives(params: Reconstruction, patches, scale, waves=None):
    """Derivatives of the detector amplitudes ``sqrt(I)`` (E, B, N, N) with respect to each frame's
    position, ``(d/dy, d/dx)`` per common-grid pixel, at fixed object and probe.

    ``patches``: the output of :func:`object_patches`. Moving a frame by ``dr`` changes its exit wave
    by ``P dO/dr`` (``dO/dr`` from :func:`patch_gradient`), whose far field changes the amplitude
    only through its part in phase with the far field itself: ``dA = sum_modes Re(conj(Psi) dPsi) / A``.
    For a weak phase object most of ``P dO/dr`` is in quadrature, so this is ~10x smaller than
    ``sum |P dO/dr|^2`` would suggest (the Gauss-Newton diagonal of positions uses it). ``waves``: the
    frames' far-field waves (:func:`farfield_waves`), if already computed.
    """
    patch, rests = patches
    probe = frame_probes(params, rests)
    psi = farfield(probe * patch[:, :, None]) if waves is None else waves
    # The tiny floor (sqrt(photons)) only keeps dark pixels finite: there Re(conj(Psi) dPsi) is 0 too.
    amplitude = jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2, axis=-3)) + 1e-12
    return tuple(jnp.sum(jnp.real(jnp.conj(psi) * farfield(probe * d[:, :, None])), axis=-3) / amplitude
                 for d in patch_gradient(patch, scale))


def patch_gradient(patches, scale):
    """Spatial derivatives (d/dy, d/dx) of patches (E, B, N, N) per *common-grid* pixel (central
    differences on the native grid; ``scale`` (E,): native over common pixel size)."""
    per_common = (1.0 / scale)[:, None, None, None]
    return tuple(d * per_common for d in jnp.gradient(patches, axis=(-2, -1)))


def illumination(params: Reconstruction, geometry: FrameGeometry, indices, object_shape):
    """Probe intensity of the frames ``indices`` summed onto the common grid, (E, Ny, Nx).

    The adjoint of the exact sampler applied to ``sum_modes |P|^2`` (the weights with which those
    frames' data enter each object pixel), computed once per energy for a frame on a whole pixel
    (:func:`ptyjax.sampling.footprints`), moved to each frame's sub-pixel centre by bilinear weights
    and summed by a windowed scatter-add (:func:`ptyjax.sampling.spread_tiles`): exact for frames on
    whole pixels, slightly blurred otherwise, which a preconditioner tolerates; 4-5x cheaper than
    one adjoint per frame, and the same for either sampler.
    """
    centres = jax.lax.stop_gradient(jnp.take_along_axis(params.positions(), indices[..., None], axis=1))
    probe_intensity = jnp.sum(jnp.abs(params.probe()) ** 2, axis=1)  # (E, N, N)
    tiles, tile_centre = footprints(probe_intensity, geometry)
    whole = jnp.floor(centres)
    starts = whole.astype(jnp.int32) - tile_centre[:, None, None]
    # Lanczos weights dip slightly below zero; the row-sum form W^T |P|^2 is a majoriser of the
    # Gauss-Newton diagonal, which is what a step-size preconditioner needs.
    return jnp.maximum(spread_tiles(bilinear_shift(tiles, centres - whole), starts, object_shape), 0.0)


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
    moved = fourier_translate(probe, -shift[:, None])  # every mode of an energy by -shift
    positions = params.positions
    positions = ScanPositions(positions.nominal, positions.drift + shift * scale[:, None], positions.jitter)
    return eqx.tree_at(lambda p: (p.probe, p.positions), params, (Probe.from_complex(moved.astype(probe.dtype)), positions))
