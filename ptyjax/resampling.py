"""Separable Lanczos resampling of whole images onto a coarser grid, with a hand-written adjoint.

:func:`resample_2d` samples an image at the points ``(j, i) * scale``, the kernel stretched by
``scale`` when > 1 so that it low-passes instead of aliasing: a common-grid object onto an energy's
native grid. Each axis is a banded filter applied as ``2 taps`` gathers of whole rows, so it costs
O(pixels x taps) rather than the O(pixels x n) of a matrix product; the adjoint is the same kind of
band (:func:`jax.custom_vjp`), where autodiff would produce scatter-adds, 20-40 times slower on CPU.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

# Lanczos-3: the usual compromise between ringing and sharpness for image resampling.
LANCZOS_A = 3


def lanczos(x, a: int = LANCZOS_A):
    """Lanczos kernel ``sinc(x) sinc(x/a)`` for ``|x| < a``, else 0."""
    return jnp.where(jnp.abs(x) < a, jnp.sinc(x) * jnp.sinc(x / a), 0.0)


def resampling_taps(scale) -> tuple[int, int]:
    """(forward, adjoint) band half-widths for :func:`resample_2d` at these scales (static ints).

    Forward: input rows within ``a * max(scale, 1)`` of an output point. Adjoint: output points
    within that distance of an input row, ``2 a stretch / scale`` of them at most.
    """
    scale = np.asarray(scale, dtype=np.float64)
    stretch = np.maximum(scale, 1.0)
    forward = int(math.ceil(LANCZOS_A * stretch.max()))
    adjoint = int(math.ceil(np.max(LANCZOS_A * stretch / scale))) + 1
    return forward, adjoint


def _band(points, rows, stretch):
    """Unnormalised Lanczos weights between sample ``points`` and grid ``rows`` (pixel units)."""
    return lanczos((points - rows.astype(points.dtype)) / stretch)


def _forward_plan(scale, n: int, taps: int):
    """For every output point ``j * scale``: first input row (n,), normalised weights (n, 2 taps),
    and the normalisation (n,)."""
    stretch = jnp.maximum(scale, 1.0)
    points = jnp.arange(n, dtype=jnp.float32) * scale
    first = jnp.floor(points).astype(jnp.int32) - taps + 1
    raw = _band(points[:, None], first[:, None] + jnp.arange(2 * taps), stretch)
    norm = jnp.sum(raw, axis=1)
    return first, raw / norm[:, None], norm


def _adjoint_plan(scale, n: int, taps: int, adjoint_taps: int):
    """For every input row m: first output point (n,) and weights (n, 2 adjoint_taps) of the
    outputs that read it -- the transpose of the forward band, itself a band."""
    stretch = jnp.maximum(scale, 1.0)
    norm = _forward_plan(scale, n, taps)[2]
    rows = jnp.arange(n, dtype=jnp.float32)
    first = jnp.floor((rows - LANCZOS_A * stretch) / scale).astype(jnp.int32) + 1
    outputs = first[:, None] + jnp.arange(2 * adjoint_taps)
    inside = (outputs >= 0) & (outputs < n)
    raw = _band(outputs.astype(jnp.float32) * scale, rows[:, None], stretch)
    return first, jnp.where(inside, raw / norm[jnp.clip(outputs, 0, n - 1)], 0.0)


def _materialise(x):
    """``x`` as a fresh row-major array.

    XLA's CPU layout assignment may turn a transpose into a strided view; a gather reading such a
    view goes element by element, 10-20 times slower than copying whole rows. Adding a zero that
    the compiler cannot prove is zero forces the copy (one elementwise pass; harmless on GPUs). A
    NaN in ``x``'s first element makes all of ``x`` NaN, which the fit treats as any NaN (rollback).
    """
    zero = jax.lax.stop_gradient(jnp.minimum(jnp.abs(x.reshape(-1)[0]), 0.0))
    return x + zero.astype(x.dtype)


def _transpose(x):
    """Swap the last two axes, materialised (see :func:`_materialise`)."""
    return _materialise(jnp.swapaxes(x, -2, -1))


def _gather_sum(images, first, weights):
    """``out[k, j] = sum_t weights[k, j, t] images[k, first[k, j] + t]`` along axis 1 (real images);
    rows outside the image contribute nothing. One whole-row gather per tap, the leading axis
    flattened in, so each gather copies contiguous rows."""
    n_k, n = images.shape[:2]
    flat = images.reshape((n_k * n,) + images.shape[2:])
    base = (jnp.arange(n_k) * n)[:, None]
    extra = (1,) * (images.ndim - 2)
    out = jnp.zeros((n_k, first.shape[1]) + images.shape[2:], images.dtype)
    for t in range(weights.shape[-1]):
        row = first + t
        inside = (row >= 0) & (row < n)
        gathered = jnp.take(flat, (base + jnp.clip(row, 0, n - 1)).reshape(-1), axis=0, mode="clip").reshape(out.shape)
        out = out + gathered * jnp.where(inside, weights[..., t], 0.0).reshape(first.shape + extra)
    return out


def resample_2d(images, scale, taps: int, adjoint_taps: int):
    """Real ``images`` (K, n, m) resampled at the points ``(j, i) * scale_k`` (input-pixel units;
    ``scale`` (K,)), same shape; points beyond the image see zeros. ``taps``, ``adjoint_taps``:
    from :func:`resampling_taps`. Linear in ``images``; ``scale`` gets no gradient."""
    return _resample_2d(taps, adjoint_taps, images, jax.lax.stop_gradient(scale))


def _separable(images, plan):
    """Columns, then rows, of ``images`` through the band ``plan(n) -> (first, weights)``; each pass
    gathers whole rows of a materialised (transposed) copy."""
    columns = _gather_sum(_transpose(images), *plan(images.shape[2]))
    return _gather_sum(_transpose(columns), *plan(images.shape[1]))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _resample_2d(taps, adjoint_taps, images, scale):
    return _separable(images, lambda n: jax.vmap(lambda s: _forward_plan(s, n, taps)[:2])(scale))


def _resample_2d_fwd(taps, adjoint_taps, images, scale):
    return _resample_2d(taps, adjoint_taps, images, scale), scale


def _resample_2d_bwd(taps, adjoint_taps, scale, cotangent):
    adjoint = _separable(cotangent, lambda n: jax.vmap(lambda s: _adjoint_plan(s, n, taps, adjoint_taps))(scale))
    return adjoint, jnp.zeros_like(scale)


_resample_2d.defvjp(_resample_2d_fwd, _resample_2d_bwd)


def per_part(fn, *arrays):
    """``fn`` applied to the leading slices of ``arrays`` in turn (e.g. real and imaginary parts).

    A loop, not a vectorised map, on purpose: its outputs are written to memory, where XLA would
    otherwise fuse the resampling into every read of its result (a crop, a reduction), which the
    CPU compiler then recomputes per element, 5-20 times slower.
    """
    return jax.lax.map(lambda xs: fn(*xs), arrays)
