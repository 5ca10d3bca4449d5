"""Priors: their values on stacks where the answer is known, and gradients against finite differences."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyjax import priors
from ptyjax.model import LogObjectStack


def params_of(log_amplitude, phase):
    return types.SimpleNamespace(object=LogObjectStack(jnp.asarray(log_amplitude, jnp.float32), jnp.asarray(phase, jnp.float32)))


def species_stack(rng, n_energies, shape, n_species):
    """Log-object (E, Ny, Nx) of ``n_species`` species: complex spectra times real thickness maps."""
    spectra = rng.standard_normal((n_energies, n_species)) + 1j * rng.standard_normal((n_energies, n_species))
    maps = rng.random((n_species,) + shape)
    return np.einsum("es,syx->eyx", spectra, maps) * 0.1


def test_low_rank_prior_is_the_energy_beyond_the_rank():
    """Zero for a stack of ``rank`` species; for any stack, weight times the sum of the squared
    singular values beyond ``rank`` (Eckart-Young), per element."""
    rng = np.random.default_rng(0)
    context = priors.PriorContext(np.linspace(6500, 6600, 8), (12, 10))
    prior = priors.get("spectral_low_rank")
    clean = species_stack(rng, 8, (12, 10), 3)
    assert float(prior(params_of(clean.real, clean.imag), context, weight=2.0, rank=3)) < 1e-6 * np.sum(np.abs(clean) ** 2) / clean.size
    noisy = clean + 0.01 * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape))
    singular = np.linalg.svd(noisy.reshape(8, -1), compute_uv=False)
    expected = 2.0 * np.sum(singular[3:] ** 2) / noisy.size
    assert float(prior(params_of(noisy.real, noisy.imag), context, weight=2.0, rank=3)) == pytest.approx(expected, rel=1e-3)
    assert float(prior(params_of(noisy.real, noisy.imag), context, weight=2.0, rank=8)) == 0.0


def test_low_rank_prior_gradient_matches_finite_differences():
    """The gradient, taken with the subspace held fixed, is that of the prior itself."""
    rng = np.random.default_rng(1)
    context = priors.PriorContext(np.linspace(6500, 6600, 6), (8, 8))
    stack = species_stack(rng, 6, (8, 8), 2) + 0.02 * rng.standard_normal((6, 8, 8))
    value = lambda a, p: priors.get("spectral_low_rank")(params_of(a, p), context, weight=1.0, rank=2)  # noqa: E731
    a, p = jnp.asarray(stack.real, jnp.float32), jnp.asarray(stack.imag, jnp.float32)
    grad_a, grad_p = jax.grad(value, argnums=(0, 1))(a, p)
    da, dp = (jnp.asarray(rng.standard_normal(stack.shape), jnp.float32) for _ in range(2))
    h = 1e-3  # the subspace turns with the stack: O(h^2) terms stay below 1e-4 here
    difference = (float(value(a + h * da, p + h * dp)) - float(value(a - h * da, p - h * dp))) / (2 * h)
    assert float(jnp.sum(grad_a * da) + jnp.sum(grad_p * dp)) == pytest.approx(difference, rel=2e-3)


def test_low_rank_curvature_bounds_the_prior():
    """The preconditioner's bound: the prior's second derivative along any direction is at most
    the registered curvature (2 weight / n)."""
    rng = np.random.default_rng(2)
    context = priors.PriorContext(np.linspace(6500, 6600, 6), (8, 8))
    stack = species_stack(rng, 6, (8, 8), 2) + 0.02 * rng.standard_normal((6, 8, 8))
    prior = priors.get("spectral_low_rank")
    value = lambda t, d: prior(params_of(stack.real + t * d, stack.imag), context, weight=3.0, rank=2)  # noqa: E731
    bound = prior.curvature(context, weight=3.0, rank=2)
    for _ in range(3):
        d = jnp.asarray(rng.standard_normal(stack.shape), jnp.float32)
        d = d / jnp.sqrt(jnp.sum(d**2))
        second = float(jax.grad(jax.grad(value), argnums=0)(0.0, d))
        assert second <= bound * (1 + 1e-3)
