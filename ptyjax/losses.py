"""Noise models: the data term of the objective.

Each loss takes model and measured intensities (..., N, N) and a weight array broadcastable to them
(0 for bad pixels and padding frames), and returns a scalar *normalised by the measured photon count*
of the batch, so that the same step sizes serve 1e4 or 1e9 photons per frame.
"""

from __future__ import annotations

import jax.numpy as jnp

# Keeps sqrt and log differentiable where the model intensity is exactly zero; in photons.
_INTENSITY_FLOOR = 1e-6


def amplitude(model, measured, weight):
    """Gaussian noise on amplitudes: ``sum w (sqrt(I_model) - sqrt(I))^2 / sum w I``.

    The variance-stabilised form of Poisson noise (Var sqrt(I) ~ 1/4), robust from the first epoch.
    """
    residual = jnp.sqrt(model + _INTENSITY_FLOOR) - jnp.sqrt(jnp.maximum(measured, 0.0))
    return jnp.sum(weight * residual**2) / _photons(measured, weight)


def poisson(model, measured, weight):
    """Poisson negative log-likelihood minus its minimum (half the deviance), per photon.

    ``sum w (I_model - I ln I_model - (I - I ln I)) / sum w I``; zero for a perfect model.
    """
    measured = jnp.maximum(measured, 0.0)
    log_model = jnp.log(model + _INTENSITY_FLOOR)
    log_measured = jnp.log(jnp.where(measured > 0, measured, 1.0))
    nll = model - measured - measured * (log_model - log_measured)
    return jnp.sum(weight * nll) / _photons(measured, weight)


def _photons(measured, weight):
    return jnp.maximum(jnp.sum(weight * jnp.maximum(measured, 0.0)), 1.0)


# Gauss-Newton curvature of each loss per unit of |exit wave|^2 / photons (used by the
# preconditioner): d^2/dA^2 (A - sqrt I)^2 = 2; d^2/dA^2 (A^2 - I ln A^2) = 2 + 2 I / A^2 = 4 at A^2 = I.
amplitude.curvature = 2.0
poisson.curvature = 4.0

LOSSES = {"amplitude": amplitude, "poisson": poisson}


def get(name: str):
    """The loss registered as ``name``."""
    from .errors import PtyjaxError

    try:
        return LOSSES[name]
    except KeyError:
        raise PtyjaxError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
