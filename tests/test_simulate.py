"""The LNMO simulator: files, counts, forward model, geometry, ground truth, reproducibility."""

from functools import partial

import h5py
import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from ptyjax import physics
from ptyjax.cli import main
from ptyjax.errors import PtyjaxError
from ptyjax.cxi import DATA_PATHS, DISTANCE_PATH, ENERGY_PATH, MASK_PATH, TRANSLATION_PATHS
from ptyjax.geometry import real_space_pixel_size
from ptyjax.propagation import farfield_intensity
from ptyjax.simulate import PRESETS, expected_frames, make_probe, config_from_dict, load_truth, make_phantom, nominal_positions, phantom_transmission, simulate

TINY = PRESETS["tiny"]


def _frames(path):
    with h5py.File(path, "r") as f:
        return f[DATA_PATHS[0]][()], f[MASK_PATH][()] != 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset written through the command line."""
    out = tmp_path_factory.mktemp("tiny")
    assert main(["simulate", "--preset", "tiny", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_noiseless(tmp_path_factory):
    out = tmp_path_factory.mktemp("noiseless")
    simulate(TINY.replace(poisson=False), out)
    return out


def test_tiny_writes_one_cxi_per_energy_and_truth(tiny, capsys):
    files = sorted(tiny.glob("*.cxi"))
    truth = load_truth(tiny / "truth.h5")
    assert len(files) == len(TINY.energies_ev) == truth["energy"].size == 12
    energies = []
    for path in files:
        with h5py.File(path, "r") as f:
            energies.append(f[ENERGY_PATH][()] / physics.JOULE_PER_EV)
            assert f[DATA_PATHS[0]].shape == (TINY.n_positions, 32, 32)
            # CXI carries the nominal positions, as the sample translation -position (x, y, z).
            np.testing.assert_allclose(f[TRANSLATION_PATHS[0]][:, :2], -truth["nominal_positions"][:, ::-1])
    np.testing.assert_allclose(energies, truth["energy"], atol=1e-6)  # file names sort by energy
    assert config_from_dict(truth["config"]) == TINY
    with h5py.File(tiny / "truth.h5", "r") as f:
        assert all("units" in f[name].attrs for name in f)
    n_y, n_x = truth["phase_label"].shape
    assert truth["object"].shape == truth["optical_density"].shape == (12, n_y, n_x)
    assert truth["probe"].shape == (12, 1, 32, 32) and truth["positions"].shape == (12, TINY.n_positions, 2)


def test_total_counts_match_fluence(tiny, tiny_noiseless):
    for name in ("scan_e006535.0eV.cxi", "scan_e008370.0eV.cxi"):
        counts, mask = _frames(tiny / name)
        expected, _ = _frames(tiny_noiseless / name)
        measured = counts[:, ~mask].sum(axis=1).astype(float)
        mean = expected[:, ~mask].sum(axis=1).astype(float)
        # Poisson: the frame total is within 5 sigma of its expectation ...
        assert np.all(np.abs(measured - mean) < 5 * np.sqrt(mean))
        # ... which is the fluence times the particle's transmission (OD < 0.3) and the unmasked fraction.
        assert np.all(mean <= TINY.fluence) and np.all(mean > 0.75 * TINY.fluence)
        assert np.median(measured) == pytest.approx(TINY.fluence, rel=0.1)
        assert np.all(counts[:, mask].max(axis=1) > 1e5) and np.any(counts[:, mask] == 0)  # hot and dead pixels


def test_noiseless_frame_is_farfield_of_probe_times_object(tiny_noiseless):
    truth = load_truth(tiny_noiseless / "truth.h5")
    phantom = make_phantom(TINY)
    n = TINY.frame_size
    for e_index, j in ((1, 7), (6, 20)):
        energy, dx = truth["energy"][e_index], truth["native_pixel_size"][e_index]
        pos = truth["positions"][e_index, j]
        coords = pos[:, None] + (np.arange(n) - n // 2)[None, :] * dx  # pixel N//2 on the position
        patch = phantom_transmission(phantom, energy, coords[0][:, None], coords[1][None, :])
        expected = np.asarray(farfield_intensity(truth["probe"][e_index] * patch))
        frames, mask = _frames(tiny_noiseless / f"scan_e{energy:08.1f}eV.cxi")
        np.testing.assert_allclose(frames[j][~mask], expected[~mask], rtol=1e-4, atol=1e-3 * expected.max())
        assert np.abs(patch - 1).max() > 0.01  # the frame sees the particle


def test_oversampled_frames_converge_to_the_band_limited_far_field():
    # Point sampling (s = 1) aliases the particle's sharp outline into the detector window; sampling
    # s times finer and cropping the far field to the window converges as s grows.
    phantom = make_phantom(TINY)
    energy, n = 6552.0, TINY.frame_size
    dx = float(real_space_pixel_size(energy, TINY.detector_distance_m, TINY.detector_pixel_m, n))
    probe = make_probe(TINY, energy, dx, np.random.default_rng(0))
    positions = nominal_positions(TINY)[::7]
    particle = partial(phantom_transmission, phantom, energy)
    frames = {s: expected_frames(particle, probe, positions, dx, s) for s in (1, 2, 4)}
    error = {s: np.abs(frames[s] - frames[4]).sum() / frames[4].sum() for s in (1, 2)}
    assert error[2] < 0.5 * error[1]
    assert error[1] > 1e-4  # the outline's aliasing is visible at all
    # Flux: a uniform object transmits every photon of the band-limited probe into the window.
    ones = expected_frames(lambda y, x: 1.0, probe, positions[:1], dx, 3)
    assert ones.sum() == pytest.approx(TINY.fluence, rel=1e-4)
    with pytest.raises(PtyjaxError, match="oversample"):
        expected_frames(particle, probe, positions, dx, 0)


def test_native_pixel_sizes_follow_geometry(tiny):
    truth = load_truth(tiny / "truth.h5")
    with h5py.File(tiny / "scan_e006535.0eV.cxi", "r") as f:
        distance = f[DISTANCE_PATH][()]
    expected = real_space_pixel_size(truth["energy"], distance, TINY.detector_pixel_m, TINY.frame_size)
    np.testing.assert_allclose(truth["native_pixel_size"], expected, rtol=1e-12)
    ratio = truth["native_pixel_size"][0] / truth["native_pixel_size"][-1]
    assert ratio == pytest.approx(8370.0 / 6520.0, rel=1e-9) and 1.2 < ratio < 1.35  # ~27 % between edges
    assert truth["pixel_size"] == pytest.approx(truth["native_pixel_size"].min())
    assert 40e-9 <= truth["native_pixel_size"].min() and truth["native_pixel_size"].max() <= 52e-9


def test_truth_mn_edge_jump_per_micrometre(tiny):
    truth = load_truth(tiny / "truth.h5")
    energy = list(truth["energy"])
    pre, post = energy.index(6535.0), energy.index(6575.0)
    spinel = (truth["phase_label"] == 1) & (truth["thickness"] > 0.3e-6)
    jump = (truth["optical_density"][post] - truth["optical_density"][pre])[spinel] / (truth["thickness"][spinel] / 1e-6)
    # DESIGN.md: ~0.08 per um of LNMO at the Mn K edge (tabulated: 0.078).
    assert np.median(jump) == pytest.approx(0.08, rel=0.1)
    # The complex object carries the same OD.
    od_from_object = physics.optical_density(truth["object"][post])
    np.testing.assert_allclose(od_from_object, truth["optical_density"][post], atol=1e-5)


def test_three_phases_with_distinct_chemistry(tiny):
    truth = load_truth(tiny / "truth.h5")
    label = truth["phase_label"]
    assert truth["phase_names"] == ["outside", "spinel", "disordered", "rocksalt"]
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert np.all(np.isnan(truth["edge_energy_Mn"][label == 0])) and np.all(truth["thickness"][label == 0] == 0)
    mn_edge = [np.median(truth["edge_energy_Mn"][label == k]) for k in (1, 2, 3)]
    ratio = [np.median(truth["ni_mn_ratio"][label == k]) for k in (1, 2, 3)]
    assert mn_edge[0] == pytest.approx(6552.0, abs=0.15)  # Mn4+ (REFERENCE_EDGE_ENERGIES), +-0.1 eV field
    assert 0.5 <= mn_edge[0] - mn_edge[1] <= 1.0  # Mn3+-containing rim: 0.6-1 eV lower
    assert mn_edge[2] < mn_edge[1] - 2.0  # rock salt: Mn3+
    assert ratio[0] == pytest.approx(1 / 3, rel=0.06) and ratio[1] < ratio[0] and ratio[2] > 2.0
    assert np.median(truth["edge_energy_Ni"][label == 3]) > np.median(truth["edge_energy_Ni"][label == 1]) + 0.3
    # Smooth within-phase variation, bounded by its amplitude (away from the mixed boundary pixels).
    core = binary_erosion(label == 1, iterations=2)
    spread = np.nanmax(truth["edge_energy_Mn"][core]) - np.nanmin(truth["edge_energy_Mn"][core])
    assert 0.02 < spread <= 2 * TINY.edge_field_ev + 1e-9


def test_true_positions_are_nominal_plus_drift_plus_jitter(tiny):
    truth = load_truth(tiny / "truth.h5")
    nominal, drift, jitter = truth["nominal_positions"], truth["drift"], truth["jitter"]
    np.testing.assert_allclose(truth["positions"], nominal[None] + drift[:, None] + jitter, atol=1e-15)
    assert np.std(jitter) == pytest.approx(TINY.jitter_m, rel=0.15)  # 576 samples: ~3 % standard error
    assert 1e-9 < np.abs(drift).max() < 3 * TINY.drift_m
    assert np.abs(np.diff(drift, axis=0)).max() < np.abs(drift).max()  # smooth in energy
    assert not np.allclose(drift[0], drift[-1])


def test_seed_reproducibility(tmp_path):
    config = TINY.replace(energies_ev=(6535.0, 8370.0), n_positions=6)
    a, b, c = (simulate(config.replace(seed=s), tmp_path / name).parent for s, name in ((1, "a"), (1, "b"), (2, "c")))
    frames_a, frames_b, frames_c = (_frames(d / "scan_e006535.0eV.cxi")[0] for d in (a, b, c))
    np.testing.assert_array_equal(frames_a, frames_b)
    assert not np.array_equal(frames_a, frames_c)
    np.testing.assert_array_equal(load_truth(a / "truth.h5")["object"], load_truth(b / "truth.h5")["object"])


def test_probe_modes_and_raster_scan():
    from ptyjax.simulate import make_probe, random_streams

    config = TINY.replace(n_modes=3)
    probe = make_probe(config, 6550.0, 50e-9, random_streams(config)["probe"])
    power = np.sum(np.abs(probe) ** 2, axis=(1, 2))
    np.testing.assert_allclose(power / config.fluence, [0.85, 0.10, 0.05], rtol=1e-4)
    overlap = np.abs(np.vdot(probe[0], probe[1])) / np.sqrt(power[0] * power[1])
    assert overlap < 1e-4  # orthogonal modes
    raster = nominal_positions(TINY.replace(scan="raster"))
    assert raster.shape == (36, 2) and np.abs(raster).max() == pytest.approx(TINY.scan_radius_m)


def test_cli_reports_bad_options(tmp_path, capsys):
    assert main(["simulate", "--preset", "tiny", "-o", str(tmp_path), "--fluence", "-1"]) == 2
    assert "fluence" in capsys.readouterr().err
