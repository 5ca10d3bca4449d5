"""Physics: wavelengths, refractive indices against xraydb, Kramers-Kronig, the near-edge model."""

import numpy as np
import pytest
import xraydb

from ptyjax import physics

LNMO = "LiNi0.5Mn1.5O4"
LNMO_DENSITY = 4.45  # g/cm^3
MICRON = 1e-6


def _od(beta, energy_ev, thickness_m=MICRON):
    return 2.0 * physics.wavenumber(energy_ev) * beta * thickness_m  # OD = mu t, mu = 2 k beta


def test_wavelength_at_mn_edge():
    # lambda = hc / E: 1.239841984e-6 eV m / 6539 eV = 0.189607 nm
    assert physics.wavelength(6539.0) == pytest.approx(1.896074e-10, rel=1e-6)
    assert physics.wavenumber(6539.0) == pytest.approx(2 * np.pi / 1.896074e-10, rel=1e-6)


@pytest.mark.parametrize("element, expected_jump", [("Mn", 0.08), ("Ni", 0.02)])
def test_lnmo_edge_jumps_and_delta_beta_match_xraydb(element, expected_jump):
    edge = xraydb.xray_edge(element, "K").energy
    energy = np.array([edge - 20.0, edge + 20.0])
    delta, beta = physics.delta_beta(LNMO, LNMO_DENSITY, energy)
    reference = np.array([xraydb.xray_delta_beta(LNMO, LNMO_DENSITY, e)[:2] for e in energy])
    np.testing.assert_allclose(delta, reference[:, 0], rtol=1e-3)
    np.testing.assert_allclose(beta, reference[:, 1], rtol=1e-3)  # xraydb's beta has the other sign convention
    jump = np.diff(_od(beta, energy))[0]
    reference_jump = np.diff(_od(reference[:, 1], energy))[0]
    assert jump == pytest.approx(reference_jump, rel=0.02)
    assert jump == pytest.approx(expected_jump, rel=0.15)  # DESIGN.md: ~0.08 (Mn), ~0.02 (Ni) per micrometre


@pytest.mark.parametrize("element", ["Mn", "Ni"])
def test_edge_jump_cross_section_matches_chantler_mu(element):
    edge = xraydb.xray_edge(element, "K").energy
    # mu_chantler (cm^2/g, photo-absorption) just below/above the edge, converted to m^2 per atom.
    mu = xraydb.mu_chantler(element, np.array([edge - 20.0, edge + 20.0]), photo=True)
    per_atom = mu * 1e-4 * xraydb.atomic_mass(element) / physics.AVOGADRO
    assert physics.edge_jump_cross_section(element) == pytest.approx(per_atom[1] - per_atom[0], rel=0.03)
    # OD jump = n_areal sigma_jump for LNMO, 1 um.
    n_areal = physics.atomic_densities(LNMO, LNMO_DENSITY)[element] * MICRON
    _, beta = physics.delta_beta(LNMO, LNMO_DENSITY, np.array([edge - 20.0, edge + 20.0]))
    od_jump = np.diff(_od(beta, np.array([edge - 20.0, edge + 20.0])))[0]
    assert n_areal * physics.edge_jump_cross_section(element) == pytest.approx(od_jump, rel=0.03)


def test_edge_energies_match_xraydb_edges():
    # The edge model at its free-atom position has its half jump at the tabulated edge.
    for element in ("Mn", "Ni"):
        edge = xraydb.xray_edge(element, "K").energy
        model = physics.EdgeModel(element, edge_energy_ev=edge)
        below_above = physics.edge_model_f1_f2(model, np.array([edge - 40.0, edge, edge + 40.0]))[1]
        half = 0.5 * (below_above[0] + below_above[2])
        assert below_above[1] == pytest.approx(half, rel=0.02)


def test_kramers_kronig_lorentzian_oscillator():
    # A bound electron's resonance (James; Als-Nielsen & McMorrow ch. 8) in the X-ray convention
    # f = f' + i f'' with f'' >= 0: f' = A (E^2 - Er^2) / D, f'' = A g E / D, D = (Er^2 - E^2)^2 + g^2 E^2:
    # an exact KK pair, f' negative below the resonance.
    energy = np.arange(6000.0, 7000.0, 0.1)
    resonance, damping, strength = 6500.0, 5.0, 1e4
    denominator = (resonance**2 - energy**2) ** 2 + (damping * energy) ** 2
    f1_true = strength * (energy**2 - resonance**2) / denominator
    f2_true = strength * damping * energy / denominator
    near = np.abs(energy - resonance) < 50.0  # away from the truncated ends of the grid
    f1 = physics.kramers_kronig_f1(energy, f2_true)
    f2 = physics.kramers_kronig_f2(energy, f1_true)
    assert np.max(np.abs(f1 - f1_true)[near]) < 1e-3 * np.max(np.abs(f1_true))
    # f1 decays as 1/E: the +-500 eV window truncates ~0.3 % of f2.
    assert np.max(np.abs(f2 - f2_true)[near]) < 1e-2 * np.max(f2_true)


def test_kramers_kronig_reproduces_chantler_f1_at_the_mn_edge():
    """f' from Chantler's f'' (3-12 keV) has the shape of Chantler's tabulated f' across the Mn K edge
    (after removing a line, the far-away contributions): sign and size. Measured ratio 0.9975."""
    import xraydb

    energy = np.arange(3000.0, 12000.0, 0.25)
    f1 = physics.kramers_kronig_f1(energy, xraydb.f2_chantler("Mn", energy))
    table = xraydb.f1_chantler("Mn", energy)
    near = (energy > 6450.0) & (energy < 6650.0)
    design = np.vstack([np.ones(near.sum()), energy[near]]).T
    local = [y[near] - design @ np.linalg.lstsq(design, y[near], rcond=None)[0] for y in (f1, table)]
    assert np.dot(local[0], local[1]) / np.dot(local[1], local[1]) == pytest.approx(1.0, abs=0.02)


def test_kramers_kronig_round_trip_on_smooth_peak():
    energy = np.arange(6000.0, 7000.0, 0.1)
    f2 = physics.gaussian_peak(energy, 6500.0, 6.0)
    back = physics.kramers_kronig_f2(energy, physics.kramers_kronig_f1(energy, f2))
    near = np.abs(energy - 6500.0) < 50.0
    assert np.max(np.abs(back - f2)[near]) < 1e-2  # peak height 1; truncation error ~0.3 %


def test_kramers_kronig_rejects_nonuniform_grid():
    with pytest.raises(ValueError):
        physics.kramers_kronig_f1(np.array([1.0, 2.0, 4.0, 5.0]), np.ones(4))


@pytest.mark.parametrize("element, e0", [("Mn", 6551.3), ("Ni", 8344.2)])
def test_edge_model_half_jump_at_edge_energy(element, e0):
    model = physics.EdgeModel(element, edge_energy_ev=e0)
    energy = np.arange(e0 - 80.0, e0 + 80.0, 0.01)
    _, f2 = physics.edge_model_f1_f2(model, energy)
    pre = (energy > e0 - 80.0) & (energy < e0 - 20.0)
    post = (energy > e0 + 20.0) & (energy < e0 + 80.0)
    pre_line = np.polyval(np.polyfit(energy[pre], f2[pre], 1), energy)
    post_line = np.polyval(np.polyfit(energy[post], f2[post], 1), energy)
    fraction = (f2 - pre_line) / (post_line - pre_line)
    window = np.abs(energy - e0) < 10.0
    half_jump = np.interp(0.5, fraction[window], energy[window])  # fraction rises monotonically here
    assert half_jump == pytest.approx(e0, abs=0.05)


def test_edge_model_shift_is_a_translation():
    model = physics.EdgeModel("Mn", edge_energy_ev=6552.0, white_line_height=1.0)
    energy = np.linspace(6530.0, 6580.0, 51)
    f1, f2 = physics.edge_model_f1_f2(model, energy)
    g1, g2 = physics.edge_model_f1_f2(model.shifted(0.7), energy + 0.7)
    np.testing.assert_allclose(g2, f2, rtol=1e-3)
    np.testing.assert_allclose(g1, f1, atol=0.02)


def test_phase_dip_at_edge_has_right_sign():
    # f' has its minimum near E0, so delta (~ Z + f') and |phase| = k delta t are smaller at the edge.
    e0 = 6552.0
    model = physics.EdgeModel("Mn", edge_energy_ev=e0)
    energy = np.array([e0 - 15.0, e0, e0 + 15.0])
    f1, _ = physics.edge_model_f1_f2(model, energy)
    assert np.argmin(f1) == 1 and f1[1] - 25 == pytest.approx(-9.2, abs=1.0)  # Chantler Mn f' ~ -9 e at edge
    delta, beta = physics.compound_delta_beta(LNMO, LNMO_DENSITY, energy, edges={"Mn": model})
    phase = np.angle(physics.transmission(delta, beta, MICRON, energy))
    assert np.all(phase < 0)  # matter retards the phase
    assert abs(phase[1]) < abs(phase[0]) and abs(phase[1]) < abs(phase[2])
    assert phase[0] == pytest.approx(-0.6, abs=0.1)  # DESIGN.md: ~ -0.6 rad per um for LNMO
    # f' model minimum lies within a core-hole width of E0
    fine = np.arange(e0 - 5.0, e0 + 5.0, 0.05)
    assert abs(fine[np.argmin(physics.edge_model_f1_f2(model, fine)[0])] - e0) < physics.CORE_HOLE_WIDTH_EV[("Mn", "K")]


def test_white_line_raises_od_just_above_edge():
    e0, offset = 6552.0, 3.0
    energy = np.array([e0 - 10.0, e0 + offset, e0 + 40.0])
    plain = physics.EdgeModel("Mn", edge_energy_ev=e0, white_line_height=0.0, white_line_offset_ev=offset)
    white = physics.EdgeModel("Mn", edge_energy_ev=e0, white_line_height=1.0, white_line_offset_ev=offset)
    od = []
    for model in (plain, white):
        delta, beta = physics.compound_delta_beta(LNMO, LNMO_DENSITY, energy, edges={"Mn": model})
        od.append(physics.optical_density(physics.transmission(delta, beta, MICRON, energy)))
    od_plain, od_white = od
    jump = od_plain[2] - od_plain[0]
    # A white line of one edge jump at E0 + offset adds about one OD jump there, nothing far from it.
    assert od_white[1] - od_plain[1] == pytest.approx(jump, rel=0.1)
    assert abs(od_white[0] - od_plain[0]) < 0.01 * jump
    assert abs(od_white[2] - od_plain[2]) < 0.01 * jump


def test_transmission_and_optical_density():
    delta, beta, t, energy = 2e-5, 1e-6, 1e-6, 7000.0
    obj = physics.transmission(delta, beta, t, energy)
    k = physics.wavenumber(energy)
    assert np.angle(obj) == pytest.approx(-k * delta * t)
    assert physics.optical_density(obj) == pytest.approx(2 * k * beta * t)


def test_reference_edge_energies_and_valence_slope():
    assert set(physics.REFERENCE_EDGE_ENERGIES) == {"Mn", "Ni"}
    assert physics.EDGE_SHIFT_PER_VALENCE["Mn"] == pytest.approx(4.0)
    assert 1.0 <= physics.EDGE_SHIFT_PER_VALENCE["Ni"] <= 2.0
    assert physics.edge_energy_for_valence("Mn", 3.8) == pytest.approx(6551.2)


@pytest.mark.parametrize("shape", [(64, 64), (2, 3, 10, 10), (63, 63), (64, 63), (7, 6)])
def test_farfield_is_the_centred_unitary_dft(shape):
    """``farfield`` / ``to_sample_plane`` equal numpy's ``fftshift(fft2(ifftshift(x)))`` (orthonormal)
    for even and odd sizes, though they use phase factors instead of shifts; exactly for even sizes,
    whose factors are +-1."""
    import jax.numpy as jnp

    from ptyjax.propagation import farfield, to_sample_plane

    rng = np.random.default_rng(1)
    wave = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    axes = (-2, -1)
    forward = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(wave, axes=axes), norm="ortho"), axes=axes)
    inverse = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(wave, axes=axes), norm="ortho"), axes=axes)
    np.testing.assert_allclose(np.asarray(farfield(jnp.asarray(wave))), forward, atol=3e-6)
    np.testing.assert_allclose(np.asarray(to_sample_plane(jnp.asarray(wave))), inverse, atol=3e-6)
    np.testing.assert_allclose(np.asarray(to_sample_plane(farfield(jnp.asarray(wave)))), wave, atol=3e-6)
