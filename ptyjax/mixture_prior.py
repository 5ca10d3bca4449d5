"""A Gaussian-mixture prior on per-pixel chemical features, re-estimated from the object during the fit.

The prior ``chemical_mixture`` computes, differentiably from the current log-object, a few per-pixel
chemical features (:func:`chemical_features`): the OD edge jump of each absorption edge in the
energies (post-edge minus pre-edge OD, the lowest and highest energy of the edge's window), and the
phase at the lowest energy (the electron density, pre-edge of every edge). It fits a Gaussian mixture
to the features of all pixels by a few EM steps under ``stop_gradient`` (initialised from equal-count
bins along the first principal axis, so deterministic), and returns the negative log-likelihood of the
pixels under that mixture: each pixel's features are pulled towards the groups it belongs to, with the
groups themselves following the reconstruction (block-coordinate: mixture by EM, object by gradient).

What is clustering-aware: pixels of one chemical group share edge jumps and density up to the group's
fitted spread, so noise within a group is damped while group boundaries are kept (a pixel is pulled
towards its own group, not towards its neighbours). What is not: the features are thickness-dependent
edge jumps and phase, not the thickness-independent edge energies and ratios that
:mod:`ptyjax.cluster` uses after the fit (an edge fit per step would be too slow); the number of groups
is fixed (no BIC), and the mixture parameters are re-estimated from scratch at every step, not
optimised jointly with the object.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import chemistry, priors


def feature_layout(energies_ev):
    """``[(name, plus_index, minus_index, kind)]``: each feature is ``log-object[plus] - [minus]`` (kind
    ``"jump"``: OD = -2 x the log-amplitude difference) or the phase at ``plus`` (kind ``"phase"``)."""
    energies = np.asarray(energies_ev, dtype=np.float64)
    elements = chemistry.detect_edges(energies)
    layout = []
    for element in elements:
        window = np.flatnonzero(chemistry.edge_window(energies, element, elements))
        layout.append((f"edge_jump_{element}", int(window[-1]), int(window[0]), "jump"))
    layout.append(("phase_lowest_energy", int(np.argmin(energies)), -1, "phase"))
    return layout


def chemical_features(log_object, energies_ev):
    """Per-pixel features (F, Ny, Nx) of ``log_object`` (E, Ny, Nx) at ``energies_ev`` (eV): OD edge
    jumps (dimensionless) of the edges found by :func:`ptyjax.chemistry.detect_edges`, then the phase
    (rad) at the lowest energy. Names and definitions: :func:`feature_layout`."""
    out = []
    for _, plus, minus, kind in feature_layout(energies_ev):
        if kind == "jump":
            out.append(-2.0 * (jnp.real(log_object[plus]) - jnp.real(log_object[minus])))
        else:
            out.append(jnp.imag(log_object[plus]))
    return jnp.stack(out)


def _log_gaussian(x, means, covariances):
    """log N(x | mean_k, cov_k) for x (N, F): (N, K)."""
    chol = jnp.linalg.cholesky(covariances)  # (K, F, F)
    diff = x[None] - means[:, None]  # (K, N, F)
    z = jax.scipy.linalg.solve_triangular(chol, jnp.swapaxes(diff, 1, 2), lower=True)  # (K, F, N)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    f = x.shape[1]
    return (-0.5 * jnp.sum(z**2, axis=1) - 0.5 * log_det[:, None] - 0.5 * f * jnp.log(2 * jnp.pi)).T


def _m_step(x, responsibilities, min_variance):
    counts = jnp.sum(responsibilities, axis=0) + 1e-6  # (K,)
    means = responsibilities.T @ x / counts[:, None]
    diff = x[None] - means[:, None]  # (K, N, F)
    cov = jnp.einsum("nk,knf,kng->kfg", responsibilities, diff, diff) / counts[:, None, None]
    cov = cov + min_variance * jnp.eye(x.shape[1])
    return counts / jnp.sum(counts), means, cov


def fit_mixture(x, n_components: int, em_steps: int, min_variance: float):
    """Gaussian mixture (weights (K,), means (K, F), covariances (K, F, F)) of ``x`` (N, F) by ``em_steps``
    EM iterations, started from ``n_components`` equal-count bins along the first principal axis;
    covariances are floored at ``min_variance`` times the identity."""
    centred = x - jnp.mean(x, axis=0)
    _, vectors = jnp.linalg.eigh(centred.T @ centred)
    rank = jnp.argsort(jnp.argsort(centred @ vectors[:, -1]))
    responsibilities = jax.nn.one_hot(rank * n_components // x.shape[0], n_components)
    mixture = _m_step(x, responsibilities, min_variance)
    for _ in range(em_steps):
        weights, means, cov = mixture
        responsibilities = jax.nn.softmax(jnp.log(weights) + _log_gaussian(x, means, cov), axis=1)
        mixture = _m_step(x, responsibilities, min_variance)
    return mixture


def _scales(energies_ev, jump_scale, phase_scale):
    return np.array([jump_scale if kind == "jump" else phase_scale for *_, kind in feature_layout(energies_ev)])


def _sensitivity(jump_scale, phase_scale, min_std):
    """Largest curvature of -log(mixture) per log-object element: the Hessian of -log(mixture) is at
    most its largest precision, <= 1 / min_std^2 in scaled features, and an element enters a scaled
    feature with a derivative of at most 2 / jump_scale (OD = -2 log-amplitude) or 1 / phase_scale."""
    return max(2.0 / jump_scale, 1.0 / phase_scale) ** 2 / min_std**2


def _mixture_curvature(context, weight=1.0, **_):
    # The prior is divided by its sensitivity, so its curvature bound per element is weight / n_elements.
    return float(weight / context.n_elements)


@priors.register("chemical_mixture", curvature=_mixture_curvature)
def chemical_mixture(params, context, weight=1.0, n_components=4, em_steps=5, jump_scale=0.01, phase_scale=0.05,
                     min_std=1.0):
    """Negative log-likelihood of every pixel's chemical features under a Gaussian mixture of
    ``n_components`` groups fitted to them (``em_steps`` EM steps, no gradient through the fit).

    Features (:func:`chemical_features`) are divided by ``jump_scale`` (OD) and ``phase_scale`` (rad);
    ``min_std`` (in those units) floors the groups' spread: the resolution below which a group is not
    made narrower. Normalised per object element and by :func:`_sensitivity`, so that its curvature
    is at most ``weight / n_elements``: ``weight`` compares with ``4 weight / dE`` of ``spectral_smoothness``.
    """
    features = chemical_features(params.object.log_object(), context.energies_ev)
    scales = jnp.asarray(_scales(context.energies_ev, jump_scale, phase_scale), jnp.float32)
    x = (features / scales[:, None, None]).reshape(features.shape[0], -1).T  # (N, F)
    weights, means, cov = jax.lax.stop_gradient(fit_mixture(jax.lax.stop_gradient(x), int(n_components), int(em_steps), min_std**2))
    log_likelihood = jax.nn.logsumexp(jnp.log(weights) + _log_gaussian(x, means, cov), axis=1)
    sensitivity = _sensitivity(jump_scale, phase_scale, min_std)
    return -weight * jnp.sum(log_likelihood) / (sensitivity * context.n_elements)
