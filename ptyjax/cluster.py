"""Gaussian-mixture clustering of per-pixel chemical parameters into groups (phases).

A plain Gaussian mixture on noisy chemical maps over-splits: pixels near the particle edge are
thin, so their edge energies and ratios are noisy, and the mixture spends extra components on
noise levels and outliers instead of chemistry. Five things fix that here:

1. **Per-pixel uncertainties** (``<name>_std`` maps): the mixture is fitted by *extreme
   deconvolution* (Bovy, Hogg & Roweis, Ann. Appl. Stat. 5, 1657 (2011)): pixel ``i`` is drawn from
   ``N(mu_k, C_k + S_i)`` with ``S_i = diag(std_i^2)``, so ``C_k`` is the *intrinsic* spread of a
   group and a noisy pixel counts for less. Starts come from scikit-learn ``GaussianMixture``.
2. **Missing features** (NaN, e.g. a weak edge whose fit failed on a thin pixel) are marginalised,
   as extreme deconvolution allows: the pixel still counts through the features it has. Only a
   pixel with no feature at all is *unmeasured*. (Dropping every incomplete pixel instead removed
   half of the thin surface phase of the small preset and lost its group.)
3. **Outliers**: the EM is trimmed (TCLUST, Garcia-Escudero et al., Ann. Stat. 36, 1324 (2008)):
   each step ignores the ``trim_fraction`` most atypical pixels (chi-square tail probability of the
   Mahalanobis distance to the nearest group, comparable between pixels with different numbers of
   measured features), so a few wild values cannot claim a component; the criteria are computed on
   the kept pixels. Pixels whose tail probability is below ``outlier_p``, and unmeasured pixels,
   lose their data term, so with spatial smoothing their neighbours decide their group
   (``outliers="absorb"``), otherwise they are labelled ``-2`` ("unassigned").
4. **Number of groups** by the integrated completed likelihood (ICL, Biernacki, Celeux & Govaert,
   IEEE TPAMI 22, 719 (2000)) rather than BIC: BIC selects the best *density* model and adds
   components to fit a non-Gaussian group; ICL also charges for ambiguous assignments, so it counts
   well-separated *clusters*, which is what a phase map is. BIC is still reported.
5. **Spatial correlation**: phases are spatially coherent, so the posteriors are smoothed with a
   mean-field Potts prior on the 8-neighbourhood inside the mask, whose strength is estimated from
   the data by the mean-field-like pseudo-likelihood of Celeux, Forbes & Peyrard (Pattern Recognit.
   36, 131 (2003)) unless given (``spatial_strength``, ``spatial_iterations`` sweeps).
6. **Boundary groups**: where two phases meet, pixels at the limit of the resolution (and of the
   spectra's smoothing) read a mixture of both (the partial-volume effect of imaging). Once the maps
   are sharp enough, ICL counts such a ring as a group of its own. A group whose mean lies between
   two others' and whose pixels nearly all touch both (:func:`find_boundary_groups`) is merged: each of
   its pixels joins the side whose mean it is nearer along the line between them
   (``boundary_groups="merge"``, the default; ``"keep"`` leaves it).

Features are standardised robustly (median and MAD) before fitting; every result is reported back
in physical units. Groups are ordered by size, largest first.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from scipy.stats import chi2
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from .errors import DataError, PtyjaxError
from .results import read_group, units_of, write_group

# Features that do not scale with the projected thickness, used when none are named.
THICKNESS_INDEPENDENT = ("ni_mn_ratio", "edge_energy_Mn", "edge_energy_Ni", "electrons_per_metal")
# MAD of a normal distribution times 1/Phi^-1(3/4) = 1.4826 gives its standard deviation.
MAD_TO_STD = 1.482602218505602
# Label values besides the group indices 0..K-1.
OUTSIDE, UNASSIGNED = -1, -2
# Covariance floor added to every group, in standardised units (std 0.01 of the robust spread),
# which keeps a group with no intrinsic spread invertible.
REG_COVAR = 1e-4
# EM iterations given to each start before the best one is run to convergence.
SCREEN_ITERATIONS = 20
# Iterations of the plain scikit-learn fit that seeds each start.
START_ITERATIONS = 20
# Noise variance (standardised units) standing for "not measured": the likelihood of the measured
# features is then exact to ~1/MISSING_VARIANCE relative, far below the float64 sums' round-off.
MISSING_VARIANCE = 1e12
# Upper end of the search for the Potts strength per neighbour: with 8 neighbours, 8 x 5 = 40 nats
# would outvote any data term; estimates there mean "a uniform field", not a phase map.
MAX_SPATIAL_STRENGTH = 5.0
# An edge counts as detected in a pixel when its jump exceeds this many standard errors: the usual
# 3-sigma detection limit (false positives ~1e-3 per pixel for Gaussian noise).
DETECTION_SNR = 3.0
# Starts from the pixels whose noise variance is below this quantile (the thick, well-measured ones).
RELIABLE_QUANTILE = 0.75
# A group is the boundary of two others when at least this share of its pixels lies within
# BOUNDARY_REACH_PX (8-neighbour steps) of both: a band of mixed pixels up to ~2 px wide (every pixel
# of a straight 2-px band, a third of a 3-px one), the blur that a reconstruction resolving 1.4-2 px
# and a 1 px smoothing of the spectra leave at a sharp boundary. A phase of its own, even a layer
# between two others, has pixels farther inside it.
BOUNDARY_SHARE = 0.75
BOUNDARY_REACH_PX = 2


@dataclass(frozen=True)
class ClusterResult:
    """Groups of pixels and their chemistry, in physical units (the units of each feature).

    ``labels`` (Ny, Nx) int: group 0..K-1, -1 outside the mask, -2 unassigned outlier.
    ``probabilities`` (K, Ny, Nx): posterior of each group (after spatial smoothing), NaN outside.
    ``means`` (K, F) and ``covariances`` (K, F, F): the fitted groups (intrinsic spread, noise
    deconvolved). ``pixel_means``/``pixel_stds`` (K, F): mean and std of the measured values of the
    pixels labelled with each group. ``counts`` (K,): pixels per group. ``bic`` and ``icl`` per
    ``k_tried``; ``criterion`` the one that chose K; ``spatial_strength`` the Potts strength used.
    ``outliers`` (Ny, Nx) bool: pixels whose data term was dropped. ``merged_boundaries``: one
    dict per boundary group merged (:func:`find_boundary_groups`): the two groups it lay ``between``
    (final indices), its ``pixels``, the ``share`` of them touching both and its mean's position
    ``alpha`` along the line between them (1 at the first group's mean).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    features: tuple[str, ...]
    k_tried: np.ndarray
    bic: np.ndarray
    icl: np.ndarray
    criterion: str
    spatial_strength: float
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    counts: np.ndarray
    pixel_means: np.ndarray
    pixel_stds: np.ndarray
    outliers: np.ndarray
    merged_boundaries: tuple = ()

    @property
    def n_groups(self) -> int:
        return int(self.means.shape[0])


def robust_standardisation(values):
    """Centre (median) and scale (MAD as a std) of each column of ``values`` (N, F), NaN ignored."""
    center = np.nanmedian(values, axis=0)
    scale = MAD_TO_STD * np.nanmedian(np.abs(values - center), axis=0)
    # A constant feature has MAD 0: fall back to the std, then to 1, so division is defined.
    fallback = np.nanstd(values, axis=0)
    scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0))
    return center, scale


def adjusted_rand_index_inside(labels, truth_labels) -> float:
    """Adjusted Rand index of ``labels`` against ``truth_labels`` over the pixels where truth > 0.

    ``truth_labels`` uses 0 for outside the particle (the convention of simulated truth files);
    unassigned pixels (-2) of ``labels`` count as a group of their own.
    """
    labels, truth = np.asarray(labels), np.asarray(truth_labels)
    if labels.shape != truth.shape:
        raise PtyjaxError(f"label maps differ in shape: {labels.shape} vs truth {truth.shape}")
    inside = truth > 0
    return float(adjusted_rand_score(truth[inside], labels[inside]))


def observed_features(x, noise_var):
    """(N, F) bool: the features of each pixel that were measured (finite value and uncertainty)."""
    return np.isfinite(x) & np.isfinite(noise_var)


def component_log_likelihood(x, noise_var, means, covs, return_inverse=False):
    """``log N(x_i; mu_k, C_k + S_i)`` (N, K) and the squared Mahalanobis distances (N, K).

    ``x`` (N, F), ``noise_var`` (N, F) the diagonal of ``S_i``, ``means`` (K, F), ``covs`` (K, F, F).
    A feature that is NaN in ``x`` or ``noise_var`` is missing and is marginalised out: the density
    is that of the measured features only (extreme deconvolution with a projection per pixel, Bovy
    et al. 2011, section 2). It is computed exactly to O(1/:data:`MISSING_VARIANCE`) by giving the
    missing features that noise variance. With ``return_inverse`` also ``(C_k + S_i)^-1``
    (K, N, F, F), which the EM step reuses (its rows and columns of missing features are ~0).
    """
    observed = observed_features(x, noise_var)
    noise_var = np.where(observed, noise_var, MISSING_VARIANCE)
    total = covs[:, None] + _diag(noise_var)[None]  # (K, N, F, F)
    inverse, logdet = _spd_inverse_logdet(total)
    logdet = logdet - np.log(MISSING_VARIANCE) * (~observed).sum(axis=1)
    residual = _residual(x, observed, means)  # (K, N, F)
    maha = np.einsum("kni,knij,knj->kn", residual, inverse, residual, optimize=True)
    loglik = (-0.5 * (maha + logdet + observed.sum(axis=1) * np.log(2.0 * np.pi))).T
    return (loglik, maha.T, inverse) if return_inverse else (loglik, maha.T)


def tail_log_probability(maha, n_observed):
    """log P(chi^2_d >= min_k maha_ik), d the number of measured features of pixel ``i``: how
    atypical a pixel is for its nearest group, comparable between pixels with different numbers of
    measured features (their densities are not)."""
    return chi2.logsf(maha.min(axis=1), np.maximum(n_observed, 1))


def fit_deconvolved_mixture(x, noise_var, weights, means, covs, trim_fraction=0.01, max_iter=200, tol=1e-4):
    """Trimmed extreme-deconvolution EM from a start; returns (weights, means, covs, kept, loglik).

    Missing (NaN) features are marginalised (:func:`component_log_likelihood`); the E-step fills
    them with their conditional expectation given the measured ones (Bovy et al. 2011, eq. 14-15).
    Each step ignores the ``trim_fraction`` most atypical pixels (:func:`tail_log_probability`).
    ``loglik`` is the summed log-likelihood of the ``kept`` pixels (bool (N,)); iterations stop when
    it changes by less than ``tol`` per kept pixel.
    """
    n, f = x.shape
    n_keep = n - int(np.floor(trim_fraction * n))
    observed = observed_features(x, noise_var)
    n_observed = observed.sum(axis=1)
    previous = -np.inf
    for _ in range(max_iter):
        comp, maha, inverse = component_log_likelihood(x, noise_var, means, covs, return_inverse=True)
        joint = comp + np.log(weights)
        point = logsumexp(joint, axis=1)
        kept = np.zeros(n, bool)
        kept[np.argsort(-tail_log_probability(maha, n_observed), kind="stable")[:n_keep]] = True
        loglik = float(point[kept].sum())
        if abs(loglik - previous) < tol * n_keep:
            break
        previous = loglik
        resp = np.exp(joint - point[:, None]) * kept[:, None]  # (N, K)
        # Deconvolved expectation (b) and covariance (B) of each pixel's noise-free value per group.
        gain = covs[:, None] @ inverse  # C_k T_ik^-1, (K, N, F, F)
        b = means[:, None] + (gain @ _residual(x, observed, means)[..., None])[..., 0]
        big_b = covs[:, None] - gain @ covs[:, None]
        mass = resp.sum(axis=0) + 1e-12
        weights = mass / mass.sum()
        means = np.einsum("nk,kni->ki", resp, b, optimize=True) / mass[:, None]
        d = (b - means[:, None]) * np.sqrt(resp.T)[..., None]
        covs = (d.transpose(0, 2, 1) @ d + np.einsum("nk,knij->kij", resp, big_b, optimize=True)) / mass[:, None, None]
        covs = 0.5 * (covs + covs.transpose(0, 2, 1)) + REG_COVAR * np.eye(f)
    return weights, means, covs, kept, loglik


def bic(loglik, n_points, n_groups, n_features):
    """Bayesian information criterion of a full-covariance mixture (lower is better)."""
    n_params = n_groups * (n_features + n_features * (n_features + 1) // 2) + n_groups - 1
    return -2.0 * loglik + n_params * np.log(n_points)


def icl(bic_value, posteriors):
    """Integrated completed likelihood, BIC approximation (lower is better): ``BIC - 2 sum_i log
    t_i,MAP`` with ``t`` (N, K) the posteriors (Biernacki, Celeux & Govaert, IEEE TPAMI 22, 719
    (2000), eq. 13; mclust's ``icl``). The extra term is the cost of the pixels' assignments, so
    groups that overlap (ambiguous pixels) are penalised: ICL counts clusters, BIC density modes."""
    t = np.asarray(posteriors)
    return float(bic_value - 2.0 * np.sum(np.log(np.maximum(t.max(axis=1), 1e-300))))


def spatial_posteriors(log_data, log_weights, mask, strength=1.0, iterations=5, neighbours=None):
    """Posteriors (K, Ny, Nx) under a mean-field Potts prior on the 8-neighbourhood inside ``mask``.

    ``log_data`` (K, Ny, Nx) is the log-likelihood of each pixel under each group (0 where the data
    are dropped). Each sweep adds ``strength`` times the sum of the neighbours' posteriors to the
    log-posterior (mean-field approximation of a Potts model, Zhang, Pattern Recognit. 25, 1992).
    Only pixels of ``neighbours`` (default ``mask``) act on their neighbours: a pixel without data
    has no evidence of its own to pass on. ``iterations=0`` gives the independent-pixel posteriors.
    NaN outside the mask.
    """
    source = mask if neighbours is None else (np.asarray(neighbours, bool) & mask)
    log_prior = log_data + np.asarray(log_weights)[:, None, None]
    q = _softmax(log_prior)
    for _ in range(iterations):
        q = _softmax(log_prior + strength * _neighbour_sum(np.where(source, q, 0.0)))
    return np.where(mask, q, np.nan)


def spatial_strength_pseudo_likelihood(q, log_weights, mask, neighbours=None, max_strength=MAX_SPATIAL_STRENGTH):
    """Potts strength (per neighbour) maximising the mean-field-like pseudo-likelihood of the
    posteriors ``q`` (K, Ny, Nx): ``sum_i sum_k q_ik log p(z_i = k | neighbours' q, strength)`` over
    the pixels of ``neighbours`` (default ``mask``), with ``p`` the Potts conditional of
    :func:`spatial_posteriors` (Celeux, Forbes & Peyrard, Pattern Recognit. 36, 131 (2003), the
    M-step for the interaction parameter). Concave in the strength: a bounded 1-D search suffices.
    """
    source = mask if neighbours is None else (np.asarray(neighbours, bool) & mask)
    q = np.where(source, q, 0.0)
    field = _neighbour_sum(q)[:, source]  # (K, M)
    q, log_w = q[:, source], np.asarray(log_weights)[:, None]

    def negative(beta):
        return -float(np.sum(q * (beta * field + log_w - logsumexp(beta * field + log_w, axis=0))))

    return float(minimize_scalar(negative, bounds=(0.0, max_strength), method="bounded", options={"xatol": 1e-3}).x)


def fit_spatial(log_data, log_weights, mask, neighbours=None, iterations=5, max_rounds=20, tol=1e-2):
    """Mean-field Potts posteriors with the strength estimated from the data: alternate
    :func:`spatial_posteriors` and :func:`spatial_strength_pseudo_likelihood` (the mean-field EM of
    Celeux et al. 2003 with the groups fixed) until the strength changes by less than ``tol``.
    Returns (posteriors (K, Ny, Nx), strength)."""
    strength = 0.0
    q = spatial_posteriors(log_data, log_weights, mask, 0.0, 0, neighbours)
    for _ in range(max_rounds):
        updated = spatial_strength_pseudo_likelihood(q, log_weights, mask, neighbours)
        q = spatial_posteriors(log_data, log_weights, mask, updated, iterations, neighbours)
        converged = abs(updated - strength) < tol
        strength = updated
        if converged:
            break
    return q, strength


def position_between(points, first, second):
    """Where ``points`` (N, F) lie along the line from ``second`` (0) to ``first`` (1) (F,): the
    coefficient of their projection onto it, over each point's finite features (NaN if none)."""
    points = np.atleast_2d(points)
    direction = np.asarray(first, float) - np.asarray(second, float)
    measured = np.isfinite(points)
    offset = np.where(measured, points - second, 0.0)
    span = np.sum(np.where(measured, direction**2, 0.0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, np.sum(offset * direction, axis=1) / span, np.nan)


def find_boundary_groups(labels, means, share: float = BOUNDARY_SHARE, reach: int = BOUNDARY_REACH_PX) -> list[dict]:
    """The groups that are the mixed-pixel boundary between two others, most certain first: group
    ``k`` whose mean (``means`` (K, F), standardised units) lies strictly between those of ``first``
    and ``second`` (``0 < alpha < 1``, :func:`position_between`) and of whose pixels (in ``labels``
    (Ny, Nx)) at least ``share`` have a pixel of each within ``reach`` pixels (8-neighbour steps).
    One dict per such group (its best pair): ``group``, ``between`` (first, second), ``share``, ``alpha``."""
    n_groups = len(means)
    window = np.ones((2 * reach + 1, 2 * reach + 1), bool)
    near = [ndimage.binary_dilation(labels == g, window) for g in range(n_groups)]
    found = []
    for k in range(n_groups):
        pixels = labels == k
        pairs = []
        for i in range(n_groups):
            for j in range(i + 1, n_groups):
                alpha = float(position_between(means[k], means[i], means[j])[0])
                if k not in (i, j) and pixels.any() and 0.0 < alpha < 1.0:
                    pairs.append((float(np.mean((near[i] & near[j])[pixels])), i, j, alpha))
        if pairs and max(pairs)[0] >= share:
            best = max(pairs)
            found.append({"group": k, "between": (best[1], best[2]), "share": best[0], "alpha": best[3]})
    return sorted(found, key=lambda b: -b["share"])


def _merge_boundary(labels, probs, weights, means, covs, x, mask, boundary):
    """Fold boundary group ``boundary["group"]`` into the two it lies between: each of its pixels
    joins the side whose mean it is nearer along the line between them (``x`` (N, F): standardised
    features of the ``mask`` pixels, NaN where missing; a pixel without any goes with the group's
    mean), and its posterior passes to that side (other pixels' share of it to all groups in
    proportion). Returns the updated (labels, probs, weights, means, covs)."""
    k, (i, j) = boundary["group"], boundary["between"]
    flat = labels[mask]
    inside = flat == k
    alpha = position_between(x[inside], means[i], means[j])
    side = np.where(np.nan_to_num(alpha, nan=boundary["alpha"]) >= 0.5, i, j)
    flat[inside] = side
    moved = np.zeros(mask.shape, bool)
    moved[mask] = inside
    to_first = np.zeros(mask.shape, bool)
    to_first[mask] = np.where(inside, flat == i, False)
    probs = probs.copy()
    probs[i] = np.where(to_first, probs[i] + probs[k], probs[i])
    probs[j] = np.where(moved & ~to_first, probs[j] + probs[k], probs[j])
    share_first = float(np.mean(side == i)) if side.size else 0.5
    weights = weights.copy()
    weights[i] += share_first * weights[k]
    weights[j] += (1.0 - share_first) * weights[k]
    keep = np.arange(len(weights)) != k
    labels = labels.copy()
    labels[mask] = np.where(flat > k, flat - 1, flat)
    # Elsewhere the group's (small) posterior is shared by the rest in proportion.
    probs = probs[keep] / np.sum(probs[keep], axis=0, keepdims=True)
    return labels, probs, weights[keep], means[keep], covs[keep]


def check_options(criterion="icl", spatial_strength="auto", boundary_groups="merge", outliers="absorb", outline_px=0) -> None:
    """Raise :class:`PtyjaxError` for option values :func:`cluster_features` cannot use (also called when
    a pipeline configuration is read, so that a typo fails before the reconstruction, not after)."""
    choices = {"criterion": (criterion, ("icl", "bic")), "boundary_groups": (boundary_groups, ("merge", "keep")),
               "outliers": (outliers, ("absorb", "unassigned"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise PtyjaxError(f"{name} must be {' or '.join(repr(a) for a in allowed)}, not {value!r}")
    number = isinstance(spatial_strength, (int, float)) and not isinstance(spatial_strength, bool)
    if not (spatial_strength == "auto" or (number and spatial_strength >= 0)):
        raise PtyjaxError(f"spatial_strength must be 'auto' or a number >= 0, not {spatial_strength!r}")
    if not isinstance(outline_px, (int, np.integer)) or isinstance(outline_px, bool) or outline_px < 0:
        raise PtyjaxError(f"outline_px must be an integer >= 0, not {outline_px!r}")


def cluster_features(
    feature_maps: dict,
    mask,
    stds: dict | None = None,
    *,
    n_groups: int | None = None,
    k_range=(1, 6),
    seed: int = 0,
    n_init: int = 4,
    trim_fraction: float = 0.01,
    min_group_fraction: float = 0.02,
    outlier_p: float = 1e-6,
    outliers: str = "absorb",
    criterion: str = "icl",
    spatial_strength: float | str = "auto",
    spatial_iterations: int = 5,
    boundary_groups: str = "merge",
    outline_px: int = 0,
) -> ClusterResult:
    """Cluster pixels of ``mask`` (Ny, Nx) by the maps ``feature_maps`` {name: (Ny, Nx)}.

    ``stds`` {name: (Ny, Nx)} are the 1-sigma uncertainties, same units as the maps (missing:
    none). NaN features of a pixel are marginalised; a pixel with none is *unmeasured* (no data
    term, like an outlier). The number of groups is ``n_groups`` or the minimum of ``criterion``
    ("icl" or "bic", :func:`icl`, :func:`bic`) over ``k_range`` (inclusive).
    ``n_init`` starts per K (scikit-learn, seeded by ``seed``: same seed, same result).
    ``trim_fraction``: share of most atypical pixels ignored by each EM step. A K whose fit has a
    group of weight below ``min_group_fraction`` is not chosen (its criteria are still reported).
    ``outliers``: "absorb" (neighbours decide; unassigned if ``spatial_iterations`` is 0) or
    "unassigned" (label -2). ``spatial_strength``: Potts interaction per neighbour, a number or
    "auto" (estimated, :func:`fit_spatial`). ``spatial_iterations=0`` switches smoothing off.
    ``boundary_groups``: "merge" folds groups that are the mixed-pixel boundary of two others into
    them (module docstring, item 6; recorded in ``merged_boundaries``), "keep" leaves them. With
    ``n_groups`` fixed the mixture has that many components, and boundary groups among them are still
    merged unless "keep". ``outline_px``: pixels within this many pixels of the mask's edge get no data
    term, as unmeasured pixels (the particle's outline mixes material and vacuum within the resolution:
    partial volume), so with spatial smoothing their neighbours decide their group; they are left out
    of the groups' reported pixel means and spreads.
    """
    check_options(criterion=criterion, spatial_strength=spatial_strength, boundary_groups=boundary_groups, outliers=outliers,
                  outline_px=outline_px)
    names = tuple(feature_maps)
    if not names:
        raise PtyjaxError("no features to cluster")
    mask = np.asarray(mask, bool)
    # The image border is not the particle's edge (border_value=1): a mask cut by the field of view keeps its data there.
    outline = mask & ~ndimage.binary_erosion(mask, iterations=int(outline_px), border_value=1) if outline_px else np.zeros_like(mask)
    x_phys = np.stack([np.where(outline, np.nan, np.asarray(feature_maps[n], float))[mask] for n in names], axis=1)
    std_phys = np.stack(
        [np.asarray(stds[n], float)[mask] if stds and n in stds else np.zeros(mask.sum()) for n in names], axis=1
    )
    center, scale = robust_standardisation(x_phys)
    x = (x_phys - center) / scale
    noise_var = (std_phys / scale) ** 2
    observed = observed_features(x, noise_var)
    x, noise_var = np.where(observed, x, np.nan), np.where(observed, noise_var, np.nan)
    measured = observed.any(axis=1)
    complete = observed.all(axis=1)
    if complete.sum() < 2 * len(names) + 2:
        raise PtyjaxError(f"only {complete.sum()} pixels have finite {', '.join(names)}: too few to cluster")

    k_values = np.array([n_groups] if n_groups else list(range(k_range[0], k_range[1] + 1)))
    if k_values.min() < 1 or k_values.max() > complete.sum() // 2:
        raise PtyjaxError(f"cannot form {k_values.tolist()} groups from {complete.sum()} pixels")
    # The matrices are FxF (tiny): BLAS threads only add overhead (10x on a busy machine).
    with threadpool_limits(limits=1):
        fits = [_best_fit(x[measured], noise_var[measured], complete[measured], int(k), seed, n_init, trim_fraction) for k in k_values]
    bics = np.array([bic(fit[-1], fit[3].sum(), k, len(names)) for fit, k in zip(fits, k_values)])
    icls = np.array([icl(b, _posteriors(x[measured][fit[3]], noise_var[measured][fit[3]], *fit[:3])) for b, fit in zip(bics, fits)])
    # A group smaller than min_group_fraction models outliers or noise, not a phase: reject its K.
    too_small = np.array([fit[0].min() < min_group_fraction for fit in fits]) & (k_values > 1)
    if too_small.all():
        raise PtyjaxError(f"every fit with {k_values.tolist()} groups has a group under {min_group_fraction:.1%} of the pixels")
    score = icls if criterion == "icl" else bics
    weights, means, covs, _, _ = fits[int(np.argmin(np.where(too_small, np.inf, score)))]

    # Data term of every pixel; outliers, unmeasured and outline pixels carry none. Outline pixels are
    # not outliers: they always take their neighbours' group when the posteriors are smoothed.
    comp, maha = component_log_likelihood(x, noise_var, means, covs)
    edge = outline[mask]
    outlier = (~measured & ~edge) | (tail_log_probability(maha, observed.sum(axis=1)) < np.log(outlier_p))
    no_data = outlier | edge
    comp[no_data] = 0.0
    log_data = np.zeros((len(weights),) + mask.shape)
    log_data[:, mask] = comp.T
    informative = np.zeros(mask.shape, bool)
    informative[mask] = ~no_data
    if spatial_iterations == 0:
        strength = 0.0
        probs = spatial_posteriors(log_data, np.log(weights), mask, 0.0, 0)
    elif spatial_strength == "auto":
        probs, strength = fit_spatial(log_data, np.log(weights), mask, informative, spatial_iterations)
    else:
        strength = float(spatial_strength)
        probs = spatial_posteriors(log_data, np.log(weights), mask, strength, spatial_iterations, informative)
    labels = np.full(mask.shape, OUTSIDE, int)
    labels[mask] = np.argmax(probs[:, mask], axis=0)
    if spatial_iterations == 0:
        labels[mask] = np.where(no_data, UNASSIGNED, labels[mask])
    elif outliers == "unassigned":
        labels[mask] = np.where(outlier, UNASSIGNED, labels[mask])
    merged = []
    while boundary_groups == "merge" and len(weights) > 2:
        found = find_boundary_groups(labels, means)
        if not found:
            break
        boundary, k = found[0], found[0]["group"]
        pixels = int(np.count_nonzero(labels == k))
        labels, probs, weights, means, covs = _merge_boundary(labels, probs, weights, means, covs, x, mask, boundary)
        # Indices past the removed group shift down by one, in earlier records as in the labels.
        shift = lambda pair: tuple(int(g - (g > k)) for g in pair)  # noqa: E731
        merged = [{**m, "between": shift(m["between"])} for m in merged]
        merged.append({"between": shift(boundary["between"]), "pixels": pixels, "share": boundary["share"], "alpha": boundary["alpha"]})

    # Order groups by size (largest first; ties by model weight) and report in physical units.
    counts = np.array([(labels == k).sum() for k in range(len(weights))])
    order = np.lexsort((-weights, -counts))
    relabel = np.empty(len(order), int)
    relabel[order] = np.arange(len(order))
    labels = np.where(labels >= 0, relabel[np.maximum(labels, 0)], labels)
    probs, weights, means, covs, counts = probs[order], weights[order], means[order], covs[order], counts[order]
    pix = labels[mask]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature missing in every pixel of a group: NaN
        pixel_means = np.array([np.nanmean(x_phys[pix == k], axis=0) if counts[k] else np.full(len(names), np.nan) for k in range(len(order))])
        pixel_stds = np.array([np.nanstd(x_phys[pix == k], axis=0) if counts[k] else np.full(len(names), np.nan) for k in range(len(order))])
    outlier_map = np.zeros(mask.shape, bool)
    outlier_map[mask] = outlier
    return ClusterResult(
        labels=labels,
        probabilities=probs.astype(np.float32),
        features=names,
        k_tried=k_values,
        bic=bics,
        icl=icls,
        criterion=criterion,
        spatial_strength=strength,
        weights=weights,
        means=means * scale + center,
        covariances=covs * np.outer(scale, scale),
        counts=counts,
        pixel_means=pixel_means,
        pixel_stds=pixel_stds,
        outliers=outlier_map,
        merged_boundaries=tuple({**m, "between": tuple(int(relabel[g]) for g in m["between"])} for m in merged),
    )


def classification_entropy(probabilities, pixels) -> float:
    """Mean entropy (nats) of the group posteriors ``probabilities`` (K, Ny, Nx) over ``pixels``
    ((Ny, Nx) bool): 0 when every pixel is assigned with certainty, ``log K`` when not at all. It is
    the assignment-cost term of ICL per pixel (:func:`icl` uses its MAP form)."""
    p = np.clip(np.asarray(probabilities, np.float64)[:, np.asarray(pixels, bool)], 1e-300, 1.0)
    return float(np.mean(-np.sum(p * np.log(p), axis=0)))


def absorber_detected(chemistry: dict, min_edge_snr: float = DETECTION_SNR):
    """(Ny, Nx) bool: pixels where at least one absorption edge's jump exceeds ``min_edge_snr`` times
    its standard error (``edge_jump_<X>`` / ``edge_jump_<X>_std`` maps of ``/chemistry``)."""
    jumps = [n for n in chemistry if n.startswith("edge_jump_") and not n.endswith("_std") and f"{n}_std" in chemistry]
    shape = np.shape(chemistry["mask"])
    if not jumps:
        return np.ones(shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = [np.asarray(chemistry[n], float) / np.asarray(chemistry[f"{n}_std"], float) for n in jumps]
    return np.any([np.nan_to_num(s, nan=-np.inf) > min_edge_snr for s in snr], axis=0)


def cluster_chemistry(chemistry: dict, features, n_groups=None, k_range=(1, 6), seed=0, min_edge_snr=DETECTION_SNR,
                      **options) -> ClusterResult:
    """:func:`cluster_features` of the maps ``features`` of an in-memory ``/chemistry`` group (maps,
    their ``*_std`` and ``mask``). Pixels where no edge is detected (:func:`absorber_detected` with
    ``min_edge_snr``; 0 keeps all) get no data term and are labelled -2 (unassigned)."""
    # Features of pixels without a detected edge are missing (NaN), so the mixture ignores them.
    silent = ~absorber_detected(chemistry, min_edge_snr) if min_edge_snr > 0 else np.zeros(np.shape(chemistry["mask"]), bool)
    maps = {n: np.where(silent, np.nan, chemistry[n]) for n in features}
    stds = {n: chemistry[f"{n}_std"] for n in features if f"{n}_std" in chemistry}
    result = cluster_features(maps, chemistry["mask"], stds, n_groups=n_groups, k_range=k_range, seed=seed, **options)
    # The spatial prior has placed the silent pixels; the label map marks them "no edge detected"
    # instead, so that a fringe of empty pixels does not show as the largest group.
    labels = np.where(silent & (result.labels >= 0), UNASSIGNED, result.labels)
    counts = np.array([np.count_nonzero(labels == k) for k in range(result.n_groups)])
    return dataclasses.replace(result, labels=labels, counts=counts)


def default_features(chemistry: dict) -> list[str]:
    """The :data:`THICKNESS_INDEPENDENT` maps of ``chemistry`` measured on at least a quarter of the
    particle (a map that the edge fit left mostly NaN, e.g. a weak edge at low fluence, would
    otherwise exclude every pixel)."""
    inside = np.asarray(chemistry["mask"], bool)
    return [n for n in THICKNESS_INDEPENDENT if n in chemistry and np.isfinite(np.asarray(chemistry[n])[inside]).mean() >= 0.25]


def cluster(results_path, features=None, n_groups=None, k_range=(1, 6), seed=0, min_edge_snr=DETECTION_SNR, **options) -> ClusterResult:
    """Cluster the ``/chemistry`` maps of a results file and write ``/clustering``.

    ``features``: names of ``/chemistry`` maps (default: those of :data:`THICKNESS_INDEPENDENT`
    present). Pixels of the mask where no edge is detected (:func:`absorber_detected` with
    ``min_edge_snr``; 0 keeps all) hold no chemistry: they get no data term and are labelled -2
    ("unassigned": no edge detected). ``options`` go to :func:`cluster_features`.
    Group-mean spectra ``(K, E)`` are written when ``/spectra`` exists.
    """
    chemistry = read_group(results_path, "chemistry")
    if "mask" not in chemistry:
        raise DataError(results_path, "/chemistry has no 'mask' dataset")
    available = [n for n in chemistry if n not in ("attrs", "mask") and not n.endswith("_std")]
    if features is None:
        features = default_features(chemistry)
        if not features:
            raise DataError(results_path, f"/chemistry has none of the default features {', '.join(THICKNESS_INDEPENDENT)}; name some of: {', '.join(available)}")
    missing = [n for n in features if n not in chemistry]
    if missing:
        raise DataError(results_path, f"/chemistry has no {', '.join(missing)} (available: {', '.join(available)})")
    result = cluster_chemistry(chemistry, features, n_groups, k_range, seed, min_edge_snr, **options)
    write_clustering(results_path, result, n_groups, k_range, seed, min_edge_snr, **options)
    return result


def write_clustering(results_path, result: ClusterResult, n_groups=None, k_range=(1, 6), seed=0, min_edge_snr=DETECTION_SNR,
                     **options) -> None:
    """Write ``result`` (a :class:`ClusterResult` of the ``/chemistry`` maps of ``results_path``) as
    ``/clustering``, with the options that made it (those of :func:`cluster`) as its configuration.
    Group-mean spectra ``(K, E)`` are written when ``/spectra`` exists."""
    features = result.features
    units = [units_of(results_path, f"chemistry/{n}") for n in features]
    cov_units = [[_product_units(a, b) for b in units] for a in units]
    datasets = {
        "labels": (result.labels.astype(np.int32), ""),
        "probabilities": (result.probabilities, "1"),
        "outliers": (result.outliers, ""),
        "bic": (result.bic, "1"),
        "icl": (result.icl, "1"),
        "k_tried": (result.k_tried.astype(np.int32), ""),
        "features": (list(features), ""),
        "feature_units": (units, ""),
        "weights": (result.weights, "1"),
        "means": (result.means, "feature_units"),
        "covariances": (result.covariances, "feature_units[i]*feature_units[j]"),
        "covariance_units": (np.array(cov_units, dtype=object).ravel().tolist(), ""),
        "counts": (result.counts, "pixels"),
        "pixel_means": (result.pixel_means, "feature_units"),
        "pixel_stds": (result.pixel_stds, "feature_units"),
    }
    try:
        spectra = read_group(results_path, "spectra")
    except DataError:
        spectra = {}
    for name in ("optical_density", "phase"):
        if name in spectra:
            datasets[f"group_{name}"] = (group_mean_spectra(spectra[name], result.labels, result.n_groups), "1" if name == "optical_density" else "rad")
    if "energy" in spectra:
        datasets["energy"] = (np.asarray(spectra["energy"], float), "eV")
    config = {"features": list(features), "n_groups": n_groups, "k_range": list(k_range), "seed": seed, "min_edge_snr": min_edge_snr, **options}
    attrs = {"n_groups": result.n_groups, "criterion": result.criterion, "spatial_strength": result.spatial_strength,
             "merged_boundaries": json.dumps([{**m, "between": list(m["between"])} for m in result.merged_boundaries])}
    write_group(results_path, "clustering", datasets, attrs=attrs, config=config)


def group_mean_spectra(stack, labels, n_groups):
    """Mean over the pixels of each group of a (E, Ny, Nx) stack: (K, E), NaN for an empty group."""
    stack = np.asarray(stack, float)
    return np.array([np.nanmean(stack[:, labels == k], axis=1) if np.any(labels == k) else np.full(stack.shape[0], np.nan) for k in range(n_groups)])


def _posteriors(x, noise_var, weights, means, covs):
    """Independent-pixel posteriors (N, K) of a fitted mixture."""
    joint = component_log_likelihood(x, noise_var, means, covs)[0] + np.log(weights)
    return _softmax(joint.T).T


def _best_fit(x, noise_var, complete, k, seed, n_init, trim_fraction):
    """Deconvolved fit from the best of ``n_init`` scikit-learn starts.

    Starts are fitted on the ``complete`` pixels (every feature measured), alternately all but the
    most extreme of them and the reliable ones (noise below the :data:`RELIABLE_QUANTILE`), where
    groups separate better. Each start gets a short EM run (:data:`SCREEN_ITERATIONS`); only the
    best is run to convergence.
    """
    xc, noise = x[complete], noise_var[complete].sum(axis=1)
    # Starts ignore the trim_fraction most extreme pixels (robust radius), as the EM does.
    radius = np.sum(xc**2, axis=1)
    typical = radius <= np.quantile(radius, 1.0 - trim_fraction)
    reliable = typical & (noise <= np.quantile(noise, RELIABLE_QUANTILE))
    best = None
    for i in range(n_init):
        subset = xc[reliable] if i % 2 else xc[typical]
        # A short plain fit from k-means++ seeds is start enough: the deconvolved EM refines it.
        start = GaussianMixture(k, covariance_type="full", reg_covar=REG_COVAR, random_state=seed + i, init_params="k-means++", max_iter=START_ITERATIONS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start.fit(subset)
        fit = fit_deconvolved_mixture(x, noise_var, start.weights_, start.means_, start.covariances_, trim_fraction, max_iter=SCREEN_ITERATIONS)
        if best is None or fit[-1] > best[-1]:
            best = fit
    return fit_deconvolved_mixture(x, noise_var, best[0], best[1], best[2], trim_fraction)


def _spd_inverse_logdet(a):
    """Inverse and log-determinant of a stack (..., F, F) of small symmetric positive-definite matrices.

    Cholesky written out over the F (few) rows so that NumPy vectorises over the stack: ~10x faster
    than ``np.linalg.inv`` on millions of 4x4 matrices, which it calls one by one.
    """
    f = a.shape[-1]
    a = np.moveaxis(a, (-2, -1), (0, 1))  # (F, F, ...): each entry contiguous over the stack
    low = [[None] * f for _ in range(f)]
    for j in range(f):
        low[j][j] = np.sqrt(a[j, j] - sum(low[j][m] ** 2 for m in range(j)))
        for i in range(j + 1, f):
            low[i][j] = (a[i, j] - sum(low[i][m] * low[j][m] for m in range(j))) / low[j][j]
    # Inverse of the lower-triangular factor by forward substitution, then A^-1 = L^-T L^-1.
    inv_low = [[0.0] * f for _ in range(f)]
    for i in range(f):
        inv_low[i][i] = 1.0 / low[i][i]
        for j in range(i):
            inv_low[i][j] = -sum(low[i][m] * inv_low[m][j] for m in range(j, i)) / low[i][i]
    inverse = np.empty_like(a)
    for i in range(f):
        for j in range(i + 1):
            inverse[i, j] = inverse[j, i] = sum(inv_low[m][i] * inv_low[m][j] for m in range(i, f))
    logdet = 2.0 * sum(np.log(low[i][i]) for i in range(f))
    return np.moveaxis(inverse, (0, 1), (-2, -1)), logdet


def _residual(x, observed, means):
    """``x_i - mu_k`` (K, N, F), 0 for the missing features."""
    return np.where(observed[None], np.nan_to_num(x)[None] - means[:, None], 0.0)


def _diag(v):
    """(..., F) -> (..., F, F) diagonal matrices."""
    return v[..., :, None] * np.eye(v.shape[-1])


def _softmax(log_p):
    return np.exp(log_p - logsumexp(log_p, axis=0, keepdims=True))


def _neighbour_sum(q):
    """Sum over the 8 neighbours of each pixel of (K, Ny, Nx) ``q`` (zero beyond the edges)."""
    padded = np.pad(q, ((0, 0), (1, 1), (1, 1)))
    ny, nx = q.shape[1:]
    total = sum(padded[:, 1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return total - q


def _product_units(a, b):
    if a in ("1", ""):
        return b or "1"
    if b in ("1", ""):
        return a
    return f"{a}^2" if a == b else f"{a}*{b}"
