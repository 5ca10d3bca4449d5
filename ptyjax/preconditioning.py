"""Diagonal preconditioning of object and probe gradients, as optax gradient transformations.

Plain gradient steps treat brightly and dimly lit object pixels alike and converge slowly. As in
LSQML (Odstrcil et al., Opt. Express 26, 3108 (2018)) and rPIE (Maiden et al., Optica 4, 736
(2017)), ptyjax divides each gradient by a diagonal curvature estimate: for the object, the
illumination ``sum_frames |P|^2`` of the current minibatch on the common grid (a majoriser of the
Gauss-Newton diagonal of the photon-normalised data term) plus a floor of ``floor * max`` (the rPIE
regularisation; 0.1 as in DESIGN notes / LSQML) plus the curvature bound of the priors; for the
probe, ``sum_frames |O_patch|^2`` likewise. A step of ``learning_rate ~ 1`` is then close to a full
projection, whatever the photon count.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class _Empty(NamedTuple):
    pass


def scale_by_curvature() -> optax.GradientTransformationExtraArgs:
    """Divide updates by the ``curvature`` extra argument (a pytree like the parameters, or a prefix
    broadcastable to them). Leaves whose curvature is ``None`` pass unchanged."""

    def init(params):
        del params
        return _Empty()

    def update(updates, state, params=None, *, curvature=None, **extra):
        del params, extra
        if curvature is None:
            return updates, state
        scaled = jax.tree.map(lambda u, c: u if c is None else u / c, updates, curvature, is_leaf=lambda x: x is None)
        return scaled, state

    return optax.GradientTransformationExtraArgs(init, update)


def damped(curvature, floor: float, axes=(-2, -1)):
    """``sqrt(c^2 + (floor * max c)^2)`` with the maximum taken per image over ``axes``.

    Smoothly bounds the step where the curvature (illumination) is small, like rPIE's ``alpha``.
    """
    peak = jnp.max(curvature, axis=axes, keepdims=True)
    return jnp.sqrt(curvature**2 + (floor * peak) ** 2) + 1e-30
