"""Priors: pure functions of the parameters returning a scalar, registered by name.

A prior is called as ``prior(params, context, **options)`` where ``params`` is the
:class:`ptyjax.model.Reconstruction` pytree and ``context`` a :class:`PriorContext`. It is added to the
data term, which is normalised per photon (:mod:`ptyjax.losses`); priors here are normalised per
object element so that a weight of order one balances an averagely lit pixel. A prior may carry a
``curvature(context, **options)`` attribute: an upper bound of its second derivative per object
element, which the object preconditioner adds to the illumination so that steps stay stable where
the prior dominates (:mod:`ptyjax.preconditioning`).

Register your own with :func:`register`; see README "Writing a prior".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .errors import PtyjaxError

PRIORS: dict[str, Callable] = {}


@dataclass(frozen=True)
class PriorContext:
    """What priors may know besides the parameters: photon energies (eV) and the object shape."""

    energies_ev: tuple
    object_shape: tuple[int, int]

    def __post_init__(self):
        # Hashable, so a context can be static data of a jitted function.
        object.__setattr__(self, "energies_ev", tuple(float(e) for e in np.asarray(self.energies_ev).ravel()))
        object.__setattr__(self, "object_shape", tuple(int(n) for n in self.object_shape))

    @property
    def n_elements(self) -> int:
        return int(len(self.energies_ev) * self.object_shape[0] * self.object_shape[1])


def register(name: str, curvature: Callable | None = None):
    """Decorator registering ``fn(params, context, **options) -> scalar`` as prior ``name``."""

    def wrap(fn):
        if curvature is not None:
            fn.curvature = curvature
        PRIORS[name] = fn
        return fn

    return wrap


def get(name: str) -> Callable:
    try:
        return PRIORS[name]
    except KeyError:
        raise PtyjaxError(f"unknown prior {name!r}; registered: {sorted(PRIORS)}") from None


def huber(x, delta):
    """Huber function: ``x^2/2`` for ``|x| <= delta``, linear beyond (keeps true edges)."""
    ax = jnp.abs(x)
    return jnp.where(ax <= delta, 0.5 * ax**2, delta * (ax - 0.5 * delta))


def _spectral_curvature(context: PriorContext, weight=1.0, delta=None):
    spacing = np.diff(np.asarray(context.energies_ev, dtype=np.float64))
    if spacing.size == 0:
        return 0.0
    # Gershgorin bound of the quadratic part of sum_e |x_{e+1} - x_e|^2 / (2 dE_e): 4 / min dE.
    return float(4.0 * weight / (spacing.min() * context.n_elements))


@register("spectral_smoothness", curvature=_spectral_curvature)
def spectral_smoothness(params, context: PriorContext, weight=1.0, delta=None):
    """Smoothness of the log-object along energy: ``weight * sum_e dE_e rho(|d log O / dE|_e)``.

    The derivative is the finite difference of ``log O = ln|O| + i phi`` between neighbouring
    energies divided by their spacing (1/eV); ``rho`` is quadratic, or Huber with threshold
    ``delta`` (1/eV) so that real absorption edges cost only linearly. Weight in eV: the data and
    the prior balance when ``weight / dE`` is about one. ``weight = 0`` gives independent
    reconstructions.
    """
    energies = jnp.asarray(context.energies_ev, jnp.float32)
    if energies.shape[0] < 2:
        return jnp.float32(0.0)
    spacing = jnp.diff(energies)[:, None, None]
    log_object = params.object.log_object()
    diff = jnp.diff(log_object, axis=0)
    slope_sq = (jnp.real(diff) ** 2 + jnp.imag(diff) ** 2) / spacing**2
    if delta is None:
        rho = 0.5 * slope_sq
    else:
        # sqrt with a floor far below any resolvable slope keeps the gradient finite at zero.
        rho = huber(jnp.sqrt(slope_sq + (1e-3 * delta) ** 2), delta)
    return weight * jnp.sum(spacing * rho) / context.n_elements


def _low_rank_curvature(context: PriorContext, weight=1.0, rank=5):
    # With the subspace held fixed the prior is weight |(1 - U U^H) L|^2 / n, a projection's square
    # norm: its second derivative per element is 2 weight / n at most.
    return float(2.0 * weight / context.n_elements)


@register("spectral_low_rank", curvature=_low_rank_curvature)
def spectral_low_rank(params, context: PriorContext, weight=1.0, rank=5):
    """Distance of the log-object stack from the nearest stack of ``rank`` spectra:
    ``weight * sum_{i > rank} s_i^2 / n`` with ``s_i`` the singular values of the log-object as an
    (energies x pixels) complex matrix ``L``.

    A sample of a few chemical species has ``L(E, r) = sum_s c_s(E) t_s(r)`` (each species' complex
    log-transmission per unit thickness times its thickness map), so the stack has rank at most the
    number of species; the noise of each energy's reconstruction spreads over all ``E`` ranks. Unlike
    :func:`spectral_smoothness` the coupling does not weaken with the spacing between energies: the
    pre- and post-edge energies, tens of eV from their neighbours, borrow the particle's structure
    from all others (as PCA denoising does in spectromicroscopy, e.g. Lerotic et al., J. Synchrotron
    Rad. 21, 1206 (2014), MANTiS). ``rank``: at least the number of species; too low biases the
    spectra, so prefer one more. The gradient ``2 weight (1 - U U^H) L / n`` (``U``: the top ``rank``
    eigenvectors of ``L L^H``, recomputed each step) is exact: the residual is orthogonal to the
    subspace, so the subspace's own change does not enter (Eckart-Young). Cost per step: the
    ``E x E`` Gram matrix, O(E^2 pixels), and the projection, O(E rank pixels); on the small preset
    (30 energies, 281^2 pixels) the runs took as long as without it, within this machine's noise.
    """
    log_object = params.object.log_object()
    n_energies = log_object.shape[0]
    if rank >= n_energies:
        return jnp.float32(0.0)
    stack = log_object.reshape(n_energies, -1)
    gram = jax.lax.stop_gradient(stack @ jnp.conj(stack).T)  # (E, E): small, whatever the object
    _, vectors = jnp.linalg.eigh(gram)  # ascending eigenvalues
    subspace = vectors[:, n_energies - rank :]
    residual = stack - subspace @ (jnp.conj(subspace).T @ stack)
    return weight * jnp.sum(jnp.real(residual) ** 2 + jnp.imag(residual) ** 2) / context.n_elements


def total(params, context: PriorContext, spec: dict) -> jnp.ndarray:
    """Sum of the priors in ``spec`` = ``{name: options}`` (options hold ``weight`` and the rest)."""
    value = jnp.float32(0.0)
    for name, options in spec.items():
        value = value + get(name)(params, context, **options)
    return value


def object_curvature(context: PriorContext, spec: dict) -> float:
    """Sum of the registered curvature bounds of the priors in ``spec`` (0 for those with none)."""
    return float(sum(getattr(get(n), "curvature", lambda c, **o: 0.0)(context, **o) for n, o in spec.items()))
