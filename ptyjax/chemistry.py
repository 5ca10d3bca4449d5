"""Edge fitting of per-pixel XANES spectra and the chemical maps derived from it.

Three edge-energy (E0) definitions, as in Larch (Newville, J. Synchrotron Rad. 20, 322 (2013)):

* ``"fit"``: E0 of a parametric XANES model fitted per pixel (damped Gauss-Newton, JAX, vmapped):
  ``mu(E) = a + b e + J [s(E) (1 + c (E - E0)) + h g(E)]`` with ``e = E - E_tab`` (tabulated edge),
  ``s`` an arctan step of Lorentzian FWHM ``w`` (half-jump at E0) and ``g`` a unit Gaussian white line
  at ``E0 + d`` of FWHM ``v``: the same shapes as :class:`ptyjax.physics.EdgeModel`, so E0 is the
  half-jump point and ``h`` the white-line height in units of the jump ``J``;
* ``"derivative"``: energy of the maximum of ``dmu/dE`` (Larch ``find_e0``), refined between samples
  by a parabola through the three highest points;
* ``"half-jump"``: energy where the normalised spectrum (Larch ``pre_edge``) crosses 0.5.

In the last two the jump is Larch's edge step: post-edge polynomial minus pre-edge line at E0.
Energies are in eV, optical densities (OD) dimensionless, lengths in metres.
"""

from __future__ import annotations

import itertools
import json
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from . import data, physics
from .errors import PtyjaxError

__all__ = [
    "PARAMETERS",
    "xanes_model",
    "larch_pre_edge",
    "derivative_e0",
    "half_jump_e0",
    "fit_edge",
    "detect_edges",
    "edge_window",
    "valence_from_edge_energy",
    "areal_density",
    "atomic_ratio",
    "electron_density_areal",
    "ratio_names",
    "analyze_stack",
    "analyze",
    "E0_METHODS",
]

E0_METHODS = ("fit", "derivative", "half-jump")

# Parameters of :func:`xanes_model`, in order, with units.
PARAMETERS = (
    ("pre_offset", "1"),  # a: pre-edge OD at the tabulated edge energy
    ("pre_slope", "1/eV"),  # b
    ("jump", "1"),  # J: OD edge jump at E0
    ("edge_energy", "eV"),  # E0, relative to the tabulated edge inside the fit
    ("width", "eV"),  # w: Lorentzian FWHM of the step
    ("white_line", "1"),  # h: white-line height / J
    ("white_line_offset", "eV"),  # d
    ("white_line_width", "eV"),  # v: FWHM
    ("post_slope", "1/eV"),  # c: relative post-edge slope
)
_INDEX = {name: i for i, (name, _) in enumerate(PARAMETERS)}
# Per-pixel free parameters, by priority: with few energies only the first ones are fitted and the others
# keep the values fitted on the mean spectrum of the particle (shared line shape).
_PIXEL_PRIORITY = ("edge_energy", "jump", "pre_offset", "white_line", "pre_slope")
# Starting guesses of the white line for the mean-spectrum fit (typical 3d-oxide K edges; the
# physics.EdgeModel defaults): offset 3 eV above E0, FWHM 4 eV, height 0.3 jump.
_WHITE_LINE_START = {"white_line": 0.3, "white_line_offset": 3.0, "white_line_width": 4.0}
# Candidate absorbers for edge detection: the elements of ptyjax.data.DEFAULT_EDGES (3d metals, K edges).
_CANDIDATES = tuple(name.partition("_")[0] for name in data.DEFAULT_EDGES)


# ---------------------------------------------------------------------------------------------------
# Parametric model and the vectorised fit


def xanes_model(params, e):
    """Model OD at energies ``e`` (eV relative to the tabulated edge) for ``params`` (9,) (see
    :data:`PARAMETERS`; E0 also relative). JAX-traceable."""
    a, b, jump, e0, width, h, offset, fwhm, c = (params[i] for i in range(len(PARAMETERS)))
    e = jnp.asarray(e)  # JAX in, so the physics line shapes return (traceable) JAX arrays
    step = physics.arctan_step(e, e0, width)
    peak = physics.gaussian_peak(e, e0 + offset, fwhm)
    return a + b * e + jump * (step * (1.0 + c * (e - e0)) + h * peak)


# Extra parameters of the joint OD + phase fit (:func:`xanes_phase_model`): the line of the phase
# spectrum, i.e. the non-resonant phase of all atoms, whose change over an edge window is smooth.
PHASE_PARAMETERS = (
    ("phase_offset", "rad"),  # at the tabulated edge energy
    ("phase_slope", "rad/eV"),
)
_SQRT_2LN2 = float(np.sqrt(2.0 * np.log(2.0)))
# Most refits of the joint fit with the noise rescaled to its residuals (stops once every block's
# median chi^2 is within 10 % of 1).
REWEIGHT_ROUNDS = 3


def xanes_phase_model(params, e):
    """Phase (rad) at energies ``e`` (eV relative to the tabulated edge) that the edge of
    ``xanes_model(params[:9], e)`` carries by Kramers-Kronig, plus the line ``params[9] + params[10] e``.

    Per element, OD = 2 r_e lambda n f'' and phase = -r_e lambda n f' (areal density n), so an OD edge
    ``J S(E)`` comes with the phase ``-(J / 2) K[S](E)``, K the transform f'' -> f'
    (:func:`ptyjax.physics.kramers_kronig_f1`), analytic for the model's shapes near the edge (lambda
    constant over the window; the far-off parts of the transform are smooth and go into the line): the
    arctan step of half width g gives ``ln|E - E0 + i g| / pi`` (f' dips at the edge, so the phase
    peaks), its slope term ``(E - E0) s(E)`` gives ``((E - E0) ln|z| - g arg z) / pi``, and the Gaussian
    white line gives ``2/sqrt(pi) D(x / (sqrt(2) sigma))`` with Dawson's integral D. Against the numerical
    transform of the same OD shape: 0.1 % of the phase signal (tests). JAX-traceable."""
    jump, e0, width, h, offset, fwhm, c = (params[i] for i in range(2, 9))
    x = jnp.asarray(e) - e0
    gamma = 0.5 * width
    log_modulus = 0.5 * jnp.log(x**2 + gamma**2)
    sigma = fwhm / (2.0 * _SQRT_2LN2)
    white = (2.0 / np.sqrt(np.pi)) * jax.scipy.special.dawsn((x - offset) / (np.sqrt(2.0) * sigma))
    f1_shape = (log_modulus + c * (x * log_modulus - gamma * jnp.arctan2(gamma, x))) / np.pi + h * white
    return params[9] + params[10] * jnp.asarray(e) - 0.5 * jump * f1_shape


def xanes_od_phase_model(params, e):
    """OD then phase (2E,) at energies ``e``: :func:`xanes_model` and :func:`xanes_phase_model` of the
    11 parameters ``PARAMETERS + PHASE_PARAMETERS`` (one edge, seen in both spectra)."""
    return jnp.concatenate([xanes_model(params, e), xanes_phase_model(params, e)])


@partial(jax.jit, static_argnames=("free", "n_iter", "chi2_scaled", "model"))
def _fit_batch(p_start, spectra, weights, e, free, n_iter=40, chi2_scaled=True, model=xanes_model):
    """Damped Gauss-Newton (Levenberg-Marquardt, Marquardt's diagonal scaling) with a fixed number of
    iterations, vmapped over pixels. ``model(params, e)`` predicts a spectrum (:func:`xanes_model`, or
    :func:`xanes_od_phase_model` with ``spectra`` OD and phase concatenated). ``p_start`` (P, 9), ``spectra`` (P, E), ``weights``: (E,) = 1/sigma,
    or an (E, E) whitening matrix ``L^-1`` of the noise covariance ``C = L L^T`` (generalised least
    squares). The parameter covariance is ``(J^T W J)^-1`` times the reduced chi^2, or without it
    when ``chi2_scaled`` is False. Returns parameters (P, 9), standard errors (P, 9) (0 for fixed
    ones) and the reduced chi^2 (P,)."""
    free_idx = jnp.array(free)
    dof = spectra.shape[-1] - len(free)

    def one(p0, y):
        def residual(q):
            r = model(p0.at[free_idx].set(q), e) - y
            # Diagonal weights stay a vector: the dense (E, E) product is slower (10^5 fits of 47 energies: 18.5 s vs 13.5 s).
            return weights @ r if weights.ndim == 2 else r * weights

        def normal_equations(q):
            r = residual(q)
            jac = jax.jacfwd(residual)(q)
            return r, jac.T @ jac, jac.T @ r

        def body(_, state):
            q, lam, cost = state
            _, hess, grad = normal_equations(q)
            scale = jnp.sqrt(jnp.diag(hess)) + 1e-30
            scaled = hess / jnp.outer(scale, scale) + lam * jnp.eye(len(free))
            q_new = q - jnp.linalg.solve(scaled, grad / scale) / scale
            cost_new = jnp.sum(residual(q_new) ** 2)
            better = jnp.isfinite(cost_new) & (cost_new < cost)
            return (
                jnp.where(better, q_new, q),
                jnp.where(better, lam * 0.3, lam * 10.0),
                jnp.where(better, cost_new, cost),
            )

        q0 = p0[free_idx]
        q, _, cost = jax.lax.fori_loop(0, n_iter, body, (q0, jnp.float32(1e-3), jnp.sum(residual(q0) ** 2)))
        _, hess, _ = normal_equations(q)
        chi2 = cost / jnp.maximum(dof, 1)
        # Covariance (J^T W J)^-1 (* reduced chi^2), inverted in the scaled variables for float32 accuracy.
        scale = jnp.sqrt(jnp.diag(hess)) + 1e-30
        cov = jnp.linalg.inv(hess / jnp.outer(scale, scale)) / jnp.outer(scale, scale)
        cov = cov * chi2 if chi2_scaled else cov
        std = jnp.zeros_like(p0).at[free_idx].set(jnp.sqrt(jnp.diag(cov)))
        return p0.at[free_idx].set(q), std, chi2

    return jax.vmap(one)(p_start, spectra)


def _fit_chunked(p_start, spectra, weights, e, free, chunk=16384, chi2_scaled=True, model=xanes_model):
    """:func:`_fit_batch` over chunks of pixels (bounded memory; the last chunk is padded so every call
    has the same shape and compiles once)."""
    n = spectra.shape[0]
    chunk = int(min(chunk, 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))))
    outputs = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        pad = chunk - (stop - start)
        p = np.pad(p_start[start:stop], ((0, pad), (0, 0)), mode="edge")
        y = np.pad(spectra[start:stop], ((0, pad), (0, 0)), mode="edge")
        result = _fit_batch(jnp.asarray(p, jnp.float32), jnp.asarray(y, jnp.float32),
                            jnp.asarray(weights, jnp.float32), jnp.asarray(e, jnp.float32), free,
                            chi2_scaled=chi2_scaled, model=model)
        outputs.append([np.asarray(r)[: stop - start] for r in result])
    return [np.concatenate(parts) for parts in zip(*outputs)]


# ---------------------------------------------------------------------------------------------------
# Larch-style E0 and edge step (vectorised NumPy: the windows are shared, the fits are linear)


def _index_of(array, value):
    """Larch ``index_of``: index of the last element at or below ``value`` (0 if none)."""
    below = np.nonzero(array <= value)[0]
    return int(below.max()) if below.size else 0


def _index_nearest(array, value):
    return int(np.abs(array - value).argmin())


def _polyfit(x, y, degree):
    """Least-squares polynomial coefficients (ascending powers of ``x``) of every row of ``y`` (..., n),
    with the covariance factor ``(X^T X)^-1`` and the residual variance per row."""
    design = np.vander(x, degree + 1, increasing=True)
    coefs, *_ = np.linalg.lstsq(design, np.moveaxis(y, -1, 0).reshape(len(x), -1), rcond=None)
    coefs = coefs.T.reshape(y.shape[:-1] + (degree + 1,))
    resid = y - coefs @ design.T
    dof = max(len(x) - degree - 1, 1)
    return coefs, np.linalg.pinv(design.T @ design), np.sum(resid**2, axis=-1) / dof


def larch_pre_edge(energy, mu, e0, pre1=None, pre2=None, norm1=None, norm2=None, nnorm=None):
    """Pre-edge line and post-edge polynomial as Larch's ``pre_edge`` (default ranges, ``nvict=0``).

    ``energy`` (E,) eV, ``mu`` (..., E); ``e0`` (scalar eV) sets the fit ranges, shared by all rows.
    Returns a dict: ``pre_coefs`` (..., 2) and ``post_coefs`` (..., nnorm+1) in ascending powers of
    ``E - e0`` (``post`` fits ``mu - pre``), their covariance factors and residual variances, the ranges.
    """
    energy = np.asarray(energy, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    ie0 = _index_nearest(energy, e0)
    if pre1 is None:  # Larch: skip the first point, round to 5 eV (2 eV for short pre-edges)
        pre1 = 5.0 * round((energy[1] - e0) / 5.0) if ie0 > 20 else 2.0 * round((energy[1] - e0) / 2.0)
    pre1 = max(pre1, energy.min() - e0)
    pre2 = 0.5 * pre1 if pre2 is None else pre2
    pre1, pre2 = min(pre1, pre2), max(pre1, pre2)
    npre = 1 if _index_of(energy - e0, pre2) - _index_of(energy - e0, pre1) >= 3 else 0
    if norm2 is None:
        norm2 = 5.0 * round((energy.max() - e0) / 5.0)
    if norm2 < 0:
        norm2 = energy.max() - e0 - norm2
    norm2 = min(norm2, energy.max() - e0)
    if norm1 is None:
        norm1 = min(25.0, 5.0 * round(norm2 / 15.0))
    norm1, norm2 = min(norm1, norm2), max(norm1, norm2)
    norm1 = min(norm1, norm2 - 2)
    if nnorm is None:
        nnorm = 2 if norm2 - norm1 >= 300 else 1 if norm2 - norm1 >= 30 else 0

    x = energy - e0
    p1, p2 = _index_of(energy, pre1 + e0), _index_nearest(energy, pre2 + e0)
    if npre == 0:
        p2 = p2 + 1 if p2 == p1 else p2
    elif p2 - p1 < 2:
        p2 = min(len(energy), p1 + 2)
    pre_coefs, pre_cov, pre_var = _polyfit(x[p1:p2], mu[..., p1:p2], npre)
    if npre == 0:
        pre_coefs = np.concatenate([pre_coefs, np.zeros_like(pre_coefs)], axis=-1)
        pre_cov = np.pad(pre_cov, ((0, 1), (0, 1)))
    pre = pre_coefs[..., :1] + pre_coefs[..., 1:] * x

    q1, q2 = _index_of(energy, norm1 + e0), _index_nearest(energy, norm2 + e0)
    q1 = min(q1, len(energy) - 3)
    if q2 - q1 < 2:
        q1, nnorm = q1 - 2, 0
    elif q2 - q1 < 5:
        nnorm = min(1, nnorm)
    post_coefs, post_cov, post_var = _polyfit(x[q1:q2], (mu - pre)[..., q1:q2], nnorm)
    return dict(pre_coefs=pre_coefs, pre_cov=pre_cov, pre_var=pre_var, post_coefs=post_coefs,
                post_cov=post_cov, post_var=post_var, e0=float(e0), pre=(pre1, pre2), norm=(norm1, norm2),
                nnorm=nnorm)


def _edge_step(lines, e0):
    """Edge step (post minus pre at ``e0``, per row) and its standard error."""
    x = np.asarray(e0) - lines["e0"]
    powers = np.stack([x**k for k in range(lines["post_coefs"].shape[-1])], axis=-1)
    step = np.sum(lines["post_coefs"] * powers, axis=-1)
    var = lines["post_var"] * np.einsum("...i,ij,...j->...", powers, lines["post_cov"], powers)
    return step, np.sqrt(var)


def _pre_line(lines, energy):
    x = np.asarray(energy) - lines["e0"]
    return lines["pre_coefs"][..., :1] + lines["pre_coefs"][..., 1:] * x


def derivative_e0(energy, mu):
    """E0 (eV) at the maximum of ``dmu/dE`` (Larch's finite differences ``gradient(mu) / gradient(E)``),
    refined by the vertex of the parabola through the maximum and its neighbours. ``mu`` (..., E)."""
    energy = np.asarray(energy, dtype=np.float64)
    deriv = np.gradient(np.asarray(mu, dtype=np.float64), axis=-1) / np.gradient(energy)
    # The end points have one-sided differences only; Larch skips them too.
    i = np.clip(np.argmax(deriv[..., 1:-1], axis=-1) + 1, 1, len(energy) - 2)
    x = np.stack([energy[i - 1], energy[i], energy[i + 1]], axis=-1)
    y = np.take_along_axis(deriv, np.stack([i - 1, i, i + 1], axis=-1), axis=-1)
    # Vertex of the parabola through three points (Lagrange form), clamped to the bracketing samples.
    d1 = (y[..., 1] - y[..., 0]) / (x[..., 1] - x[..., 0])
    d2 = (y[..., 2] - y[..., 1]) / (x[..., 2] - x[..., 1])
    curvature = (d2 - d1) / (x[..., 2] - x[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = 0.5 * (x[..., 0] + x[..., 1]) - d1 / (2.0 * curvature)
    vertex = np.where(curvature < 0, vertex, x[..., 1])
    return np.clip(vertex, x[..., 0], x[..., 2])


def half_jump_e0(energy, normalised, near):
    """Energy (eV) where ``normalised`` (..., E) rises through 0.5, linearly interpolated; of several
    crossings the one nearest ``near`` (...,) eV. NaN where there is none. Also returns the slope
    (per eV) of ``normalised`` at the crossing, for error propagation."""
    energy = np.asarray(energy, dtype=np.float64)
    lo, hi = normalised[..., :-1], normalised[..., 1:]
    crossing = (lo < 0.5) & (hi >= 0.5)
    frac = np.where(crossing, (0.5 - lo) / np.where(crossing, hi - lo, 1.0), 0.0)
    e_cross = energy[:-1] + frac * np.diff(energy)
    distance = np.where(crossing, np.abs(e_cross - np.asarray(near)[..., None]), np.inf)
    k = np.argmin(distance, axis=-1)[..., None]
    e0 = np.take_along_axis(e_cross, k, axis=-1)[..., 0]
    slope = np.take_along_axis((hi - lo) / np.diff(energy), k, axis=-1)[..., 0]
    found = np.isfinite(np.take_along_axis(distance, k, axis=-1)[..., 0])
    return np.where(found, e0, np.nan), np.where(found, slope, np.nan)


# ---------------------------------------------------------------------------------------------------
# One edge, many pixels


class EdgeFit(NamedTuple):
    """Per-pixel results of :func:`fit_edge` (arrays of the leading shape of the spectra)."""

    edge_energy: np.ndarray  # eV
    edge_energy_std: np.ndarray
    edge_jump: np.ndarray  # OD
    edge_jump_std: np.ndarray
    white_line: np.ndarray  # height above the step, in units of the jump
    white_line_std: np.ndarray
    chi2: np.ndarray  # reduced chi^2 (fit mode; NaN otherwise)
    shape: dict  # the line shape fitted on the mean spectrum (fit mode), parameter name -> value


def _shared_shape(energy_rel, mean_spectrum, e0_start, width_ev):
    """Line shape fitted on the (high signal-to-noise) mean spectrum: all 9 parameters when there are
    at least 10 energies, otherwise only the per-pixel ones with the rest at their starting values."""
    lines = larch_pre_edge(energy_rel, mean_spectrum, e0_start)
    jump, _ = _edge_step(lines, e0_start)
    start = np.zeros(len(PARAMETERS))
    start[_INDEX["pre_offset"]] = _pre_line(lines, 0.0)[..., 0]
    start[_INDEX["pre_slope"]] = lines["pre_coefs"][1]
    start[_INDEX["jump"]] = max(float(jump), 1e-6)
    start[_INDEX["edge_energy"]] = e0_start
    start[_INDEX["width"]] = width_ev
    for name, value in _WHITE_LINE_START.items():
        start[_INDEX[name]] = value
    n = len(energy_rel)
    free = tuple(range(len(PARAMETERS))) if n >= len(PARAMETERS) + 1 else _pixel_free(n)
    params, _, _ = _fit_chunked(start[None], mean_spectrum[None], np.ones(n), energy_rel, free)
    return params[0], start


def _pixel_free(n_energies):
    k = max(1, min(len(_PIXEL_PRIORITY), n_energies - 1))
    return tuple(sorted(_INDEX[name] for name in _PIXEL_PRIORITY[:k]))


def _whitening(noise):
    """Fit weights from ``noise``: (E,) standard deviations -> 1/sigma; (E, E) covariance -> ``L^-1``
    with ``C = L L^T`` (so the weighted residual has unit covariance)."""
    noise = np.asarray(noise, dtype=np.float64)
    if noise.ndim == 1:
        return 1.0 / noise
    return np.linalg.inv(np.linalg.cholesky(noise))


def _rescaled_by_residuals(noise, observed, params, e, model, n_block):
    """The noise of the concatenated spectra (covariance (2n, 2n) or standard deviations (2n,)) with
    each block of ``n_block`` energies scaled by its median reduced chi^2 over the fitted spectra
    (residuals of ``model`` at ``params``, whitened by the block's own noise), and the scales."""
    finite = np.all(np.isfinite(params), axis=1)
    predicted = np.asarray(jax.vmap(model, (0, None))(jnp.asarray(params[finite], jnp.float32), jnp.asarray(e, jnp.float32)))
    residual = predicted - observed[finite]
    covariance = noise if noise.ndim == 2 else np.diag(noise**2)
    scale = np.ones(covariance.shape[0])
    for start in range(0, covariance.shape[0], n_block):
        block = slice(start, start + n_block)
        white = np.linalg.solve(np.linalg.cholesky(covariance[block, block]), residual[:, block].T)
        scale[block] = np.median(np.mean(white**2, axis=0)) if white.size else 1.0
    factor = np.sqrt(scale)
    return (noise * np.outer(factor, factor) if noise.ndim == 2 else noise * factor), scale


def fit_edge(energy_ev, spectra, element, edge="K", e0_method="fit", noise=None, n_iter=40, chi2_scaled=True, phase=None):
    """Edge energy, jump and white line of every spectrum of ``spectra`` (..., E) (OD at ``energy_ev``
    (E,) eV, one edge of ``element``).

    ``phase`` (..., E) rad (fit mode only; the other methods read the OD): the phase spectra of the
    same pixels, fitted jointly with the OD: the edge's Kramers-Kronig phase (:func:`xanes_phase_model`)
    shares E0, jump, width and white line with the OD model, plus a line of its own, so the phase's
    edge signal (as strong as the OD's for a hard X-ray K edge, at half the noise of OD = -2 ln|O|)
    sharpens E0 and the jump. ``noise`` is then the covariance (2E, 2E) (or standard deviations (2E,))
    of the OD and phase spectra concatenated; each spectrum's share is rescaled to the noise its
    residuals show (up to :data:`REWEIGHT_ROUNDS` refits), so a phase less accurate than the background suggests counts less.

    ``noise`` (E,) is the OD noise per energy (e.g. background scatter), or (E, E) its covariance
    (noise correlated between energies, e.g. by a spectral prior: generalised least squares): fit
    weights, and the scale of the reduced chi^2 (without it, chi^2 is the residual variance in OD^2). Standard errors are
    ``sqrt(diag((J^T W J)^-1) * chi^2_red)`` (fit mode); in half-jump mode the E0 error is the OD
    noise divided by the slope at the crossing; in derivative mode no curvature-based E0 error
    exists and it is NaN. ``chi2_scaled=False`` (fit mode): standard errors are those that
    ``noise`` alone gives, ``sqrt(diag((J^T W J)^-1))``, e.g. for denoised spectra whose small
    residuals would shrink a chi^2-scaled error below the real one. Failed fits
    (non-finite, E0 not inside the energy range, jump below twice its standard error, i.e. no edge
    detected, non-positive width) are NaN. Computed in float32 with energies relative to the tabulated edge.
    """
    if e0_method not in E0_METHODS:
        raise PtyjaxError(f"e0 method must be one of {', '.join(E0_METHODS)}, not {e0_method!r}")
    energy_ev = np.asarray(energy_ev, dtype=np.float64)
    spectra = np.asarray(spectra, dtype=np.float64)
    lead = spectra.shape[:-1]
    flat = spectra.reshape(-1, spectra.shape[-1])
    e_tab = _tabulated_edge(element, edge)
    e = energy_ev - e_tab
    # Start values: derivative E0 of a lightly smoothed spectrum ([1 2 1] / 4), Larch pre/post lines.
    smoothed = ndimage.convolve1d(flat, [0.25, 0.5, 0.25], axis=-1, mode="nearest")
    e0_deriv = derivative_e0(e, smoothed)
    mean = np.nanmean(flat, axis=0)
    e0_ref = float(derivative_e0(e, ndimage.convolve1d(mean, [0.25, 0.5, 0.25], mode="nearest")))
    lines = larch_pre_edge(e, flat, e0_ref)
    width = physics.CORE_HOLE_WIDTH_EV.get((element, edge), 1.5)  # 1.5 eV: typical 3d K-edge FWHM
    nan = np.full(flat.shape[0], np.nan)
    shape = {}

    if e0_method == "fit":
        shared, start_shape = _shared_shape(e, mean, e0_ref, width)
        if not np.all(np.isfinite(shared)):
            shared = start_shape
        # A white line narrower than the core-hole broadening is unphysical, and a vanishing one would
        # leave its height's Jacobian column zero (singular normal equations).
        shared[_INDEX["white_line_width"]] = max(shared[_INDEX["white_line_width"]], width)
        shape = {name: float(v) for (name, _), v in zip(PARAMETERS, shared)}
        shape["edge_energy"] += e_tab
        jump0, _ = _edge_step(lines, e0_deriv)
        start = np.tile(shared, (flat.shape[0], 1))
        start[:, _INDEX["edge_energy"]] = e0_deriv
        start[:, _INDEX["jump"]] = np.where(jump0 > 0, jump0, shared[_INDEX["jump"]])
        start[:, _INDEX["pre_offset"]] = _pre_line(lines, 0.0)[:, 0]
        start[:, _INDEX["pre_slope"]] = lines["pre_coefs"][:, 1]
        free, model, observed = _pixel_free(len(e)), xanes_model, flat
        if phase is not None:
            phase_flat = np.asarray(phase, dtype=np.float64).reshape(flat.shape)
            start = np.concatenate([start, np.zeros((len(start), len(PHASE_PARAMETERS)))], axis=1)
            # The phase line starts at the least-squares line under the start's edge phase.
            edge_phase = np.asarray(jax.vmap(xanes_phase_model, (0, None))(jnp.asarray(start, jnp.float32), jnp.asarray(e, jnp.float32)))
            start[:, len(PARAMETERS):] = _polyfit(e, phase_flat - edge_phase, 1)[0]
            free = free + tuple(range(len(PARAMETERS), len(PARAMETERS) + len(PHASE_PARAMETERS)))
            model, observed = xanes_od_phase_model, np.concatenate([flat, phase_flat], axis=1)
        weights = np.ones(observed.shape[1]) if noise is None else _whitening(noise)
        params, std, chi2 = _fit_chunked(start, observed, weights, e, free, chi2_scaled=chi2_scaled, model=model)
        if phase is not None and noise is not None:
            # Feasible generalised least squares: each spectrum's noise, as the particle's residuals
            # show it, replaces the background's estimate, then the fit is repeated from its result.
            # A reconstruction's phase can stray from the background's noise level inside the particle
            # (small preset: median chi^2 per energy 3.8 for the phase against 1.8 for the OD at the Mn
            # edge); weighted as measured on the background it pulled the Ni edge energies 30 % off.
            noise = np.asarray(noise, np.float64)
            for _ in range(REWEIGHT_ROUNDS):
                noise, scale = _rescaled_by_residuals(noise, observed, params, e, model, len(e))
                restart = np.where(np.isfinite(params), params, start)
                params, std, chi2 = _fit_chunked(restart, observed, _whitening(noise), e, free, chi2_scaled=chi2_scaled, model=model)
                if np.all(np.abs(scale - 1.0) < 0.1):
                    break
        e0 = params[:, _INDEX["edge_energy"]]
        fitted = (
            np.all(np.isfinite(params), axis=1) & np.all(np.isfinite(std), axis=1)
            & (e0 > e.min()) & (e0 < e.max()) & (params[:, _INDEX["width"]] > 0)
        )
        # The jump is reported wherever the fit converged, significant or not: censoring weak jumps
        # would bias every ratio built from the survivors (thin pixels read 70-110 % high in Ni/Mn).
        # The edge position and shape are only defined where an edge was detected (jump > 2 sigma).
        detected = fitted & (params[:, _INDEX["jump"]] > 2.0 * std[:, _INDEX["jump"]])
        keep = lambda a, ok: np.where(ok, a, np.nan)  # noqa: E731
        out = [keep(e0 + e_tab, detected), keep(std[:, _INDEX["edge_energy"]], detected),
               keep(params[:, _INDEX["jump"]], fitted), keep(std[:, _INDEX["jump"]], fitted),
               keep(params[:, _INDEX["white_line"]], detected), keep(std[:, _INDEX["white_line"]], detected),
               keep(chi2, fitted)]
    else:
        e0 = derivative_e0(e, flat)
        e0_std = nan
        jump, jump_std = _edge_step(lines, e0)
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = (flat - _pre_line(lines, e)) / jump[:, None]
        if e0_method == "half-jump":
            e0, slope = half_jump_e0(e, normalised, e0)
            jump, jump_std = _edge_step(lines, e0)
            with np.errstate(divide="ignore", invalid="ignore"):
                # noise of the normalised spectrum / its slope: sigma_mu / (J dnorm/dE)
                e0_std = np.sqrt(lines["pre_var"]) / (np.abs(slope) * jump)
        above = (e[None, :] > e0[:, None]) & (e[None, :] <= e0[:, None] + 30.0)  # white line: within 30 eV above E0
        white = np.where(above, normalised, -np.inf).max(axis=1) - 1.0
        ok = np.isfinite(e0) & (jump > 0) & np.isfinite(white)
        pick = lambda a: np.where(ok, a, np.nan)  # noqa: E731
        out = [pick(e0 + e_tab), pick(e0_std), pick(jump), pick(jump_std), pick(white), nan, nan]
    out = [np.asarray(a, dtype=np.float32).reshape(lead) for a in out]
    return EdgeFit(*out, shape=shape)


# ---------------------------------------------------------------------------------------------------
# Edges in a stack


def _tabulated_edge(element, edge="K"):
    return data.edge_energy_ev(f"{element}_{edge}")


# Edges of compounds sit above the free-atom (tabulated) edge by their chemical shift: 5-13 eV for Mn
# (MnO to MnO2) and ~10 eV for Ni2+ (DESIGN notes section 1), so energies up to 5 eV above the
# tabulated edge still count as pre-edge when deciding whether an edge was measured.
CHEMICAL_SHIFT_MARGIN_EV = 5.0


def detect_edges(energy_ev, candidates=_CANDIDATES, edge="K"):
    """Elements whose ``edge`` the energies span: of the energies that :func:`ptyjax.data.group_by_edge`
    assigns to the edge, at least two below and two above the tabulated edge (xraydb) plus
    :data:`CHEMICAL_SHIFT_MARGIN_EV`."""
    energy_ev = np.asarray(energy_ev, dtype=np.float64)
    groups = data.group_by_edge(energy_ev, [f"{el}_{edge}" for el in candidates])
    found = []
    for element in candidates:
        e = energy_ev[groups.get(f"{element}_{edge}", [])] - _tabulated_edge(element, edge) - CHEMICAL_SHIFT_MARGIN_EV
        if np.count_nonzero(e < 0) >= 2 and np.count_nonzero(e >= 0) >= 2:
            found.append(element)
    return found


def edge_window(energy_ev, element, elements, edge="K"):
    """Boolean (E,) selecting the energies of ``element``'s edge among the edges of ``elements``
    (:func:`ptyjax.data.group_by_edge`: within the XANES window, nearest edge wins)."""
    groups = data.group_by_edge(energy_ev, [f"{el}_{edge}" for el in elements])
    keep = np.zeros(len(energy_ev), dtype=bool)
    keep[groups.get(f"{element}_{edge}", [])] = True
    return keep


# ---------------------------------------------------------------------------------------------------
# Chemical parameters


def valence_from_edge_energy(element, edge_energy_ev, edge_energy_std=None, calibration=None):
    """Formal valence from the edge energy (eV): piecewise-linear interpolation of the calibration
    ``{valence: E0}`` (default :data:`ptyjax.physics.REFERENCE_EDGE_ENERGIES`), extrapolated linearly
    beyond its ends. Returns (valence, std) with ``std = |dv/dE| * edge_energy_std``."""
    table = (calibration or physics.REFERENCE_EDGE_ENERGIES).get(element)
    if not table or len(table) < 2:
        raise PtyjaxError(f"no valence calibration (>= 2 reference compounds) for {element}")
    valence = np.array(sorted(table), dtype=np.float64)
    energy = np.array([table[v] for v in sorted(table)], dtype=np.float64)
    if not np.all(np.diff(energy) > 0):
        raise PtyjaxError(f"valence calibration of {element}: edge energies must increase with valence")
    e0 = np.asarray(edge_energy_ev, dtype=np.float64)
    # Segment index (0 .. n-2), extending the end segments for extrapolation.
    seg = np.clip(np.searchsorted(energy, e0) - 1, 0, len(energy) - 2)
    slope = (valence[seg + 1] - valence[seg]) / (energy[seg + 1] - energy[seg])
    v = valence[seg] + slope * (e0 - energy[seg])
    std = None if edge_energy_std is None else np.abs(slope) * np.asarray(edge_energy_std)
    return v, std


def areal_density(element, edge_jump, edge_jump_std=None, edge="K"):
    """Atoms per m^2 of ``element`` from its OD edge jump: ``n = J / sigma_jump`` (physics
    :func:`~ptyjax.physics.edge_jump_cross_section`, m^2/atom). Returns (n, std)."""
    sigma = physics.edge_jump_cross_section(element, edge)
    # float64: areal densities are ~1e21 per m^2, whose squares overflow float32.
    std = None if edge_jump_std is None else np.asarray(edge_jump_std, np.float64) / sigma
    return np.asarray(edge_jump, np.float64) / sigma, std


def atomic_ratio(n_a, n_a_std, n_b, n_b_std):
    """``n_a / n_b`` with the error propagated from independent errors (relative errors in quadrature);
    independent of the thickness."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(n_a) / np.asarray(n_b)
        std = np.abs(ratio) * np.hypot(np.asarray(n_a_std) / n_a, np.asarray(n_b_std) / n_b)
    return ratio, std


def electron_density_areal(phase, energy_ev, phase_std=None):
    """Projected electron density ``n_e t = -phi / (r_e lambda)`` (electrons per m^2) from the phase
    (rad) at ``energy_ev`` (eV), since ``phi = -r_e lambda sum_a n_a (Z_a + f'_a) t``. An *effective*
    value: it counts ``Z + f'`` electrons, and f' of Mn/Ni (~-2 to -9 e near their K edges) lowers it,
    so use a pre-edge energy well below the edges. Returns (n_e t, std)."""
    factor = physics.R_ELECTRON_M * physics.wavelength(energy_ev)
    std = None if phase_std is None else np.abs(np.asarray(phase_std)) / factor
    return -np.asarray(phase) / factor, std


def ratio_names(elements):
    """``(name, a, b)`` of every atomic ratio: heavier over lighter element, e.g. ``ni_mn_ratio``."""
    import xraydb

    ordered = sorted(elements, key=xraydb.atomic_number, reverse=True)
    return [(f"{a.lower()}_{b.lower()}_ratio", a, b) for a, b in itertools.combinations(ordered, 2)]


# ---------------------------------------------------------------------------------------------------
# Whole stacks and results files

_UNITS = {"edge_energy": "eV", "edge_jump": "1", "white_line": "1", "chi2": "1", "valence": "1",
          "areal_density": "1/m^2"}


def _parse_elements(edges):
    if isinstance(edges, str):
        edges = [e.strip() for e in edges.split(",") if e.strip()]
    return [e[:1].upper() + e[1:].lower() for e in edges]


def smooth_within(stack, regions, sigma_px):
    """Gaussian smoothing (sigma ``sigma_px`` pixels) of the (E, Ny, Nx) ``stack`` inside each of the
    disjoint boolean ``regions`` separately (normalised convolution, Knutsson & Westin, CVPR 1993):
    a pixel averages only pixels of its own region, so the particle's edge is not diluted by vacuum
    and the background's noise estimate is not raised by the particle. Pixels outside every region
    are left as they are. ``sigma_px = 0`` returns the stack unchanged."""
    if not sigma_px:
        return stack
    out = np.array(stack, dtype=np.float32, copy=True)
    sigma = (0, sigma_px, sigma_px)
    for region in regions:
        weight = ndimage.gaussian_filter(region.astype(np.float64), sigma_px)
        inside = region & (weight > 0)
        total = ndimage.gaussian_filter(np.where(region, stack, 0.0).astype(np.float64), sigma)
        out[:, inside] = total[:, inside] / weight[inside]
    return out


DENOISE_METHODS = ("none", "mnf")


EDGE_SPECTRA = ("od", "od+phase")


def check_analysis_options(e0_method, denoise, smooth_px=0.0, edge_spectra="od"):
    """Raise :class:`PtyjaxError` unless ``e0_method``, ``denoise``, ``smooth_px`` (pixels >= 0, or
    "auto" where :func:`analyze` chooses it) and ``edge_spectra`` can run together."""
    if edge_spectra not in EDGE_SPECTRA:
        raise PtyjaxError(f"edge_spectra must be one of {', '.join(EDGE_SPECTRA)}, not {edge_spectra!r}")
    if not (smooth_px == "auto" or (isinstance(smooth_px, (int, float)) and not isinstance(smooth_px, bool) and smooth_px >= 0)):
        raise PtyjaxError(f"smooth_px must be a number >= 0 or 'auto', not {smooth_px!r}")
    if e0_method not in E0_METHODS:
        raise PtyjaxError(f"e0_method must be one of {', '.join(E0_METHODS)}, not {e0_method!r}")
    if denoise not in DENOISE_METHODS:
        raise PtyjaxError(f"denoise must be one of {', '.join(DENOISE_METHODS)}, not {denoise!r}")
    if denoise == "mnf" and e0_method != "fit":
        # Only the fit gives the denoised spectra the raw spectra's uncertainties.
        raise PtyjaxError(f"denoise 'mnf' works with e0_method 'fit' only, not {e0_method!r}: "
                          "set denoise to 'none' (CLI: --denoise none)")


def edge_shift_directions(spectra, energies_ev, elements):
    """(E, n_elements): the energy derivative of the mean of ``spectra`` (E, P), one column per
    element, zero outside that element's edge window: how a spectrum changes, to first order, when
    the element's edge moves. MNF keeps these directions (:func:`ptyjax.spectra.mnf_denoise`
    ``keep``), so a weak edge shift (a valence change in a minority of pixels, below the noise edge)
    is never projected away. Without them, the rim of the small preset reconstructed energy by energy
    lost its Mn edge shift (ARI 0.62 -> 0.39, 2 groups instead of 3)."""
    slope = np.gradient(np.asarray(spectra, np.float64).mean(axis=1), energies_ev)
    return np.stack([np.where(edge_window(energies_ev, el, elements), slope, 0.0) for el in elements], axis=1)


def analyze_stack(obj, energies_ev, pixel_size_m, edges=None, e0_method="fit", mask=None, smooth_px=0.0,
                  calibration=None, background_margin_px=3, field_of_view=None, denoise="none", edge_spectra="od"):
    """Spectra and chemical maps of a complex object stack ``obj`` (E, Ny, Nx) at ``energies_ev`` (E,) eV
    with pixels of ``pixel_size_m`` m.

    ``edges``: elements whose K edges to fit ("Mn,Ni" or a list; default: detected from the energies);
    ``mask``: (Ny, Nx) bool particle mask (default: :func:`ptyjax.spectra.particle_mask`); the
    background is its complement eroded by ``background_margin_px``; ``smooth_px``: Gaussian sigma
    (pixels) of an optional spatial smoothing of the OD maps (and of the phase map that gives the
    electron density) before fitting, within the particle and within the background separately
    (:func:`smooth_within`); ``denoise``: "mnf" first projects the particle's OD and phase spectra
    onto their components that stand out of the background's noise, plus each edge's shift
    direction (:func:`edge_shift_directions`, :func:`ptyjax.spectra.mnf_denoise`; fit weights and
    uncertainties stay those of the raw spectra, an upper bound; fit mode only, other
    ``e0_method`` values raise), "none" fits the spectra as they are; ``calibration``:
    ``{element: {valence: E0}}`` (default ``physics.REFERENCE_EDGE_ENERGIES``); ``edge_spectra``: "od"
    fits each edge to the OD spectra, "od+phase" (fit mode) to the OD and phase spectra jointly
    (:func:`fit_edge` ``phase``; the phase is smoothed and denoised as the OD); ``field_of_view``:
    (Ny, Nx) bool, the pixels measured at every energy (default all): background and particle are
    taken inside it only, so unmeasured filler pixels never bias the reference or the noise estimate.
    Returns ``{"spectra": {name: (array, units)}, "chemistry": {...}, "attrs": {...}}`` with the names of
    the results-file ``/spectra`` and ``/chemistry`` groups (maps NaN outside the mask).
    """
    from . import spectra as sp

    check_analysis_options(e0_method, denoise, edge_spectra=edge_spectra)
    joint = edge_spectra == "od+phase" and e0_method == "fit"
    obj = np.asarray(obj)
    energies_ev = np.asarray(energies_ev, dtype=np.float64)
    if obj.ndim != 3 or obj.shape[0] != energies_ev.shape[0]:
        raise PtyjaxError(f"object stack {obj.shape} does not match {energies_ev.shape[0]} energies")
    fov = np.ones(obj.shape[1:], bool) if field_of_view is None else np.asarray(field_of_view, bool)
    if mask is None:
        mask = sp.particle_mask(obj, field_of_view=fov)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != obj.shape[1:]:
        raise PtyjaxError(f"mask shape {mask.shape} differs from the object's {obj.shape[1:]}")
    if not mask.any():
        raise PtyjaxError("the particle mask is empty")
    background = sp.background_region(mask, background_margin_px, field_of_view=fov)
    if background.sum() < 10:
        raise PtyjaxError("fewer than 10 background pixels: the particle fills the field of view")
    od = sp.optical_density_stack(obj, background)
    phase = sp.phase_stack(obj, background)
    elements = _parse_elements(edges) if edges else detect_edges(energies_ev)
    if not elements:
        raise PtyjaxError(f"energies {energies_ev.min():.1f}-{energies_ev.max():.1f} eV span no K edge of "
                          f"{', '.join(_CANDIDATES)}; name the edges (e.g. --edges Mn,Ni)")
    calibration = calibration or physics.REFERENCE_EDGE_ENERGIES
    # Noise-free (simulated) data have an exactly flat background: unweighted fits, nothing to denoise.
    noisy = bool(np.all(od[:, background].std(axis=1) > 0))
    od_fit, phase_fit, extra_attrs = od, phase, {}
    if denoise == "mnf" and noisy:
        od_denoised = sp.mnf_denoise(od, mask, background, keep=edge_shift_directions(od[:, mask], energies_ev, elements))
        phase_denoised = sp.mnf_denoise(phase, mask, background,
                                         keep=edge_shift_directions(phase[:, mask], energies_ev, elements) if joint else None)
        od_fit, phase_fit = od_denoised.stack, phase_denoised.stack
        extra_attrs = {"denoise_rank_optical_density": od_denoised.rank, "denoise_rank_phase": phase_denoised.rank}
    # Denoising leaves the background as it is and smoothing keeps it apart from the particle, so the
    # background's scatter is the raw noise after the same smoothing (the fits' noise model).
    od_fit = smooth_within(od_fit, [mask, background], smooth_px)
    # Only the first energy's phase is needed without the joint fit (electron density).
    phase_fit = smooth_within(phase_fit if joint else phase_fit[:1], [mask, background], smooth_px)

    maps, shapes = {}, {}

    def put(name, values, units):
        full = np.full(mask.shape, np.nan, dtype=np.float32)
        full[mask] = values
        maps[name] = (full, units)

    density = {}
    for element in elements:
        window = edge_window(energies_ev, element, elements)
        if window.sum() < 3:
            raise PtyjaxError(f"only {window.sum()} energies near the {element} K edge; need at least 3")
        # Denoised spectra keep the uncertainties of the raw ones (not scaled by the tiny chi^2 of a
        # projected spectrum): the projection's own error, from estimating its components on noisy
        # data, is systematic and shared by all pixels, so no credit is taken for it.
        spectra = np.concatenate([od_fit[window], phase_fit[window]]) if joint else od_fit[window]
        result = fit_edge(energies_ev[window], od_fit[window][:, mask].T, element, e0_method=e0_method,
                          noise=sp.noise_covariance(spectra, background) if noisy else None,
                          chi2_scaled=not extra_attrs, phase=phase_fit[window][:, mask].T if joint else None)
        shapes[element] = result.shape
        for key in ("edge_energy", "edge_jump", "white_line"):
            put(f"{key}_{element}", getattr(result, key), _UNITS[key])
            put(f"{key}_{element}_std", getattr(result, key + "_std"), _UNITS[key])
        put(f"chi2_{element}", result.chi2, "1")
        if element in calibration:
            v, v_std = valence_from_edge_energy(element, result.edge_energy, result.edge_energy_std, calibration)
            put(f"valence_{element}", v, "1")
            put(f"valence_{element}_std", v_std, "1")
        n, n_std = areal_density(element, result.edge_jump, result.edge_jump_std)
        density[element] = (n, n_std)
        put(f"areal_density_{element}", n, "1/m^2")
        put(f"areal_density_{element}_std", n_std, "1/m^2")
    for name, a, b in ratio_names(elements):
        ratio, std = atomic_ratio(*density[a], *density[b])
        put(name, ratio, "1")
        put(name + "_std", std, "1")
    # Lowest energy: pre-edge of every fitted edge, where f' of the absorbers is smallest.
    ne, ne_std = electron_density_areal(phase_fit[0][mask], energies_ev[0], phase_fit[0][background].std())
    put("electron_density_areal", ne, "1/m^2")
    put("electron_density_areal_std", np.full(ne.shape, ne_std), "1/m^2")
    metal = sum(n for n, _ in density.values())
    metal_std = np.sqrt(sum(s**2 for _, s in density.values()))
    per_metal, per_metal_std = atomic_ratio(ne, ne_std, metal, metal_std)
    put("electrons_per_metal", per_metal, "1")
    put("electrons_per_metal_std", per_metal_std, "1")
    maps["mask"] = (mask, "")

    attrs = {"edges": ",".join(elements), "e0_method": e0_method, "smooth_px": float(smooth_px),
             "denoise": denoise, "edge_spectra": "od+phase" if joint else "od", **extra_attrs,
             "electron_density_energy_ev": float(energies_ev[0]), "pixel_size": float(pixel_size_m),
             "line_shapes": json.dumps(shapes), "calibration": json.dumps(
                 {el: {str(k): v for k, v in table.items()} for el, table in calibration.items()})}
    spectra_group = {"optical_density": (od, "1"), "phase": (phase, "rad"), "energy": (energies_ev, "eV")}
    return {"spectra": spectra_group, "chemistry": maps, "attrs": attrs}


def analyze(results_path, edges=None, e0_method="fit", mask=None, smooth_px=None, calibration=None, denoise=None,
            clustering=None, edge_spectra=None):
    """Run :func:`analyze_stack` on the object stack of the HDF5 file ``results_path`` (a ptyjax results
    file, or HDF5 with ``object``/``energy``/``pixel_size``) and write its ``/spectra`` and ``/chemistry``
    groups into it. ``mask``: None (automatic), a (Ny, Nx) bool array or a ``.npy`` file.
    ``smooth_px``, ``denoise`` and ``edge_spectra``: None takes the pipeline's defaults (``ptyjax config
    --defaults``: 1 px, "none", "od"), so this, ``ptyjax analyze`` and ``ptyjax run`` give the same maps. ``smooth_px="auto"``
    takes the candidate of :func:`ptyjax.pipeline.choose_smoothing` (clustered with ``clustering``
    options) and stores the candidates and their criterion as ``/chemistry`` attributes
    ``smooth_px_candidates`` and ``smooth_px_entropy``. Returns the dict of :func:`analyze_stack`, with
    ``"auto"`` also the chosen maps' :class:`~ptyjax.cluster.ClusterResult` under ``"clustering"``."""
    from . import results
    from . import spectra as sp
    from .errors import DataError
    from .pipeline import STAGE_DEFAULTS

    if smooth_px is None:
        smooth_px = STAGE_DEFAULTS["analyze"]["smooth_px"][0]
    if denoise is None:
        denoise = STAGE_DEFAULTS["analyze"]["denoise"][0]
    if edge_spectra is None:
        edge_spectra = STAGE_DEFAULTS["analyze"]["edge_spectra"][0]
    check_analysis_options(e0_method, denoise, smooth_px, edge_spectra)

    stack = sp.load_stack(results_path)
    if mask is not None and not isinstance(mask, np.ndarray):
        try:
            mask = np.load(mask, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(mask, f"cannot be read as a .npy mask ({error})") from None
    field_of_view = None
    try:
        scanned = results.read_group(results_path, "reconstruction").get("scanned")
        field_of_view = None if scanned is None else np.all(scanned, axis=0)
    except DataError:
        pass  # not a ptyjax results file: the whole stack is the field of view
    options = dict(edges=edges, e0_method=e0_method, mask=mask, calibration=calibration, denoise=denoise, edge_spectra=edge_spectra)
    choice = None
    if smooth_px == "auto":
        from .pipeline import choose_smoothing

        choice = choose_smoothing(stack.object, stack.energy, stack.pixel_size, field_of_view=field_of_view,
                                  analysis=options, clustering=clustering)
        smooth_px = choice.smooth_px
    out = choice.analysis if choice else analyze_stack(stack.object, stack.energy, stack.pixel_size, smooth_px=float(smooth_px),
                                                      field_of_view=field_of_view, **options)
    if choice is not None:
        out["attrs"].update(smooth_px_candidates=list(choice.entropy), smooth_px_entropy=list(choice.entropy.values()))
        # The chosen maps are already clustered with ``clustering``: the pipeline writes that result.
        out = {**out, "clustering": choice.groups[choice.smooth_px]}
    config = {"edges": out["attrs"]["edges"], "e0_method": e0_method, "smooth_px": "auto" if choice else float(smooth_px), "denoise": denoise,
              "edge_spectra": edge_spectra,
              "mask": "automatic" if mask is None else "given", "calibration": json.loads(out["attrs"]["calibration"])}
    results.write_group(results_path, "spectra", out["spectra"], config=config)
    results.write_group(results_path, "chemistry", out["chemistry"], attrs=out["attrs"], config=config)
    return out
