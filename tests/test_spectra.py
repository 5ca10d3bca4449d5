"""Stack preparation: background referencing, OD/phase, masks, registration, loading."""

import h5py
import numpy as np
import pytest
from scipy import ndimage

from ptyjax import results, spectra
from ptyjax.errors import DataError

N = 48


def _disk_stack(n_energies=3, shift=(0.0, 0.0), seed=0):
    """A rounded particle (max phase -9 rad: wraps three times) with OD and phase maps, times a random complex scale
    per energy (the reconstruction ambiguity). Returns (object, od_truth, phase_truth, mask_truth)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:N, :N] - (N - 1) / 2
    r2 = ((y - shift[0]) / 14.0) ** 2 + ((x - shift[1]) / 11.0) ** 2
    # Smooth rounded body (C1 at the rim, so the field is nearly band-limited for Fourier shifts);
    # steepest phase step 1.3 rad/px < pi, so unwrapping is exact.
    profile = np.clip(1.0 - r2, 0.0, None) ** 2
    od = profile[None] * np.linspace(0.2, 0.3, n_energies)[:, None, None]
    phase = -9.0 * profile[None] * np.linspace(1.0, 0.95, n_energies)[:, None, None]
    scale = rng.uniform(0.5, 2.0, n_energies) * np.exp(1j * rng.uniform(-np.pi, np.pi, n_energies))
    obj = scale[:, None, None] * np.exp(-od / 2 + 1j * phase)
    return obj.astype(np.complex64), od, phase, r2 < 1.0


def test_background_stays_inside_the_measured_field():
    """Unmeasured filler (transmission 1 exactly, no noise) would pull the OD reference and the noise
    estimate: the background keeps ``margin`` pixels away from the field's edge as from the particle's."""
    mask = np.zeros((N, N), bool)
    mask[20:28, 20:28] = True
    fov = np.zeros((N, N), bool)
    fov[8:40, 6:42] = True
    background = spectra.background_region(mask, 3, field_of_view=fov)
    assert not background[~ndimage.binary_erosion(fov, iterations=3)].any()
    assert not background[ndimage.binary_dilation(mask, iterations=3)].any()
    np.testing.assert_array_equal(background, spectra.background_region(mask, 3) & ndimage.binary_erosion(fov, iterations=3))
    # 26 x 30 measured pixels 3 px in from the field's edge, less the 8 x 8 particle grown by 3 px (172).
    assert background.sum() == 26 * 30 - 172


def test_background_referencing_and_unwrapping_recover_od_and_phase():
    obj, od_true, phase_true, mask = _disk_stack()
    background = spectra.background_region(mask, 3)
    od = spectra.optical_density_stack(obj, background)
    phase = spectra.phase_stack(obj, background)
    assert od.dtype == np.float32 and phase.shape == obj.shape
    # Empty region reads 0 after referencing (float32 round-off: 1e-5).
    assert np.abs(od[:, background]).max() < 1e-5
    assert np.abs(phase[:, background]).max() < 1e-5
    # Unwrapping recovers a 9 rad deep phase exactly (no neighbour difference exceeds pi).
    np.testing.assert_allclose(phase, phase_true, atol=1e-4)
    np.testing.assert_allclose(od, od_true, atol=1e-5)


def test_phase_ramp_of_each_energy_is_removed():
    """Ptychography leaves each energy's linear phase ramp undetermined: a different ramp per energy
    (up to 0.3 rad per pixel) is removed by the plane fitted to the background, exactly."""
    obj, _, phase_true, mask = _disk_stack()
    y, x = np.indices(obj.shape[1:])
    slopes = np.random.default_rng(0).uniform(-0.3, 0.3, (obj.shape[0], 2))
    ramped = obj * np.exp(1j * (slopes[:, :1, None] * y + slopes[:, 1:, None] * x))
    phase = spectra.phase_stack(ramped, spectra.background_region(mask, 3))
    np.testing.assert_allclose(phase, phase_true, atol=2e-4)


def test_particle_mask_finds_the_particle():
    obj, _, phase, truth = _disk_stack()
    mask = spectra.particle_mask(obj)
    # Everything thicker than 5 % of the maximum, nothing more than 2 px (smoothing: 1 px) outside.
    assert mask[np.abs(phase[0]) > 0.05 * np.abs(phase[0]).max()].all()
    assert not (mask & ~ndimage.binary_dilation(truth, iterations=2)).any()
    assert ndimage.label(mask)[1] == 1
    # The background (3 px away from the mask) holds no pixel with more than 5 % of the maximum phase.
    assert np.abs(phase[0][spectra.background_region(mask, 3)]).max() < 0.05 * np.abs(phase[0]).max()


def _noisy_particle(n, halo=0.0, noise=0.03, seed=1):
    """Phase image (n, n): a -1 rad rounded particle, an optional ring of phase ``+halo`` just outside
    its edge (ringing) and correlated noise (``noise`` rad) inside a central 72 x 72 measured field;
    exactly 0 (unmeasured filler) outside. Returns (object (1, n, n), field of view, particle, ring)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(y / 14.0, x / 11.0)
    ring = (r > 1.0) & (r < 1.15)
    correlated = ndimage.gaussian_filter(rng.standard_normal((n, n)), 1.5)
    fov = (np.abs(y) < 36) & (np.abs(x) < 36)
    phase = np.where(fov, -np.clip(1.0 - r**2, 0.0, None) + halo * ring + noise * correlated / correlated.std(), 0.0)
    return np.exp(1j * phase)[None].astype(np.complex64), fov, r < 1.0, ring


def test_particle_mask_ignores_unmeasured_filler():
    """The reference, threshold and noise level come from the measured field only: padding the
    field with noise-free filler changes nothing."""
    obj, fov, particle, _ = _noisy_particle(160)
    mask = spectra.particle_mask(obj, field_of_view=fov)
    rows, cols = np.where(fov)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    np.testing.assert_array_equal(mask[crop], spectra.particle_mask(obj[(slice(None),) + crop]))
    assert not mask[~fov].any()
    assert mask[ndimage.binary_erosion(particle, iterations=2)].all()
    assert not (mask & ~ndimage.binary_dilation(particle, iterations=2)).any()
    with pytest.raises(ValueError, match="field of view"):
        spectra.particle_mask(obj, field_of_view=fov[:10])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_particle_mask_excludes_opposite_signed_halo(sign):
    """Ringing leaves a ring of opposite phase sign around the particle; it is not matter, whichever
    sign convention wrote the object (``sign``)."""
    obj, fov, particle, ring = _noisy_particle(96, halo=0.1, noise=0.003)
    obj = obj.real + 1j * sign * obj.imag
    mask = spectra.particle_mask(obj, field_of_view=fov)
    assert mask[ndimage.binary_erosion(particle, iterations=2)].all()
    # Thresholding |phase| instead takes 80 of these 84 halo pixels.
    assert not (mask & ring & ~ndimage.binary_dilation(particle, iterations=1)).any()


def test_registration_recovers_subpixel_shift():
    obj, *_ = _disk_stack(n_energies=3)
    shift = np.array([[0.0, 0.0], [0.37, -1.21], [-2.64, 0.58]])
    moved = spectra.fourier_shift(obj, shift)  # one shift per image of the stack
    # The same as shifting image by image.
    np.testing.assert_allclose(moved[2], spectra.fourier_shift(obj[2], shift[2]), atol=1e-12)
    registered, found = spectra.register_stack(moved, upsample=50)
    np.testing.assert_allclose(found, -shift, atol=0.05)
    images = np.abs(moved)
    batched = spectra.phase_correlation_shift(images[0], images, 50)
    np.testing.assert_array_equal(batched[2], spectra.phase_correlation_shift(images[0], images[2], 50))
    assert np.abs(registered - obj).max() < 0.05 * np.abs(obj).max()


def test_load_stack_formats(tmp_path):
    obj, *_ = _disk_stack()
    energy = np.array([6530.0, 6540.0, 6550.0])
    results.write_group(tmp_path / "r.h5", "reconstruction",
                        {"object": (obj, "1"), "energy": (energy, "eV"), "pixel_size": (30e-9, "m")})
    np.savez(tmp_path / "s.npz", object=obj, energy=energy, pixel_size=30e-9)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["object"], f["energy"], f["pixel_size"] = obj, energy, 30e-9
    for name in ("r.h5", "s.npz", "g.h5"):
        stack = spectra.load_stack(tmp_path / name)
        np.testing.assert_array_equal(stack.object, obj)
        np.testing.assert_array_equal(stack.energy, energy)
        assert stack.pixel_size == 30e-9
    np.savez(tmp_path / "bad.npz", object=obj, energy=energy)
    with pytest.raises(DataError, match="pixel_size"):
        spectra.load_stack(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", object=obj, energy=energy[:2], pixel_size=30e-9)
    with pytest.raises(DataError, match="energies"):
        spectra.load_stack(tmp_path / "bad2.npz")
    with pytest.raises(DataError, match="does not exist"):
        spectra.load_stack(tmp_path / "missing.h5")


def _materials_stack(weak=0.0, seed=0, rho=0.6, sigma=0.01):
    """OD of a thin sample made of three materials (plus a ``weak`` fourth, a white line, in one
    half), 30 energies, with noise of std ``sigma`` correlated between energies (AR(1), ``rho``) as a
    spectral prior leaves it. Returns (noisy, clean, particle region, background)."""
    rng = np.random.default_rng(seed)
    e = np.linspace(-20.0, 40.0, 30)
    step = lambda e0: np.arctan((e - e0) / 1.5) / np.pi + 0.5  # noqa: E731
    materials = np.stack([0.2 + 0.5 * step(0.0), 0.1 + 0.6 * step(3.0), 0.3 - 0.002 * e,
                          np.exp(-0.5 * ((e - 5.0) / 3.0) ** 2)])
    y, x = np.mgrid[:N, :N] - (N - 1) / 2
    r = np.hypot(y, x)
    body = np.clip(1.0 - (r / 18.0) ** 2, 0.0, None)
    amounts = np.stack([body * (x < 4), body * (x >= 4), body * (y + 18) / 36, weak * body * (y > 0)])
    clean = np.einsum("mk,myx->kyx", materials, amounts)
    lag = np.abs(np.subtract.outer(np.arange(e.size), np.arange(e.size)))
    noise = np.einsum("ij,jyx->iyx", np.linalg.cholesky(sigma**2 * rho**lag), rng.standard_normal(clean.shape))
    return (clean + noise).astype(np.float32), clean, r < 18.0, r > 21.0


@pytest.mark.parametrize("seed", [0, 1])
def test_mnf_keeps_the_materials_and_removes_the_noise(seed):
    """Three materials span three spectral components: MNF keeps exactly those (the noise edge must
    allow for the background's noise covariance being estimated; Marchenko-Pastur's edge alone kept
    5), leaves the pixels outside the region alone, and with white noise removes it down to
    sqrt(rank / E) = sqrt(3 / 30) = 0.32 of its amplitude. A fourth material whose largest OD (0.1) is
    ten times the noise but whose component is weak (whitened variance ~3, edge 1.67) is kept."""
    noisy, clean, region, background = _materials_stack(seed=seed)
    out = spectra.mnf_denoise(noisy, region, background)
    assert out.rank == 3, out.eigenvalues[:6]
    np.testing.assert_array_equal(out.stack[:, ~region], noisy[:, ~region])
    np.testing.assert_allclose(out.stack[:, region], out.projector @ noisy[:, region], atol=1e-5)
    white, clean, region, background = _materials_stack(seed=seed, rho=0.0)
    out = spectra.mnf_denoise(white, region, background)
    residual = np.sqrt(np.mean((out.stack - clean)[:, region] ** 2) / np.mean((white - clean)[:, region] ** 2))
    assert out.rank == 3 and abs(residual - np.sqrt(3 / 30)) < 0.03, residual  # measured 0.318, 0.322
    weak, _, region, background = _materials_stack(weak=0.1, seed=seed)
    assert spectra.mnf_denoise(weak, region, background).rank == 4
    # A direction given in ``keep`` passes unchanged, whatever the data say about it.
    direction = np.sin(np.linspace(0.0, 9.0, 30))
    kept = spectra.mnf_denoise(noisy, region, background, keep=direction[:, None]).projector
    np.testing.assert_allclose(kept @ direction, direction, atol=1e-6)
    assert np.linalg.norm(out.projector @ direction - direction) > 0.5 * np.linalg.norm(direction)


def test_mnf_rejects_what_it_cannot_use():
    noisy, _, region, background = _materials_stack()
    with pytest.raises(ValueError, match="region is empty"):
        spectra.mnf_denoise(noisy, np.zeros_like(region), background)
    with pytest.raises(ValueError, match="no measurable noise"):
        spectra.mnf_denoise(np.zeros_like(noisy), region, background)
    with pytest.raises(ValueError, match="rank must be"):
        spectra.mnf_denoise(noisy, region, background, rank=31)
