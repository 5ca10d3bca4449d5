"""Model recipes end to end, and the physics of the spectral-basis parametrisations and the mixture prior."""

import dataclasses
import types

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from ptyjax import physics, recipes, results
from ptyjax.cli import main
from ptyjax.mixture_prior import chemical_features, chemical_mixture, feature_layout
from ptyjax.model import LogObjectStack
from ptyjax.parametrisations import SPECIES_SETS, UNIT_AREAL_DENSITY, SpectralBasisStack, chemical_basis, low_rank, species_spectrum
from ptyjax.priors import PriorContext
from ptyjax.simulate import PRESETS

TINY_ENERGIES = np.asarray(PRESETS["tiny"].energies_ev)
RECIPES = ["independent", "joint-smooth", "joint-huber", "joint-lowrank", "low-rank", "chemical-basis", "mixture-prior"]


@pytest.fixture(scope="module")
def tiny(tiny_dataset):
    return tiny_dataset


def test_every_listed_recipe_is_tested():
    assert set(recipes.available()) == set(RECIPES)


@pytest.mark.parametrize("model", RECIPES)
def test_recipe_runs_from_the_cli(tiny, tmp_path, model):
    out = tmp_path / "results.h5"
    # Two batches per epoch (of the 36 points) and a given defocus: CPU-sized, no defocus search.
    code = main(["reconstruct", str(tiny), "-o", str(out), "--model", model, "--epochs", "3", "--batch", "18",
                 "--defocus", "2.7e-4", "--checkpoint-every", "0", "--quiet"])
    assert code == 0
    rec = results.read_group(out, "reconstruction")
    assert np.all(np.isfinite(rec["object"])) and rec["object"].shape[0] == TINY_ENERGIES.size
    # Steps of the preconditioned size (object_step = 1) reduce the loss from the start.
    assert np.all(np.isfinite(rec["loss"])) and rec["loss"][-1] < 0.7 * rec["loss"][0], rec["loss"]
    assert results.read_config(out)["reconstruction"]["model"] == model


def _scaled_gauss_newton(module, h):
    """Eigenvalues of D^-1/2 G D^-1/2: G the exact Gauss-Newton matrix of the log-object (curvature h
    for real and imaginary parts), D the module's diagonal curvature. All <= 1 means that a step of 1
    with the diagonal never exceeds the Gauss-Newton step."""
    params, unravel = jax.flatten_util.ravel_pytree(module)
    jac = jax.jacfwd(lambda p: unravel(p).log_object())(params)  # (E, Ny, Nx, P) complex
    jac = jac.reshape(-1, params.size)
    weight = jnp.sqrt(h.reshape(-1))[:, None]
    j_real = jnp.concatenate([jnp.real(jac) * weight, jnp.imag(jac) * weight])
    gauss_newton = np.asarray(j_real.T @ j_real, np.float64)
    diagonal, _ = jax.flatten_util.ravel_pytree(module.curvature(h))
    d = np.asarray(diagonal, np.float64)
    return np.linalg.eigvalsh(gauss_newton / np.sqrt(np.outer(d, d))), np.diag(gauss_newton) / d


def _randomised(module, rng):
    """Low-rank: random maps and spectra. Chemical basis: random non-negative amounts, the physical
    reference spectra (and zero corrections)."""
    if module.reference:
        return dataclasses.replace(module, maps=jnp.asarray(rng.uniform(0, 1, module.maps.shape), jnp.float32))
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, jnp.float32), module)


@pytest.mark.parametrize("make", [lambda: low_rank(5, (4, 3), TINY_ENERGIES[:5], rank=3),
                                  lambda: chemical_basis(6, (4, 3), TINY_ENERGIES[:6], learn_spectra=True),
                                  lambda: chemical_basis(6, (4, 3), TINY_ENERGIES[:6])])
def test_spectral_basis_curvature_majorises_gauss_newton(make):
    rng = np.random.default_rng(1)
    module = _randomised(make(), rng)
    h = jnp.asarray(rng.uniform(0.2, 1.0, size=(module.spectra().shape[1],) + module.maps.shape[1:]), jnp.float32)
    eigenvalues, _ = _scaled_gauss_newton(module, h)
    # Majoriser: no eigenvalue above 1 (float32 Jacobians: 1e-4) ...
    assert eigenvalues.max() <= 1 + 1e-4
    # ... and not loose: along the stiffest direction a step of 1 is at least half the Gauss-Newton step
    # (the factor 2 of the bilinear bound).
    assert eigenvalues.max() > 0.5


def test_one_species_with_fixed_spectrum_has_the_exact_diagonal():
    rng = np.random.default_rng(2)
    spectrum = species_spectrum(SPECIES_SETS["lnmo"][0], TINY_ENERGIES)
    module = SpectralBasisStack(jnp.asarray(rng.uniform(0, 1, (1, 5, 4)), jnp.float32), None, None,
                                reference=(tuple(spectrum.real.tolist()), tuple(spectrum.imag.tolist())))
    h = jnp.asarray(rng.uniform(0.2, 1.0, (TINY_ENERGIES.size, 5, 4)), jnp.float32)
    eigenvalues, diagonal_ratio = _scaled_gauss_newton(module, h)
    # One map per pixel and fixed spectra: the Gauss-Newton matrix is diagonal, the curvature exact.
    np.testing.assert_allclose(diagonal_ratio, 1.0, rtol=1e-4)
    np.testing.assert_allclose(eigenvalues, 1.0, rtol=1e-4)


def test_species_spectrum_has_the_tabulated_edge_jump():
    mn4 = SPECIES_SETS["lnmo"][0]
    e0 = mn4.edges[0].edge_energy_ev
    # 30 eV below and 60 eV above E0: outside the broadened step and the white line.
    od = -2.0 * np.real(species_spectrum(mn4, [e0 - 30.0, e0 + 60.0]))
    expected = UNIT_AREAL_DENSITY * physics.edge_jump_cross_section("Mn")
    # The measured step includes the smooth E^-3-like fall of the oxygen and Mn background (few %).
    assert (od[1] - od[0]) == pytest.approx(expected, rel=0.1)


def test_low_rank_starts_at_transmission_one_with_smooth_orthonormal_spectra():
    module = low_rank(TINY_ENERGIES.size, (6, 5), TINY_ENERGIES, rank=3)
    np.testing.assert_array_equal(np.asarray(module()), 1.0)
    c = np.asarray(module.spectra())
    gram = c.conj() @ c.T / TINY_ENERGIES.size
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-5)


def _two_group_object(rng, shape=(12, 12)):
    """Log-object whose features form two groups (left: phase -0.6, right: -0.2) with small noise."""
    e = TINY_ENERGIES.size
    phase = np.where(np.arange(shape[1]) < shape[1] // 2, -0.6, -0.2)[None, None, :] + 0.01 * rng.normal(size=(e,) + shape)
    amplitude = -0.05 * (TINY_ENERGIES[:, None, None] > 6545) + 0.002 * rng.normal(size=(e,) + shape)
    return np.asarray(amplitude, np.float32), np.asarray(phase, np.float32)


def test_mixture_prior_has_finite_gradients_and_pulls_outliers_to_their_group():
    rng = np.random.default_rng(3)
    amplitude, phase = _two_group_object(rng)
    outlier = (3, 2)  # in the left group (phase -0.6)
    phase[0][outlier] = -0.45
    context = PriorContext(TINY_ENERGIES, amplitude.shape[1:])

    def prior(stack):
        return chemical_mixture(types.SimpleNamespace(object=stack), context, n_components=2)

    grads = jax.jit(jax.grad(prior))(LogObjectStack(jnp.asarray(amplitude), jnp.asarray(phase)))
    assert np.all(np.isfinite(grads.phase)) and np.all(np.isfinite(grads.log_amplitude))
    # Descending the prior moves the outlier's lowest-energy phase down towards -0.6: a positive gradient,
    # larger than that of any pixel of the tight groups.
    g = np.asarray(grads.phase[0])
    assert g[outlier] > 0 and g[outlier] > 10 * np.median(np.abs(g))
    # The transmission-one start (all features equal) is a degenerate but finite case.
    zeros = LogObjectStack.ones(TINY_ENERGIES.size, amplitude.shape[1:])
    assert np.all(np.isfinite(jax.jit(jax.grad(prior))(zeros).phase))


def test_mixture_features_are_edge_jumps_and_phase():
    names = [name for name, *_ in feature_layout(TINY_ENERGIES)]
    assert names == ["edge_jump_Mn", "edge_jump_Ni", "phase_lowest_energy"]
    rng = np.random.default_rng(4)
    amplitude, phase = _two_group_object(rng)
    features = np.asarray(chemical_features(jnp.asarray(amplitude + 1j * phase), TINY_ENERGIES))
    # OD jump across the Mn edge = -2 x the log-amplitude step of -0.05 (noise 0.002 x 2 sqrt 2).
    assert np.median(features[0]) == pytest.approx(0.1, abs=0.01)
    assert np.median(np.abs(features[1])) < 0.01
