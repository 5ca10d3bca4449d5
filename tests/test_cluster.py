"""Clustering of chemical maps: a synthetic 3-phase particle with thickness-dependent noise."""

import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import expit
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from ptyjax import cluster as cl
from ptyjax.results import read_group, units_of, write_group

# Feature means of the three phases (physical units), loosely after LiNi0.5Mn1.5O4 (bulk, Mn4+),
# a Mn3+-rich, Ni-poor rim and Ni-rich patches; Mn K edges 3-4 eV per valence unit (DESIGN.md).
FEATURES = ("ni_mn_ratio", "edge_energy_Mn", "edge_energy_Ni", "electrons_per_metal")
UNITS = ("1", "eV", "eV", "1")
PHASE_MEANS = np.array(
    [
        [0.333, 6551.0, 8342.0, 3.33],  # 1: bulk (core)
        [0.230, 6547.5, 8341.0, 3.05],  # 2: rim
        [0.500, 6549.0, 8339.5, 3.45],  # 3: patches
    ]
)
INTRINSIC_STD = np.array([0.01, 0.25, 0.25, 0.02])  # chemical spread within a phase
NOISE_STD = np.array([0.02, 0.6, 1.5, 0.06])  # measurement noise at full thickness (Ni signal weak)
N_OUTLIERS = 8


def synthetic_phases(n=64, seed=1):
    """Truth labels (0 outside, 1 core, 2 irregular rim, 3 patches) and normalised thickness."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    r, theta = np.hypot(y, x), np.arctan2(y, x)
    radius = 0.42 * n * (1 + 0.08 * np.sin(3 * theta) + 0.05 * np.cos(5 * theta + 1))
    rho = r / radius
    mask = rho < 1
    thickness = np.sqrt(np.clip(1 - rho**2, 0, None))
    rim_inner = 0.78 + 0.06 * np.sin(4 * theta + 0.5)  # irregular rim thickness
    truth = np.where(mask, 1, 0)
    truth[mask & (rho > rim_inner)] = 2
    for cy, cx, rad in [(-8, 6, 4.0), (7, -9, 3.5), (9, 9, 3.0)]:
        truth[mask & (np.hypot(y - cy, x - cx) < rad)] = 3
    return truth, thickness


def synthetic_maps(n=64, seed=1):
    """Feature maps, std maps (NaN outside), mask and truth, with known noise and a few outliers."""
    rng = np.random.default_rng(seed)
    truth, thickness = synthetic_phases(n, seed)
    mask = truth > 0
    # Noise grows as the particle thins (std ~ 1 / thickness, capped where the edge fit still works).
    noise_scale = 1.0 / np.maximum(thickness, 0.15)
    maps, stds = {}, {}
    for f, name in enumerate(FEATURES):
        value = PHASE_MEANS[np.maximum(truth, 1) - 1, f] + INTRINSIC_STD[f] * rng.standard_normal(truth.shape)
        std = NOISE_STD[f] * noise_scale
        value = value + std * rng.standard_normal(truth.shape)
        maps[name] = np.where(mask, value, np.nan)
        stds[name] = np.where(mask, std, np.nan)
    # Outliers (e.g. failed edge fits) whose reported std does not flag them.
    idx = rng.choice(np.flatnonzero(mask), N_OUTLIERS, replace=False)
    for name, jump in zip(FEATURES, (1.5, 40.0, 60.0, 2.0)):
        flat = maps[name].reshape(-1)
        flat[idx] += jump * rng.choice([-1, 1], N_OUTLIERS)
    return maps, stds, mask, truth


def write_synthetic_results(path, n=64, n_energy=12, seed=1):
    """A results file with /chemistry, /spectra and /reconstruction built from the synthetic phases."""
    maps, stds, mask, truth = synthetic_maps(n, seed)
    chem = {"mask": (mask, "")}
    for name, units in zip(FEATURES, UNITS):
        chem[name] = (maps[name].astype(np.float32), units)
        chem[f"{name}_std"] = (stds[name].astype(np.float32), units)
    write_group(path, "chemistry", chem)
    energy = np.concatenate([np.linspace(6520, 6580, n_energy // 2), np.linspace(8310, 8370, n_energy - n_energy // 2)])
    _, thickness = synthetic_phases(n, seed)
    # Edge steps at each phase's edge energy, OD proportional to thickness.
    e_mn = np.nan_to_num(maps["edge_energy_Mn"], nan=6550.0)
    e_ni = np.nan_to_num(maps["edge_energy_Ni"], nan=8340.0)
    e = energy[:, None, None]
    od = thickness * (0.3 + 0.08 * expit((e - e_mn) / 2.0) + 0.02 * expit((e - e_ni) / 2.0))
    phase = -0.6 * thickness * np.ones_like(od)
    write_group(path, "spectra", {"optical_density": (od.astype(np.float32), "1"), "phase": (phase.astype(np.float32), "rad"), "energy": (energy, "eV")})
    obj = (np.exp(-od / 2) * np.exp(1j * phase)).astype(np.complex64)
    write_group(
        path,
        "reconstruction",
        {"object": (obj, "1"), "energy": (energy, "eV"), "pixel_size": (20e-9, "m"), "loss": (np.geomspace(1.0, 1e-3, 30), "1")},
    )
    write_group(path.with_name("truth.h5"), "truth", {"phase_label": (truth.astype(np.int32), "")})
    return path, truth


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_maps(48)


@pytest.fixture(scope="module")
def clustered(synthetic):
    maps, stds, mask, truth = synthetic
    return cl.cluster_features(maps, mask, stds, seed=0)


def test_icl_and_bic_pick_three_phases_and_labels_match_truth(clustered, synthetic):
    truth = synthetic[3]
    assert clustered.k_tried.tolist() == [1, 2, 3, 4, 5, 6]
    assert clustered.criterion == "icl" and clustered.n_groups == 3, clustered.icl
    assert clustered.k_tried[np.argmin(clustered.bic)] == 3, clustered.bic  # Gaussian groups: both agree
    ari = cl.adjusted_rand_index_inside(clustered.labels, truth)
    assert ari >= 0.9, ari  # floor 0.9 stated in the brief; measured 0.995
    assert np.all(clustered.labels[truth == 0] == cl.OUTSIDE)


def test_groups_in_physical_units_ordered_by_size(clustered, synthetic):
    truth = synthetic[3]
    sizes = np.bincount(truth.ravel())[1:]
    assert np.all(np.diff(clustered.counts) <= 0)
    # Largest group is the core (phase 1), then rim, then patches, as in the truth.
    assert np.argsort(-sizes).tolist() == [0, 1, 2]
    # Fitted means recover the phase means within 3 intrinsic stds plus 0.3 noise stds.
    assert np.all(np.abs(clustered.means - PHASE_MEANS) < 3 * INTRINSIC_STD + 0.3 * NOISE_STD)
    # The fitted (noise-deconvolved) spread is below the spread of the measured pixel values ...
    fitted_std = np.sqrt(np.diagonal(clustered.covariances, axis1=1, axis2=2))
    assert np.all(fitted_std < clustered.pixel_stds), (fitted_std, clustered.pixel_stds)
    # ... and is the intrinsic spread (within 30 %) for the core where noise <= 3x intrinsic spread.
    identifiable = NOISE_STD <= 3 * INTRINSIC_STD
    np.testing.assert_allclose(fitted_std[0, identifiable], INTRINSIC_STD[identifiable], rtol=0.3)
    assert clustered.probabilities.shape == (3,) + truth.shape
    np.testing.assert_allclose(np.nansum(clustered.probabilities, axis=0)[truth > 0], 1.0, atol=1e-5)


def test_same_seed_same_labels_and_bic(synthetic):
    maps, stds, mask, _ = synthetic
    first, again = (cl.cluster_features(maps, mask, stds, k_range=(2, 4), seed=3) for _ in range(2))
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_array_equal(again.bic, first.bic)


def test_plain_gmm_does_worse(clustered, synthetic, record_property):
    """A plain GMM (standardised features, no uncertainties, no spatial prior) on the same maps."""
    maps, _, mask, truth = synthetic
    x = np.stack([maps[n][mask] for n in FEATURES], axis=1)
    x = (x - x.mean(0)) / x.std(0)
    with threadpool_limits(limits=1):  # tiny matrices: BLAS threads only slow this down
        fits = [GaussianMixture(k, covariance_type="full", random_state=0, n_init=2).fit(x) for k in range(1, 7)]
    best = min(fits, key=lambda g: g.bic(x))
    labels = np.full(mask.shape, -1)
    labels[mask] = best.predict(x)
    plain_ari = adjusted_rand_score(truth[mask], labels[mask])
    ours = cl.adjusted_rand_index_inside(clustered.labels, truth)
    record_property("plain_gmm", f"K={best.n_components} ARI={plain_ari:.3f}; ours K={clustered.n_groups} ARI={ours:.3f}")
    print(f"plain GMM: K={best.n_components} ARI={plain_ari:.3f}; ptyjax: K={clustered.n_groups} ARI={ours:.3f}")
    assert ours > plain_ari


def test_outliers_unassigned_or_absorbed(synthetic):
    maps, stds, mask, truth = synthetic
    # Every injected outlier is to be tested, also those on the outline.
    res = cl.cluster_features(maps, mask, stds, n_groups=3, outliers="unassigned", outline_px=0)
    assert res.k_tried.tolist() == [3]
    # Every injected outlier (jumps of tens of noise stds) is flagged; few genuine pixels are.
    assert N_OUTLIERS <= res.outliers.sum() <= N_OUTLIERS + 0.01 * mask.sum()
    assert np.all(res.labels[res.outliers] == cl.UNASSIGNED)
    absorbed = cl.cluster_features(maps, mask, stds, n_groups=3)
    assert np.all(absorbed.labels[mask] >= 0)


def test_spatial_smoothing_helps(synthetic):
    maps, stds, mask, truth = synthetic
    off = cl.cluster_features(maps, mask, stds, n_groups=3, spatial_iterations=0)
    on = cl.cluster_features(maps, mask, stds, n_groups=3)
    assert cl.adjusted_rand_index_inside(on.labels, truth) > cl.adjusted_rand_index_inside(off.labels, truth)


def test_cluster_writes_documented_group(tmp_path):
    path, truth = write_synthetic_results(tmp_path / "results.h5", n=48)
    res = cl.cluster(path, seed=0, k_range=(2, 4))
    g = read_group(path, "clustering")
    for name in ("labels", "probabilities", "bic", "icl", "k_tried", "features", "means", "covariances", "counts", "group_optical_density", "group_phase"):
        assert name in g, name
    k = res.n_groups
    assert g["labels"].shape == truth.shape and g["probabilities"].shape == (k,) + truth.shape
    assert g["features"] == list(FEATURES) and g["feature_units"] == list(UNITS)
    assert g["means"].shape == (k, 4) and g["covariances"].shape == (k, 4, 4)
    assert g["group_optical_density"].shape == (k, 12) and g["group_phase"].shape == (k, 12)
    assert units_of(path, "clustering/group_phase") == "rad"
    assert units_of(path, "clustering/probabilities") == "1"
    assert g["counts"].sum() == (g["labels"] >= 0).sum()
    assert g["attrs"]["criterion"] == "icl" and g["attrs"]["spatial_strength"] > 0
    assert json.loads(g["attrs"]["merged_boundaries"]) == [{**m, "between": list(m["between"])} for m in res.merged_boundaries]
    # The Mn edge energy column of the means is in eV (near the Mn K edge, 6539 eV).
    assert np.all(np.abs(g["means"][:, 1] - 6549) < 5)


def test_unknown_feature_is_a_data_error(tmp_path):
    from ptyjax.errors import DataError

    path, _ = write_synthetic_results(tmp_path / "results.h5", n=24, n_energy=4)
    with pytest.raises(DataError, match="valence_Fe"):
        cl.cluster(path, features=["valence_Fe"])


def test_missing_feature_is_marginalised_exactly():
    """The density of a pixel with a NaN feature is the Gaussian marginal of its measured features."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 3))
    covs = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(3)
    means = rng.standard_normal((2, 3))
    x = np.array([[0.3, np.nan, -1.0], [0.5, 0.2, 0.1]])
    noise_var = np.array([[0.2, 0.4, 0.3], [0.1, 0.1, np.nan]])  # NaN noise: also not measured
    loglik, _ = cl.component_log_likelihood(x, noise_var, means, covs)
    for i, seen in enumerate([[0, 2], [0, 1]]):
        for k in range(2):
            cov = covs[k][np.ix_(seen, seen)] + np.diag(noise_var[i, seen])
            expected = multivariate_normal(means[k, seen], cov).logpdf(x[i, seen])
            np.testing.assert_allclose(loglik[i, k], expected, rtol=1e-9)


def test_pixels_with_missing_features_still_count(synthetic):
    """Thin pixels lose three of four features (as a weak edge's fit fails there): marginalising
    keeps their group from the one left; dropping them (as before) loses the thin rim."""
    maps, stds, mask, truth = synthetic
    _, thickness = synthetic_phases(truth.shape[0])
    thin = mask & (thickness < 0.6)  # ~470 of 1293 pixels, ~90 % of the rim
    lost = ("ni_mn_ratio", "edge_energy_Ni", "electrons_per_metal")
    partial = {n: np.where(thin, np.nan, m) if n in lost else m for n, m in maps.items()}
    dropped = {n: np.where(thin, np.nan, m) for n, m in maps.items()}
    marginalised = cl.cluster_features(partial, mask, stds, n_groups=3)
    without = cl.cluster_features(dropped, mask, stds, n_groups=3)
    ari = cl.adjusted_rand_index_inside(marginalised.labels, truth)
    ari_dropped = cl.adjusted_rand_index_inside(without.labels, truth)
    assert ari >= 0.85 and ari > ari_dropped + 0.3, (ari, ari_dropped)  # measured 0.91 vs 0.29
    # Measured thin pixels are not unmeasured: the only data terms dropped are the injected outliers'.
    assert marginalised.outliers.sum() <= N_OUTLIERS + 0.01 * mask.sum(), marginalised.outliers.sum()
    assert np.isfinite(marginalised.pixel_means).all()


def test_icl_counts_clusters_where_bic_oversplits():
    """A uniform slab (not Gaussian) and a Gaussian blob: BIC fits the slab with several components,
    ICL (Biernacki et al. 2000) charges for their overlap and finds the two clusters."""
    rng = np.random.default_rng(0)
    n = 40
    truth = np.ones((n, n), int)
    truth[:, n // 2 :] = 2
    slab = np.stack([rng.uniform(0, 6, (n, n)), rng.uniform(0, 1, (n, n))])
    blob = rng.normal(3.0, 0.3, (2, n, n))
    values = np.where(truth == 1, slab, blob)
    maps = {"a": values[0], "b": values[1]}
    stds = {name: np.full((n, n), 0.05) for name in maps}
    res = cl.cluster_features(maps, np.ones((n, n), bool), stds, k_range=(1, 5), n_init=2, spatial_iterations=0)
    assert res.k_tried[np.argmin(res.bic)] > 2, res.bic  # measured 4
    assert res.n_groups == 2, res.icl
    assert cl.adjusted_rand_index_inside(res.labels, truth) > 0.99


def test_spatial_strength_estimated_from_the_label_field(synthetic):
    """Pseudo-likelihood strength: clearly positive for coherent phases with 10 % random labels,
    ~0 once the same labels are shuffled over the pixels (no spatial correlation)."""
    mask, truth = synthetic[2], synthetic[3]
    rng = np.random.default_rng(0)
    labels = truth.copy()
    flip = mask & (rng.random(mask.shape) < 0.1)
    labels[flip] = rng.integers(1, 4, flip.sum())
    shuffled = labels.copy()
    shuffled[mask] = rng.permutation(labels[mask])
    log_w = np.log(np.bincount(labels[mask])[1:] / mask.sum())
    one_hot = lambda lab: np.stack([lab == k for k in (1, 2, 3)]).astype(float)  # noqa: E731
    coherent = cl.spatial_strength_pseudo_likelihood(one_hot(labels), log_w, mask)
    random = cl.spatial_strength_pseudo_likelihood(one_hot(shuffled), log_w, mask)
    assert coherent > 0.3 and random < 0.05, (coherent, random)  # measured 0.52 and 0.002


def test_outline_pixels_without_data_take_their_neighbours_group(synthetic):
    # The particle's outermost pixels read one feature far off (as partial-volume pixels at a strong
    # phase edge do for electrons per metal), with stds that do not flag it: a group of their own ...
    maps, stds, mask, truth = synthetic
    outline = mask & ~ndimage.binary_erosion(mask)
    # Shifted by 2 (about 6 of the outline's reported stds, 0.34; measured: a fourth group of 112
    # pixels, ARI 0.885, against 3 groups and ARI 0.995 with outline_px = 1).
    shifted = dict(maps, electrons_per_metal=np.where(outline, maps["electrons_per_metal"] - 2.0, maps["electrons_per_metal"]))
    plain = cl.cluster_features(shifted, mask, stds, seed=0, outline_px=0)
    assert plain.n_groups == 4, plain.counts
    # ... unless they carry no data term (outline_px): then the three phases are found and the outline pixels get
    # the phases of their neighbours (rim or patch), as the interior's labels are.
    fixed = cl.cluster_features(shifted, mask, stds, seed=0, outline_px=1)
    assert fixed.n_groups == 3
    assert cl.adjusted_rand_index_inside(fixed.labels, truth) > 0.95
    assert np.all(fixed.labels[outline] >= 0)
    with pytest.raises(cl.PtyjaxError, match="outline_px"):
        cl.cluster_features(maps, mask, stds, outline_px=-1)


def test_invalid_options_are_errors(synthetic):
    maps, stds, mask, _ = synthetic
    with pytest.raises(cl.PtyjaxError, match="criterion"):
        cl.cluster_features(maps, mask, stds, criterion="aic")
    with pytest.raises(cl.PtyjaxError, match="spatial_strength"):
        cl.cluster_features(maps, mask, stds, spatial_strength="high")
    with pytest.raises(cl.PtyjaxError, match="boundary_groups must be 'merge' or 'keep'"):
        cl.cluster_features(maps, mask, stds, boundary_groups="drop")


def test_run_configuration_rejects_clustering_options_that_cannot_run(tmp_path, config_rejects):
    """``ptyjax run --config``: a bad [cluster] option fails when the file is read (not after the
    reconstruction), naming the file."""
    from ptyjax.pipeline import load_config

    good = tmp_path / "good.toml"
    good.write_text('[cluster]\nboundary_groups = "keep"\nspatial_strength = 2.5\nmax_groups = 4\n')
    assert load_config(good)["cluster"]["boundary_groups"] == "keep"
    config_rejects("cluster", [('boundary_groups = "kep"', "boundary_groups must be 'merge' or 'keep'"),
                               ('criterion = "aic"', "criterion must be 'icl' or 'bic'"),
                               ('spatial_strength = "high"', "spatial_strength must be 'auto' or a number"),
                               ("spatial_strength = -1", "spatial_strength must be 'auto' or a number"),
                               ("max_groups = 0", "max_groups must be an integer >= 1"),
                               ("n_groups = 2.5", "n_groups must be an integer >= 0"),
                               ("outline_px = -1", "outline_px must be an integer >= 0")])


def test_pixels_without_a_detected_edge_carry_no_chemistry():
    from ptyjax.cluster import absorber_detected

    rng = np.random.default_rng(3)
    std = np.full((20, 20), 0.01)
    jump_mn = np.where(np.arange(20)[None, :] < 10, 0.2, 0.0) + rng.normal(0, 0.01, (20, 20))  # left half: Mn
    jump_ni = np.zeros((20, 20)) + rng.normal(0, 0.01, (20, 20))
    jump_ni[15:, 15:] += 0.1  # a Ni-only corner
    chem = {"mask": np.ones((20, 20), bool), "edge_jump_Mn": jump_mn, "edge_jump_Mn_std": std,
            "edge_jump_Ni": jump_ni, "edge_jump_Ni_std": std}
    detected = absorber_detected(chem)
    assert detected[:, :10].all() and detected[15:, 15:].all()
    # Elsewhere only noise: 3-sigma detection lets through ~0.3 % of pixels (here at most a few).
    assert detected[:15, 10:].sum() <= 3


def test_classification_entropy_known_cases():
    """0 nats for certain assignments, log K for uniform posteriors, only over the given pixels."""
    certain = np.zeros((3, 2, 2))
    certain[1] = 1.0
    uniform = np.full((3, 2, 2), 1 / 3)
    mixed = np.concatenate([certain[:, :1], uniform[:, 1:]], axis=1)
    assert cl.classification_entropy(certain, np.ones((2, 2), bool)) == pytest.approx(0.0, abs=1e-12)
    assert cl.classification_entropy(uniform, np.ones((2, 2), bool)) == pytest.approx(np.log(3))
    top = np.array([[True, True], [False, False]])
    assert cl.classification_entropy(mixed, top) == pytest.approx(0.0, abs=1e-12)
    assert cl.classification_entropy(mixed, np.ones((2, 2), bool)) == pytest.approx(np.log(3) / 2)


def _two_phases_and_a_layer(layer_px, seed=0):
    """Feature maps of a disc: phase A (left), phase B (right), a band of ``layer_px`` columns
    between them whose pixels read a mixture (0.7 A + 0.3 B on A's side of the middle, 0.3 A + 0.7 B
    on B's side), and a blob of a third phase C far from the band in feature space. Returns
    (maps, stds, mask, truth) with truth 0 = A, 1 = B, 2 = C, 3 = band."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64]
    mask = (y - 31.5) ** 2 + (x - 31.5) ** 2 < 30**2
    truth = np.where(x < 32, 0, 1)
    band = np.abs(x + 0.5 - 32) < layer_px / 2
    truth = np.where(band, 3, truth)
    truth = np.where((y - 12) ** 2 + (x - 16) ** 2 < 36, 2, truth)
    centres = {0: np.array([0.0, 0.0]), 1: np.array([4.0, 2.0]), 2: np.array([0.0, 6.0])}
    values = np.zeros((64, 64, 2))
    for k, c in centres.items():
        values[truth == k] = c
    weight = np.where(x < 32, 0.7, 0.3)[band]
    values[band] = weight[:, None] * centres[0] + (1 - weight[:, None]) * centres[1]
    values += 0.15 * rng.standard_normal(values.shape)
    maps = {"f0": values[..., 0], "f1": values[..., 1]}
    stds = {"f0": np.full((64, 64), 0.15), "f1": np.full((64, 64), 0.15)}
    return maps, stds, mask, truth


def test_boundary_ring_of_mixed_pixels_is_merged_into_its_two_sides():
    """A 2-px ring of mixed pixels between two phases forms a group of its own; merged, each of its
    pixels joins the phase that dominates it, and the third phase is untouched."""
    maps, stds, mask, truth = _two_phases_and_a_layer(layer_px=2)
    kept = cl.cluster_features(maps, mask, stds, n_groups=4, boundary_groups="keep")
    assert kept.n_groups == 4 and kept.merged_boundaries == ()
    assert adjusted_rand_score(truth[mask], kept.labels[mask]) > 0.95  # the ring is a group of its own
    merged = cl.cluster_features(maps, mask, stds, n_groups=4)
    assert merged.n_groups == 3 and merged.probabilities.shape[0] == 3
    (boundary,) = merged.merged_boundaries
    ring = np.bincount(kept.labels[mask & (truth == 3)]).argmax()
    assert boundary["pixels"] == np.count_nonzero(kept.labels == ring) and boundary["share"] >= cl.BOUNDARY_SHARE
    dominant = np.where(truth == 3, np.where(np.mgrid[:64, :64][1] < 32, 0, 1), truth)
    assert adjusted_rand_score(dominant[mask], merged.labels[mask]) > 0.97
    assert set(boundary["between"]) == {int(np.bincount(merged.labels[mask & (dominant == p)]).argmax()) for p in (0, 1)}
    np.testing.assert_allclose(np.nansum(merged.probabilities, axis=0)[mask], 1.0, atol=1e-6)


def test_a_layer_thicker_than_the_blur_stays_a_group():
    """The same mixture as a 10-px layer: most of its pixels are far from one side, so it is a
    phase of its own, not a boundary, and is kept."""
    maps, stds, mask, truth = _two_phases_and_a_layer(layer_px=10)
    result = cl.cluster_features(maps, mask, stds, n_groups=4)
    assert result.n_groups == 4 and result.merged_boundaries == ()
    assert adjusted_rand_score(truth[mask], result.labels[mask]) > 0.95
