"""How each frame sees the common-grid object: two samplers of the object at a frame's native points.

All energies share one common object grid of pixel size ``dx0``; energy ``e`` forms its exit waves on
its native grid of pixel ``dx_e = scale_e dx0`` (``scale_e >= 1``), and frame pixel ``i`` sees the
common-grid point ``centre + (i - N//2) scale_e``. Two ways to get the object there:

``"exact"``
    per frame, separable Lanczos matrices from the common grid straight to the frame's points (the
    kernel stretched by ``scale`` so it low-passes instead of aliasing). Each frame samples the
    object at its own sub-pixel phase, so frames at different positions together constrain the
    object finer than one energy's native pixel. The matrices are banded, so they are applied in
    blocks of :data:`EXACT_BLOCK` samples, each reading only the rows that hold its support: cost
    O(N^2 (EXACT_BLOCK scale + 2a scale)) per frame instead of the dense O(N^3).
``"native-grid"``
    once per step and energy, the whole object resampled onto a fixed native grid
    (:func:`ptyjax.resampling.resample_2d`); per frame, a crop at the nearest whole native pixel,
    the sub-pixel rest going to the probe as a Fourier shift (:func:`ptyjax.model.shift_probes`).
    Cost O(pixels x taps) per step plus O(N^2) per frame: 1.2-1.4x faster epochs on CPU. Every frame of
    an energy sees the same native samples, so detail finer than the native pixel is not
    constrained: on the ``small`` preset (pixels 1.28x apart across the Mn and Ni edges) the
    Mn-edge phase FRC fell from 28 to 39 nm.

``"auto"`` (the default) takes ``native-grid`` only where it loses nothing: every energy on the same
pixel (one energy, or frames binned to a constant pixel), where the native grid *is* the common
grid and the Fourier shift is exact. Otherwise ``exact``: on the Mn-edge energies of the ``small``
preset alone (pixels within 1.2 %) ``native-grid`` ran epochs 1.7x faster (than the dense exact
product of the time) but with 4 % larger NRMSE and 9 % larger OD error
(``experiments/results/reconstruction_small_mn_*.md``), a trade for the user to choose
(``--sampling native-grid``), not a default.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .errors import PtyjaxError
from .resampling import LANCZOS_A, lanczos, per_part, resample_2d, resampling_taps

SAMPLINGS = ("auto", "exact", "native-grid")
# Largest native/common pixel ratio minus one for which "auto" takes the native grid: float32
# round-off of equal pixel sizes, i.e. only where the native grid is the common grid.
NATIVE_GRID_MAX_SPREAD = 1e-6


def choose_sampling(scale, sampling: str = "auto") -> str:
    """The sampler for native/common pixel ratios ``scale``: ``sampling`` unless it is "auto"."""
    if sampling not in SAMPLINGS:
        raise PtyjaxError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    if sampling != "auto":
        return sampling
    return "native-grid" if native_is_common(scale) else "exact"


def native_is_common(scale) -> bool:
    """Every energy's native pixel equals the common pixel (``scale`` (E,) within float32 round-off)."""
    return bool(np.all(np.abs(np.asarray(scale, np.float64) - 1.0) <= NATIVE_GRID_MAX_SPREAD))


# Samples per block of the exact sampler's banded products (:func:`_banded_rows`). Small preset step
# (30 energies x 12 frames of 64^2), one CPU core, two runs each: blocks of 8: 233-296 ms, 16:
# 249-256 ms, 32: 255-310 ms, 64 (one block, the dense form): 351-367 ms. 8 and 16 tie within this
# machine's noise; 16 keeps fewer, larger products.
EXACT_BLOCK = 16


def exact_block(frame_size: int) -> int:
    """Samples per block of the exact sampler's banded products (at most the frame)."""
    return min(EXACT_BLOCK, frame_size)


def _support_width(n_samples: int, scale: float, stretch: float) -> int:
    """Pixels holding the Lanczos support of ``n_samples`` consecutive samples ``scale`` apart."""
    return int(math.ceil((n_samples - 1) * scale + 2 * LANCZOS_A * stretch)) + 2


class FrameGeometry(eqx.Module):
    """Static description of how each energy's frames sample the common grid.

    ``scale`` (E,): native pixel size over common pixel size, ``dx_e / dx0`` (>= ~1). ``frame_size``:
    N. ``sampling``: "exact" or "native-grid" (see the module). ``window``: side of the common-grid
    crop holding an exact frame's interpolation support. ``taps``/``adjoint_taps``: band half-widths
    of the native-grid resampling. ``reach``: the largest distance (common pixels) from a frame's
    centre to a common-grid pixel it depends on (the grid's margin around the scan).
    ``identity``: every native pixel is the common pixel (:func:`native_is_common`, e.g. one
    energy), so the native-grid resampling is skipped. ``block``/``block_window``: samples per block
    of the exact sampler's banded products and the crop rows each block reads (:func:`_banded_rows`).
    """

    scale: jax.Array
    frame_size: int = eqx.field(static=True)
    sampling: str = eqx.field(static=True)
    window: int = eqx.field(static=True)
    taps: int = eqx.field(static=True)
    adjoint_taps: int = eqx.field(static=True)
    reach: int = eqx.field(static=True)
    identity: bool = eqx.field(static=True, default=False)
    block: int = eqx.field(static=True, default=0)
    block_window: int = eqx.field(static=True, default=0)

    @classmethod
    def create(cls, scale, frame_size: int, sampling: str = "auto"):
        scale = np.asarray(scale, dtype=np.float64)
        stretch = max(1.0, float(scale.max()))
        window = _support_width(frame_size, float(scale.max()), stretch)
        taps, adjoint_taps = resampling_taps(scale)
        reach = max(window // 2, int(math.ceil((frame_size // 2 + 2) * stretch)) + taps)
        block = exact_block(frame_size)
        block_window = min(window, _support_width(block, float(scale.max()), stretch))
        return cls(jnp.asarray(scale, jnp.float32), int(frame_size), choose_sampling(scale, sampling), window, taps,
                   adjoint_taps, reach, native_is_common(scale), block, block_window)

    def with_sampling(self, sampling: str):
        """The same geometry with another sampler ("auto" re-chooses from the scales)."""
        return FrameGeometry.create(np.asarray(self.scale), self.frame_size, sampling)


def frame_patches(objects, centres, geometry: FrameGeometry):
    """What frames at ``centres`` (E, B, 2) common-grid pixels see of ``objects`` (E, Ny, Nx): patches
    (E, B, N, N) on their native grids and the sub-pixel rests (E, B, 2) that the probes take, or
    ``None`` when the patches already include them (exact sampling)."""
    if geometry.sampling == "exact":
        return exact_patches(objects, centres, geometry), None
    starts, rests = frame_origins(centres, geometry)
    return crop_patches(native_objects(objects, geometry), starts, geometry), rests


def footprints(images, geometry: FrameGeometry):
    """Adjoint of the exact sampler for one frame per energy centred on a whole common-grid pixel:
    real ``images`` (E, N, N) on the native frame grids spread onto common-grid tiles (E, W, W)
    (``W = geometry.window``), and the tile pixel (E,) int on which each frame's centre lies.

    The support starts on the tile's second pixel and ends before its last, so a tile moved by less
    than a pixel (:func:`bilinear_shift`) keeps its mass, and a frame at centre ``c`` places its tile
    at ``floor(c) - centre``, at most one pixel before the exact sampler's own crop
    (:func:`spread_tiles`).
    """
    window = geometry.window
    centre = jnp.floor(_support_before_centre(geometry.scale, geometry.frame_size)).astype(jnp.int32) + 1
    centres = jnp.broadcast_to(centre.astype(jnp.float32)[:, None, None], (centre.shape[0], 1, 2))
    template = jnp.zeros((centre.shape[0], window, window), images.dtype)
    _, adjoint = jax.vjp(lambda o: exact_patches(o, centres, geometry)[:, 0], template)
    return adjoint(images)[0], centre


def bilinear_shift(tiles, rests):
    """Tiles (E, S, S) translated by ``rests`` (E, B, 2) in [0, 1) pixels with bilinear weights, one
    per frame: (E, B, S, S). Mass is kept when the tiles' last row and column are empty."""
    t = tiles[:, None]
    ry, rx = rests[..., 0, None, None], rests[..., 1, None, None]
    moved = lambda dy, dx: jnp.pad(t, ((0, 0), (0, 0), (dy, 0), (dx, 0)))[..., : t.shape[-2], : t.shape[-1]]  # noqa: E731
    return (1 - ry) * ((1 - rx) * t + rx * moved(0, 1)) + ry * ((1 - rx) * moved(1, 0) + rx * moved(1, 1))


def spread_tiles(tiles, starts, object_shape):
    """Sum onto the common grid (E, Ny, Nx) of per-frame tiles (E, B, S, S) placed with their first
    pixel at ``starts`` (E, B, 2) (whole pixels): the adjoint of whole-pixel crops, a windowed
    scatter-add. A start of -1 (a tile whose empty first row lies before the grid, see
    :func:`footprints`) is placed exactly; tiles reaching further out are clamped into the grid, as
    the exact sampler clamps its crops."""
    padded = (object_shape[0] + 1, object_shape[1] + 1)
    template = jnp.zeros((tiles.shape[0],) + padded, tiles.dtype)
    crop = jax.vmap(jax.vmap(_frame_window, in_axes=(None, 0, None)), in_axes=(0, 0, None))
    _, adjoint = jax.vjp(lambda o: crop(o, starts + 1, tiles.shape[-1]), template)
    return adjoint(tiles)[0][:, 1:, 1:]


def extract_patches(objects, centres, geometry: FrameGeometry):
    """Patches (E, B, N, N) of ``objects`` (E, Ny, Nx) at the exact native points of frames at
    ``centres`` (E, B, 2) pixels. Native-grid sampling applies the sub-pixel rest as a Fourier shift
    of a crop widened by N/2 (so its periodic wrap stays outside the patch). For inspection and
    tests: the forward model moves the probe instead."""
    if geometry.sampling == "exact":
        return exact_patches(objects, centres, geometry)
    starts, rests = frame_origins(centres, geometry)
    margin = geometry.frame_size // 2
    wide = crop_patches(native_objects(objects, geometry), starts, geometry, margin)
    return fourier_translate(wide, -rests)[..., margin:-margin, margin:-margin]


def shift_ramp(shifts, shape):
    """Fourier phase ramps (..., Ny, Nx) that translate an image of ``shape`` (Ny, Nx), or N x N for
    an int, by ``shifts`` (..., 2) pixels."""
    n_y, n_x = (shape, shape) if isinstance(shape, int) else shape
    q_y, q_x = jnp.fft.fftfreq(n_y)[:, None], jnp.fft.fftfreq(n_x)[None, :]
    phase = q_y * shifts[..., 0, None, None] + q_x * shifts[..., 1, None, None]
    return jnp.exp(-2j * jnp.pi * phase)


def fourier_translate(images, shifts):
    """``images`` (..., Ny, Nx) translated by ``shifts`` (..., 2) pixels (y, x): periodic, exact for
    band-limited images. ``shifts``' leading axes broadcast against the images'."""
    return jnp.fft.ifft2(jnp.fft.fft2(images) * shift_ramp(shifts, images.shape[-2:]))


# --- exact: per-frame Lanczos matrices ------------------------------------------------------------


def _interpolation_matrix(samples, start, scale, window: int, transposed: bool = False):
    """Weights (len(samples), W) mapping a 1-D object crop of W pixels starting at pixel ``start`` to
    the points ``samples`` (common-grid pixel units); with ``transposed``, their transpose (W,
    len(samples)), computed as such (see :func:`_banded_product`)."""
    stretch = jnp.maximum(scale, 1.0)
    pixels = (start + jnp.arange(window)).astype(samples.dtype)
    sample_axis = 1 if transposed else 0
    distance = jnp.expand_dims(samples, 1 - sample_axis) - jnp.expand_dims(pixels, sample_axis)
    weights = lanczos(distance / stretch)
    return weights / jnp.sum(weights, axis=1 - sample_axis, keepdims=True)


def _support_before_centre(scale, frame_size: int):
    """Distance (common pixels) from a frame's centre back to the first pixel its Lanczos support reaches."""
    return (frame_size // 2) * scale + LANCZOS_A * jnp.maximum(scale, 1.0)


def _support_start(first_sample, scale, limit):
    """First pixel of the Lanczos support of a run of samples starting at ``first_sample``."""
    return jnp.clip(jnp.floor(first_sample - LANCZOS_A * jnp.maximum(scale, 1.0)).astype(jnp.int32), 0, limit)


def _banded_rows(image, samples, image_start, scale, block: int, window: int):
    """``W @ image`` for the Lanczos weights ``W`` of ``samples`` (N,) over the rows of ``image``
    (H, M) whose first row is common-grid pixel ``image_start``: in blocks of ``block`` samples, each
    reading only the ``window`` rows that hold its support (the weights are banded), so the cost is
    N x window x M instead of N x H x M. Returns (N, M)."""
    n = samples.shape[0]
    pad = -n % block  # the last block runs on past the frame; its extra rows are dropped
    samples = jnp.concatenate([samples, samples[-1] + scale * jnp.arange(1, pad + 1, dtype=samples.dtype)])
    local = _support_start(samples[::block], scale, image_start + image.shape[0] - window) - image_start

    def one(local_start, block_samples):
        rows = jax.lax.dynamic_slice_in_dim(image, local_start, window, axis=0)
        args = (block_samples, image_start + local_start, scale, window)
        transposed = jax.lax.stop_gradient(_interpolation_matrix(*args, transposed=True))
        return _banded_product(_interpolation_matrix(*args), transposed, rows)

    return jax.vmap(one)(local, samples.reshape(-1, block)).reshape(-1, image.shape[1])[:n]


def _exact_patch(obj, centre, scale, frame_size: int, window: int, block: int, block_window: int):
    """Object (Ny, Nx) resampled on the native N x N frame grid centred at ``centre`` (y, x) pixels."""
    limit = jnp.array(obj.shape) - window
    start = jnp.clip(jnp.floor(centre - _support_before_centre(scale, frame_size)).astype(jnp.int32), 0, limit)
    crop = jax.lax.dynamic_slice(obj, (start[0], start[1]), (window, window))
    offsets = (jnp.arange(frame_size) - frame_size // 2) * scale
    rows = _banded_rows(crop, centre[0] + offsets, start[0], scale, block, block_window)  # (N, W)
    return _banded_rows(rows.T, centre[1] + offsets, start[1], scale, block, block_window).T


@jax.custom_jvp
def _banded_product(weights, weights_transposed, z):
    """``weights @ z`` (real weights, complex ``z``), differentiated so that its adjoint multiplies by
    ``weights_transposed``, the same matrix computed transposed (without a gradient of its own).
    Plain autodiff would contract ``weights`` over its first axis, which XLA:CPU runs on a slower
    kernel, and an explicit transpose is folded back into that product by the compiler. On the small
    preset's batch (30 energies x 16 frames of 64^2) the object's gradient through the sampler took
    41 ms with this, 50-57 ms without."""
    return _real_matmul(weights, z)


@_banded_product.defjvp
def _banded_product_jvp(primals, tangents):
    weights, weights_transposed, z = primals
    d_weights, _, d_z = tangents
    # (W^T)^T d_z: reverse mode transposes it into the plain product weights_transposed @ cotangent.
    tangent = _real_matmul(d_weights, z) + _real_matmul(weights_transposed.T, d_z)
    return _real_matmul(weights, z), tangent


def _real_matmul(weights, z):
    """``weights @ z`` for real weights and complex ``z``: two real products, half the arithmetic of
    promoting the weights to complex."""
    product = lambda a: weights.astype(a.dtype) @ a  # noqa: E731
    if not jnp.iscomplexobj(z):
        return product(z)
    return jax.lax.complex(product(jnp.real(z)), product(jnp.imag(z)))


def exact_patches(objects, centres, geometry: FrameGeometry):
    """Patches (E, B, N, N) of ``objects`` (E, Ny, Nx) at ``centres`` (E, B, 2), per-frame matrices."""
    per_energy = jax.vmap(_exact_patch, in_axes=(None, 0, None, None, None, None, None))
    return jax.vmap(per_energy, in_axes=(0, 0, 0, None, None, None, None))(
        objects, centres, geometry.scale, geometry.frame_size, geometry.window, geometry.block, geometry.block_window)


# --- native grid: one resampling per step, whole-pixel crops ---------------------------------------


def native_objects(objects, geometry: FrameGeometry):
    """Objects (E, Ny, Nx) resampled onto each energy's native grid, sample ``(j, i)`` at common-grid
    point ``(j, i) * scale_e`` (points beyond the common grid are zero), as real and imaginary
    parts (2, E, Ny, Nx): the form :func:`crop_patches` reads."""
    parts = jnp.stack([jnp.real(objects), jnp.imag(objects)])
    if geometry.identity:
        return parts
    return per_part(lambda part: resample_2d(part, geometry.scale, geometry.taps, geometry.adjoint_taps), parts)


def frame_origins(centres, geometry: FrameGeometry):
    """Native-grid origin of each frame at ``centres`` (E, B, 2) common-grid pixels (y, x): the
    nearest whole pixel (E, B, 2) int and the rest (E, B, 2) in [-0.5, 0.5], native pixels.

    Frame pixel ``i`` sees native point ``centre / scale + i - N//2``.
    """
    origin = centres / geometry.scale[:, None, None] - geometry.frame_size // 2
    whole = jax.lax.stop_gradient(jnp.round(origin))
    return whole.astype(jnp.int32), origin - whole


def _frame_window(native, start, size: int):
    return jax.lax.dynamic_slice(native, (start[0], start[1]), (size, size))


def crop_patches(native, starts, geometry: FrameGeometry, margin: int = 0):
    """Complex patches (E, B, N + 2 margin, N + 2 margin) of the native-grid objects ``native`` (from
    :func:`native_objects`) at the whole-pixel origins ``starts`` (E, B, 2) of :func:`frame_origins`,
    widened by ``margin`` pixels on every side."""
    crop = jax.vmap(jax.vmap(_frame_window, in_axes=(None, 0, None)), in_axes=(0, 0, None))
    parts = jax.vmap(crop, in_axes=(0, None, None))(native, starts - margin, geometry.frame_size + 2 * margin)
    return jax.lax.complex(parts[0], parts[1])
