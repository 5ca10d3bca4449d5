"""Forward model: resampling, adjoints and gradients against finite differences."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyjax import losses
from ptyjax.model import FrameGeometry, LogObjectStack, Probe, Reconstruction, ScanPositions, extract_patches, illumination, predict_intensity
from ptyjax.sampling import choose_sampling, exact_patches


def smooth_image(shape, pixel_shift=(0.0, 0.0)):
    y, x = np.indices(shape, dtype=float)
    y, x = y - pixel_shift[0], x - pixel_shift[1]
    return np.exp(-((y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2) / (2 * 6.0**2)) * np.exp(1j * 0.05 * x)


@pytest.mark.parametrize("sampling", ["exact", "native-grid"])
def test_integer_position_scale_one_is_a_plain_crop(sampling):
    obj = jnp.asarray(smooth_image((48, 48)), jnp.complex64)
    geometry = FrameGeometry.create([1.0], 16, sampling)
    patch = extract_patches(obj[None], jnp.array([[[20.0, 25.0]]]), geometry)[0, 0]
    np.testing.assert_allclose(np.asarray(patch), np.asarray(obj[12:28, 17:33]), atol=1e-6)


@pytest.mark.parametrize("sampling", ["exact", "native-grid"])
@pytest.mark.parametrize("scale", [1.0, 1.27])
def test_subpixel_and_scaled_sampling_matches_the_continuous_function(scale, sampling):
    # A band-limited image sampled at fractional positions with a stretched grid (energy-dependent pixel size).
    shape = (64, 64)
    obj = jnp.asarray(smooth_image(shape), jnp.complex64)
    centre = np.array([31.37, 30.81])
    geometry = FrameGeometry.create([scale], 16, sampling)
    patch = np.asarray(extract_patches(obj[None], jnp.asarray(centre, jnp.float32)[None, None], geometry)[0, 0])
    samples = centre[:, None] + (np.arange(16) - 8) * scale
    yy, xx = np.meshgrid(samples[0], samples[1], indexing="ij")
    exact = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 6.0**2)) * np.exp(1j * 0.05 * xx)
    # Lanczos-3 on a Gaussian of sigma 6 px: better than 1e-3 (and the stretched kernel low-passes a bit).
    assert np.max(np.abs(patch - exact)) < (3e-3 if scale == 1.0 else 1e-2)


def make_params(rng, n_e=2, n_pos=5, frame=16, shape=(40, 40), modes=2):
    obj = LogObjectStack(
        jnp.asarray(-0.1 * rng.random((n_e,) + shape), jnp.float32), jnp.asarray(-0.5 * rng.random((n_e,) + shape), jnp.float32)
    )
    probe = rng.normal(size=(n_e, modes, frame, frame)) + 1j * rng.normal(size=(n_e, modes, frame, frame))
    nominal = 14 + 12 * rng.random((n_e, n_pos, 2))
    positions = ScanPositions.at_nominal(nominal)
    positions = ScanPositions(positions.nominal, jnp.asarray(0.3 * rng.normal(size=(n_e, 2)), jnp.float32), jnp.asarray(0.2 * rng.normal(size=(n_e, n_pos, 2)), jnp.float32))
    return Reconstruction(obj, Probe.from_complex(10 * probe), positions)


def exact_adjoint(images, centres, geometry, shape):
    """W^T images: the exact sampler's adjoint, one frame at a time, for per-frame images (E, B, N, N)."""
    template = jnp.zeros((centres.shape[0],) + shape, jnp.float32)
    _, adjoint = jax.vjp(lambda o: exact_patches(o, centres, geometry), template)
    return np.asarray(adjoint(images)[0])


@pytest.mark.parametrize("sampling", ["exact", "native-grid"])
@pytest.mark.parametrize("whole_pixels", [True, False])
def test_illumination_is_the_exact_adjoint_of_patch_extraction(sampling, whole_pixels):
    """sum_frames W^T |P|^2 on the common grid: exact for frames on whole pixels; for sub-pixel centres
    within 4 % (L2; 2.5 % measured) for a probe a few pixels wide (bilinear placement of the
    per-energy tile); the same for either sampler. The nearest whole pixel misses by 10 %, dropping
    the sub-pixel rests by 22 %."""
    rng = np.random.default_rng(0)
    params = make_params(rng)
    n = np.arange(16) - 8
    gaussian = np.exp(-(n[:, None] ** 2 + n[None, :] ** 2) / (2 * 2.5**2))  # |P| of a 2.5 px wide beam
    params = eqx.tree_at(lambda p: p.probe, params, Probe.from_complex(np.broadcast_to(gaussian, (2, 1, 16, 16)).astype(np.complex64)))
    if whole_pixels:
        positions = params.positions
        whole = jnp.round(positions()) - positions.drift[:, None] - positions.jitter
        params = eqx.tree_at(lambda p: p.positions.nominal, params, whole)
    geometry = FrameGeometry.create([1.0, 1.15], 16, sampling)
    indices = jnp.asarray(np.tile(np.arange(5), (2, 1)))
    centres = jnp.take_along_axis(params.positions(), indices[..., None], axis=1)
    p2 = jnp.broadcast_to(jnp.sum(jnp.abs(params.probe()) ** 2, axis=1)[:, None], (2, 5, 16, 16))
    truth = np.maximum(exact_adjoint(p2, centres, geometry, (40, 40)), 0)
    illum = np.asarray(illumination(params, geometry, indices, (40, 40)))
    error = np.linalg.norm(illum - truth) / np.linalg.norm(truth)
    assert error < (1e-5 if whole_pixels else 0.04), error
    np.testing.assert_allclose(illum.sum(), truth.sum(), rtol=1e-4)


@pytest.mark.parametrize("loss_name,sampling", [("amplitude", "native-grid"), ("poisson", "exact")])
def test_gradients_match_finite_differences(loss_name, sampling):
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(1)
        params = jax.tree.map(lambda x: x.astype(jnp.float64), make_params(rng))
        geometry = FrameGeometry.create([1.0, 1.15], 16, sampling)
        indices = jnp.asarray(np.tile(np.arange(5), (2, 1)))
        measured = rng.poisson(np.asarray(predict_intensity(make_params(np.random.default_rng(2)), geometry, indices))).astype(float)
        weight = jnp.ones((2, 1, 16, 16)).at[:, :, 3, 4].set(0.0)
        loss = losses.get(loss_name)

        def objective(p):
            return loss(predict_intensity(p, geometry, indices), measured, weight)

        grads = jax.grad(objective)(params)
        checks = [
            (lambda p: p.object.log_amplitude, (1, 20, 21)),
            (lambda p: p.object.phase, (0, 18, 25)),
            (lambda p: p.probe.real, (1, 1, 7, 9)),
            (lambda p: p.probe.imag, (0, 0, 8, 8)),
            (lambda p: p.positions.jitter, (1, 3, 0)),
            (lambda p: p.positions.jitter, (0, 2, 1)),
            (lambda p: p.positions.drift, (1, 1)),
        ]
        for where, index in checks:
            eps = 1e-5
            leaf = where(params)
            bump = lambda d: jax.tree_util.tree_map(lambda x: x, __import__("equinox").tree_at(where, params, leaf.at[index].add(d)))
            numeric = (objective(bump(eps)) - objective(bump(-eps))) / (2 * eps)
            analytic = where(grads)[index]
            np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-10 * abs(float(objective(params))))
    finally:
        jax.config.update("jax_enable_x64", False)


def test_auto_sampling_takes_the_native_grid_only_where_it_is_the_common_grid():
    assert choose_sampling([1.0, 1.0]) == "native-grid"  # constant pixel (or one energy): nothing to lose
    assert choose_sampling([1.0, 1.012]) == "exact"  # one edge: measurably less accurate (see ptyjax.sampling)
    assert choose_sampling([1.0, 1.28], "native-grid") == "native-grid"
    with pytest.raises(Exception, match="sampling must be one of"):
        choose_sampling([1.0], "nearest")


@pytest.mark.parametrize("frame_size", [20, 64])
def test_banded_blocks_equal_the_dense_interpolation(frame_size, monkeypatch):
    """The exact sampler applies its banded Lanczos matrices in blocks (one short product per block
    of samples over the rows holding their support); it must equal the dense product over the whole
    crop, also for frames that are not a multiple of the block and frames clipped at the grid edge."""
    from ptyjax import sampling

    rng = np.random.default_rng(3)
    scale = np.array([1.0, 1.17, 1.3])
    obj = jnp.asarray(rng.standard_normal((3, 120, 120)) + 1j * rng.standard_normal((3, 120, 120)), jnp.complex64)
    centres = jnp.asarray(np.concatenate([rng.uniform(0, 120, (3, 6, 2)), np.full((3, 1, 2), 2.0)], axis=1), jnp.float32)
    blocked = FrameGeometry.create(scale, frame_size, "exact")
    monkeypatch.setattr(sampling, "EXACT_BLOCK", frame_size)
    dense = FrameGeometry.create(scale, frame_size, "exact")
    assert blocked.block == min(16, frame_size) and dense.block == frame_size and dense.block_window == dense.window
    np.testing.assert_allclose(sampling.exact_patches(obj, centres, blocked), sampling.exact_patches(obj, centres, dense), atol=1e-5)


@pytest.mark.parametrize("sampling", ["exact", "native-grid"])
def test_amplitude_position_derivatives_match_autodiff(sampling):
    """The position Gauss-Newton diagonal's ingredient, d sqrt(I) / d position, against jax.jvp of the
    forward model: within 10 % (the central differences of the patch gradient) for a smooth object.
    The exit-wave bound sum |P dO/dr|^2 that it replaced is several times larger for this object."""
    from ptyjax.model import amplitude_position_derivatives, object_patches, patch_gradient

    rng = np.random.default_rng(3)
    y, x = np.indices((40, 40), dtype=float)
    blob = lambda cy, cx, s: np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s**2))  # noqa: E731
    shape = blob(20, 20, 6.0) + 0.6 * blob(16, 23, 3.5) + 0.4 * blob(24, 17, 3.0)
    obj = LogObjectStack(jnp.asarray(np.stack([-0.1 * shape, -0.15 * shape]), jnp.float32),
                         jnp.asarray(np.stack([-0.6 * shape, -0.8 * shape]), jnp.float32))
    # A smooth beam well inside the frame (defocus and tilt per mode), as in any sensible experiment:
    # native-grid sampling moves the probe (periodically) instead of the object, which is the same
    # only for a contained, band-limited probe.
    n = np.arange(16) - 8
    phase = 0.04 * rng.normal(size=(2, 2, 1, 1)) * n[:, None] ** 2 + 0.3 * rng.normal(size=(2, 2, 1, 1)) * n[None, :]
    beam = np.exp(-(n[:, None] ** 2 + n[None, :] ** 2) / (2 * 2.5**2)) * np.exp(1j * phase)
    params = eqx.tree_at(lambda p: (p.object, p.probe), make_params(rng), (obj, Probe.from_complex(10 * beam)))
    geometry = FrameGeometry.create([1.0, 1.15], 16, sampling)
    indices = jnp.asarray(np.tile(np.arange(5), (2, 1)))
    patches = object_patches(params, geometry, indices)
    derivatives = amplitude_position_derivatives(params, patches, geometry.scale)
    bound = patch_gradient(patches[0], geometry.scale)
    probe_intensity = jnp.sum(jnp.abs(params.probe()) ** 2, axis=1)[:, None]
    for axis in (0, 1):
        tangent = jnp.zeros_like(params.positions.jitter).at[..., axis].set(1.0)
        amplitude = lambda jitter: jnp.sqrt(predict_intensity(eqx.tree_at(lambda p: p.positions.jitter, params, jitter), geometry, indices))  # noqa: E731
        exact = np.asarray(jax.jvp(amplitude, (params.positions.jitter,), (tangent,))[1])
        # The sign of a translation's derivative differs between the samplers (object vs probe moved):
        # only the square enters the curvature.
        got = np.asarray(derivatives[axis]) * np.sign(np.sum(exact * np.asarray(derivatives[axis])))
        assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 0.1
        gauss_newton = np.sum(exact**2, axis=(-2, -1))
        ratio = np.sum(got**2, axis=(-2, -1)) / gauss_newton
        # Per frame within 35 % (0.81-1.30 measured): ample for a step-size preconditioner.
        assert np.all(np.abs(ratio - 1) < 0.35), ratio
        exit_wave_bound = np.sum(np.asarray(probe_intensity * jnp.abs(bound[axis]) ** 2), axis=(-2, -1))
        assert np.median(exit_wave_bound / gauss_newton) > 2  # 5-10x measured


def test_exact_sampler_derivatives_are_adjoint_and_exact():
    """The exact sampler's custom derivative (its adjoint multiplies by a separately computed
    transposed weight matrix): the reverse-mode product equals the forward-mode one (dot-product
    test, object and centres together), and in the object, where the sampler is linear, the
    gradient reproduces the change of the output exactly."""
    rng = np.random.default_rng(4)
    geometry = FrameGeometry.create(np.array([1.0, 1.27]), 16, "exact")
    obj = jnp.asarray(np.exp(0.2j * rng.standard_normal((2, 48, 48)) - 0.1 * rng.random((2, 48, 48))), jnp.complex64)
    centres = jnp.asarray(rng.uniform(20.0, 28.0, (2, 3, 2)), jnp.float32)
    d_obj = jnp.asarray(rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape), jnp.complex64)
    d_centres = jnp.asarray(rng.standard_normal(centres.shape), jnp.float32)
    out, tangent = jax.jvp(lambda o, c: exact_patches(o, c, geometry), (obj, centres), (d_obj, d_centres))
    cotangent = jnp.asarray(rng.standard_normal(out.shape) + 1j * rng.standard_normal(out.shape), jnp.complex64)
    _, vjp = jax.vjp(lambda o, c: exact_patches(o, c, geometry), obj, centres)
    g_obj, g_centres = vjp(cotangent)
    # JAX's pairing of a complex cotangent with a tangent: Re(sum(cotangent * tangent)).
    forward = float(jnp.real(jnp.sum(cotangent * tangent)))
    reverse = float(jnp.real(jnp.sum(g_obj * d_obj)) + jnp.sum(g_centres * d_centres))
    assert reverse == pytest.approx(forward, rel=1e-4)
    # Linear in the object: f(obj + d) - f(obj) = <gradient, d> up to float32 round-off.
    value = lambda o: jnp.real(jnp.sum(cotangent * exact_patches(o, centres, geometry)))  # noqa: E731
    change = float(value(obj + d_obj) - value(obj))
    assert float(jnp.real(jnp.sum(jax.grad(value)(obj) * d_obj))) == pytest.approx(change, rel=1e-4)
