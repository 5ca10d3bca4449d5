"""Fitting the forward model to all energies at once with optax.

One jitted step takes a minibatch of ``batch_size`` scan points at *every* energy, evaluates the
photon-normalised data term plus the priors, and updates the parameter groups (object, probe,
drift, jitter) with their own optax transformations (``optax.partition``): preconditioned momentum
steps for object and probe (:mod:`ptyjax.preconditioning`), Gauss-Newton-scaled capped steps for
positions, released after
``position_start_epoch`` epochs. Runs checkpoint every few epochs and on SIGINT/SIGTERM, resume from
the last checkpoint, and roll back with a halved step when the loss stops being finite.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import initialise, losses, priors
from .errors import PtyjaxError
from .geometry import ObjectGrid
from .metrics import loss_trend
from .model import (OBJECT_MODELS, FrameGeometry, LogObjectStack, Probe, Reconstruction, ScanPositions, amplitude_position_derivatives,
                    centre_probe, farfield_waves, illumination, object_patches)
from .physics import wavelength
from .preconditioning import damped, scale_by_curvature
from .propagation import intensity
from .sampling import fourier_translate
from .sharding import to_host

# Extra common-grid pixels around the scanned area, so refined positions can move without
# clamping the interpolation window at the grid border.
GRID_MARGIN_PX = 8


@dataclass
class FitConfig:
    """Everything that defines a reconstruction run (stored with the results).

    Length: at most ``epochs``; the run stops earlier once the objective fell by less than
    ``converged_fall`` (relative) per epoch over the last ``convergence_window`` epochs, counted from
    the start of the priors (0 switches the stop off: every epoch runs).
    Steps: ``object_step`` and ``probe_step`` are in units of the preconditioned (full-projection)
    step. ``register_every``: epochs between registrations of the energies to each other (moving
    each energy's object translation into its drift; 0 = never). ``position_step`` is the fraction of
    the Gauss-Newton step taken for drift and jitter, each move capped at ``position_max_move``
    common-grid pixels per step; each point's position curvature is recomputed every
    ``position_curvature_every`` epochs and cached in between. ``priors`` maps a registered prior
    name to its options (``weight`` and the rest); they act from epoch ``prior_start_epoch``.
    ``sampling``: how frames see the common-grid object, "exact", "native-grid" or "auto"
    (:mod:`ptyjax.sampling`).
    """

    epochs: int = 150
    # 0.05 % per epoch: ten more epochs would lower the objective by under 0.5 %. On the small preset
    # the loss still fell 0.23 % per epoch at epoch 40 (the former fixed length); the rule stopped six
    # simulated particles after 75-91 epochs, where the object (demo NRMSE 0.0138 -> 0.0128) and the
    # groups (four particles: mean ARI 0.848 -> 0.856) had improved
    # (experiments/results/cluster_error_budget_small.md section 7).
    converged_fall: float = 5e-4
    convergence_window: int = 10
    batch_size: int = 16
    n_modes: int = 1
    loss: str = "amplitude"
    priors: dict = field(default_factory=lambda: {"spectral_smoothness": {"weight": 3.0, "delta": None}})
    object_step: float = 1.0
    probe_step: float = 1.0
    momentum: float = 0.5
    probe_start_epoch: int = 1
    # The priors couple neighbouring energies' objects, which helps only once they are registered:
    # before, a prior pulls objects that the drift has misplaced towards each other and blurs them.
    # The default starts it after the registrations at the ends of epochs 5 and 10 (position_start_epoch,
    # register_every), which bring the stack from 40 to a few nm on the small preset.
    prior_start_epoch: int = 10
    refine_positions: bool = True
    position_step: float = 0.15
    position_max_move: float = 0.25
    position_start_epoch: int = 5
    # Each point's position curvature changes slowly once the object has formed, and costs a sixth of
    # a step (two more far-field transforms per frame): it is refreshed every this many epochs.
    position_curvature_every: int = 5
    illumination_floor: float = 0.1
    defocus_m: float | None = None
    defocus_trial_epochs: int = 6
    seed: int = 0
    checkpoint_every: int = 5
    register_every: int = 5
    object_model: str = "log"
    object_options: dict = field(default_factory=dict)
    sampling: str = "auto"

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise PtyjaxError(f"unknown reconstruction option(s): {sorted(unknown)}")
        return cls(**values)


@dataclass
class Problem:
    """A dataset laid out for the engine: padded frame arrays on the device and the geometry."""

    energies_ev: np.ndarray
    frames: jax.Array  # (E, P, N, N) float32 photons / flux, or a source with .batch(indices) -> (E, B, N, N)
    pixel_weight: jax.Array  # (E, 1, N, N): 0 for bad pixels
    point_valid: np.ndarray  # (E, P) bool: False for padding
    nominal_m: np.ndarray  # (E, P, 2) nominal probe positions (y, x), m
    native_pixel_size: np.ndarray  # (E,) m
    grid: ObjectGrid
    geometry: FrameGeometry
    mean_patterns: np.ndarray  # (E, N, N) mean frame, bad pixels included as measured
    bad_pixels: np.ndarray  # (E, N, N) bool
    # (E, P) incident flux of each frame relative to its energy's mean (the CXI monitor; 1 without
    # one, and for padding). Frames are stored divided by it and weighted by it in the loss, which is
    # the exact likelihood of a model intensity flux * |psi|^2 for both noise models:
    # flux (sqrt(I_m) - sqrt(I / flux))^2 = (sqrt(flux I_m) - sqrt(I))^2, and likewise for Poisson up
    # to a constant.
    flux: np.ndarray | None = None

    def point_weights(self, indices, weights):
        """Loss weight (E, B) of the points ``indices`` (E, B): ``weights`` (1 real, 0 padding) times
        their relative flux."""
        if self.flux is None:
            return weights
        return weights * np.take_along_axis(self.flux, np.asarray(indices), axis=1).astype(np.float32)

    @property
    def n_energies(self):
        return len(self.energies_ev)

    def batch_frames(self, indices):
        """Frames (E, B, N, N) of the points ``indices`` (E, B)."""
        if hasattr(self.frames, "batch"):
            return self.frames.batch(indices)
        return gather_frames(self.frames, jnp.asarray(indices))

    @property
    def nominal_px(self):
        return self.grid.to_pixels(self.nominal_m)

    def subset(self, energy_indices, max_points=None):
        """The same problem restricted to some energies (and the first ``max_points`` points)."""
        e = np.asarray(energy_indices)
        p = slice(None) if max_points is None else slice(0, max_points)
        return dataclasses.replace(
            self,
            energies_ev=self.energies_ev[e],
            frames=self.frames[e][:, p],
            pixel_weight=self.pixel_weight[e],
            point_valid=self.point_valid[e][:, p],
            nominal_m=self.nominal_m[e][:, p],
            native_pixel_size=self.native_pixel_size[e],
            geometry=FrameGeometry.create(self.native_pixel_size[e] / self.grid.pixel_size, self.geometry.frame_size),
            mean_patterns=self.mean_patterns[e],
            bad_pixels=self.bad_pixels[e],
            flux=None if self.flux is None else self.flux[e][:, p],
        )


def prepare(dataset, pixel_size_m: float | None = None, stream: bool = False) -> Problem:
    """Load a :class:`ptyjax.data.Dataset` into a :class:`Problem` on one common object grid.

    The common pixel size defaults to the finest native pixel size (the highest energy). ``stream``:
    leave the frames in the files and read them per minibatch (:mod:`ptyjax.streaming`), so memory
    holds a few batches instead of the dataset.
    """
    n_y, n_x = dataset.frame_shape
    if n_y != n_x:
        raise PtyjaxError(f"frames must be square for now, got {n_y}x{n_x}")
    native = np.asarray(dataset.pixel_sizes_m, dtype=np.float64).reshape(len(dataset), -1)[:, 0]
    dx0 = float(native.min()) if pixel_size_m is None else float(pixel_size_m)
    n_points = np.array([len(dataset.positions_m(e)) for e in range(len(dataset))])
    p_max = int(n_points.max())
    nominal = np.zeros((len(dataset), p_max, 2))
    valid = np.zeros((len(dataset), p_max), bool)
    flux = np.ones((len(dataset), p_max))
    bad = np.stack([np.asarray(s.bad_pixels, bool) for s in dataset.scans])
    for e in range(len(dataset)):
        k = n_points[e]
        nominal[e, :k] = dataset.positions_m(e)
        nominal[e, k:] = nominal[e, :1]
        valid[e, :k] = True
        flux[e, :k] = dataset.scans[e].relative_flux
    if stream:
        from .streaming import StreamedFrames, mean_patterns

        frames, mean = StreamedFrames(dataset.scans, p_max), mean_patterns(dataset)
    else:
        frames = np.zeros((len(dataset), p_max, n_y, n_x), np.float32)
        for e in range(len(dataset)):
            frames[e, : n_points[e]] = dataset.scans[e].at_mean_flux(dataset.load_all(e), np.arange(n_points[e]))
        mean = frames.sum(axis=1) / n_points[:, None, None]
        frames = jnp.asarray(frames)
    scale = native / dx0
    geometry = FrameGeometry.create(scale, n_y)
    margin = geometry.reach + GRID_MARGIN_PX
    grid = ObjectGrid.covering(nominal[valid], window_m=(n_y * native.max(),) * 2, pixel_size=dx0, margin_px=margin)
    return Problem(
        energies_ev=np.asarray(dataset.energies_ev, dtype=np.float64),
        frames=frames,
        pixel_weight=jnp.asarray(~bad, jnp.float32)[:, None],
        point_valid=valid,
        nominal_m=nominal,
        native_pixel_size=native,
        grid=grid,
        geometry=geometry,
        mean_patterns=mean,
        bad_pixels=bad,
        flux=flux if np.any(flux != 1.0) else None,
    )


def initial_probe(problem: Problem, n_modes: int, defocus_m) -> np.ndarray:
    """Probes (E, M, N, N) from each energy's mean pattern with the given defocus per energy."""
    defocus = np.broadcast_to(np.asarray(defocus_m, dtype=np.float64), (problem.n_energies,))
    return np.stack(
        [
            initialise.probe_from_pattern(
                problem.mean_patterns[e], problem.bad_pixels[e], n_modes, defocus[e],
                problem.native_pixel_size[e], float(wavelength(problem.energies_ev[e])),
            )
            for e in range(problem.n_energies)
        ]
    )


def initial_params(problem: Problem, config: FitConfig, probe=None, defocus_m=0.0) -> Reconstruction:
    if probe is None:
        probe = initial_probe(problem, config.n_modes, defocus_m)
    if config.object_model not in OBJECT_MODELS:
        raise PtyjaxError(f"unknown object model {config.object_model!r}; registered: {sorted(OBJECT_MODELS)}")
    create = OBJECT_MODELS[config.object_model]
    return Reconstruction(
        object=create(problem.n_energies, problem.grid.shape, problem.energies_ev, **config.object_options),
        probe=Probe.from_complex(probe),
        positions=ScanPositions.at_nominal(problem.nominal_px),
    )


def _labels(params: Reconstruction):
    return Reconstruction(
        object=jax.tree.map(lambda _: "object", params.object),
        probe=jax.tree.map(lambda _: "probe", params.probe),
        positions=ScanPositions("frozen", "drift", "jitter"),
    )


def _delayed(step: float, start_step: int):
    return optax.join_schedules([optax.constant_schedule(0.0), optax.constant_schedule(step)], [max(start_step, 0)])


_OPTIMIZERS: dict = {}


def make_optimizer(config: FitConfig, steps_per_epoch: int):
    """One optax transformation per parameter group (``optax.partition``).

    Cached per settings: the jitted step takes the optimizer as an argument, and a new but equal
    optimizer object would otherwise trigger a recompilation.
    """
    key = json.dumps([config.to_dict(), steps_per_epoch], sort_keys=True, default=str)
    if key not in _OPTIMIZERS:
        _OPTIMIZERS[key] = _build_optimizer(config, steps_per_epoch)
    return _OPTIMIZERS[key]


def _build_optimizer(config: FitConfig, steps_per_epoch: int):
    position_start = config.position_start_epoch * steps_per_epoch
    position_step = config.position_step if config.refine_positions else 0.0
    transforms = {
        "object": optax.chain(scale_by_curvature(), optax.sgd(config.object_step, momentum=config.momentum or None)),
        "probe": optax.chain(
            scale_by_curvature(),
            optax.sgd(_delayed(config.probe_step, config.probe_start_epoch * steps_per_epoch), momentum=config.momentum or None),
        ),
        # Newton-like steps on positions, capped per step (in common-grid pixels) against noise.
        "drift": optax.chain(scale_by_curvature(), optax.sgd(_delayed(position_step, position_start)), optax.clip(config.position_max_move)),
        "jitter": optax.chain(scale_by_curvature(), optax.sgd(_delayed(position_step, position_start)), optax.clip(config.position_max_move)),
        "frozen": optax.set_to_zero(),
    }
    return optax.partition(transforms, _labels, mask_compatible_extra_args=True)


class Engine(eqx.Module):
    """The pure pieces of a run for one problem: objective, curvature and the jitted step."""

    geometry: FrameGeometry
    context: priors.PriorContext = eqx.field(static=True)
    prior_spec: tuple = eqx.field(static=True)
    loss_name: str = eqx.field(static=True)
    floor: float = eqx.field(static=True)
    prior_curvature: float = eqx.field(static=True)
    refine_positions: bool = eqx.field(static=True, default=True)

    @classmethod
    def create(cls, problem: Problem, config: FitConfig):
        context = priors.PriorContext(problem.energies_ev, problem.grid.shape)
        spec = {k: dict(v) for k, v in config.priors.items() if v.get("weight", 1.0) != 0}
        return cls(
            geometry=problem.geometry.with_sampling(config.sampling),
            context=context,
            prior_spec=tuple((k, tuple(sorted(v.items()))) for k, v in spec.items()),
            loss_name=config.loss,
            floor=config.illumination_floor,
            prior_curvature=priors.object_curvature(context, spec),
            refine_positions=config.refine_positions,
        )

    @property
    def priors(self):
        return {k: dict(v) for k, v in self.prior_spec}

    def predict(self, params, indices):
        """Object patches (with sub-pixel rests) and far-field waves of the points ``indices`` (E, B)."""
        patches = object_patches(params, self.geometry, indices)
        return patches, farfield_waves(params, self.geometry, indices, patches)

    def energy_losses(self, params, frames, weight, indices):
        """Data term (E,) of each energy separately, normalised by its own photons."""
        _, waves = self.predict(params, indices)
        return jax.vmap(losses.get(self.loss_name))(intensity(waves), frames, weight)

    def objective(self, params, frames, weight, indices, prior_scale=1.0):
        if not self.refine_positions:
            # No position gradient: it would cost the sampler's weight derivatives (~15 % of a step).
            params = eqx.tree_at(lambda p: p.positions, params, jax.lax.stop_gradient(params.positions))
        patches, waves = self.predict(params, indices)
        data = losses.get(self.loss_name)(intensity(waves), frames, weight)
        # Before prior_start_epoch (prior_scale 0) the priors' whole-stack passes are skipped, not zeroed.
        prior = jax.lax.cond(
            prior_scale > 0, lambda p: prior_scale * priors.total(p, self.context, self.priors), lambda p: jnp.float32(0.0), params
        )
        return data + prior, (data, prior, jax.lax.stop_gradient((patches, waves)))

    def photons(self, frames, weight):
        """The batch's photons over the loss' curvature per unit |exit wave|^2: the data term's scale."""
        return jnp.maximum(jnp.sum(weight * frames), 1.0) / losses.get(self.loss_name).curvature

    def position_curvature(self, params, frames, weight, patches, waves=None):
        """Gauss-Newton diagonal (E, B, 2) of the data term for each frame's position (y, x).

        ``sum w (d sqrt(I) / dr)^2`` per point and direction. The exit-wave bound ``sum |P|^2 |dO/dr|^2``
        (like the object's) was 3-90x larger on the small preset (median 12x), so position steps were
        that much too short. ``patches``, ``waves``: those of the forward pass.
        """
        photons = self.photons(frames, weight)
        derivatives = amplitude_position_derivatives(params, patches, self.geometry.scale, waves)
        return jnp.stack([jnp.sum(weight * d**2, axis=(-2, -1)) / photons for d in derivatives], axis=-1)

    def curvature(self, params, frames, weight, indices, patches, h_point, prior_scale=1.0):
        """Diagonal curvature pytree (same structure as ``params``) for the preconditioner.

        ``patches``: the object patches with sub-pixel rests of the forward pass (reused, not
        recomputed). ``h_point`` (E, B, 2): the frames' position curvature
        (:meth:`position_curvature`, or a cached or placeholder value while positions are fixed).
        """
        photons = self.photons(frames, weight)
        illum = illumination(params, self.geometry, indices, self.context.object_shape) / photons
        h_object = damped(illum, self.floor) + prior_scale * self.prior_curvature
        point_weight = jnp.max(weight, axis=(-2, -1))  # (E, B): 0 for padding frames
        object_intensity = jnp.sum(point_weight[..., None, None] * jnp.abs(patches[0]) ** 2, axis=1) / photons
        h_probe = damped(object_intensity, self.floor)[:, None]
        floor = self.floor * jnp.max(h_point) + 1e-30
        h_jitter = jnp.full(params.positions.jitter.shape, floor).at[jnp.arange(indices.shape[0])[:, None], indices].add(h_point)
        h_drift = jnp.sum(h_point, axis=1) + floor
        return Reconstruction(
            object=params.object.curvature(h_object),
            probe=jax.tree.map(lambda x: jnp.broadcast_to(h_probe, x.shape), params.probe),
            positions=ScanPositions(jnp.ones_like(params.positions.nominal), h_drift, h_jitter),
        )


@jax.jit
def gather_frames(frames_all, indices):
    """Frames (E, B, N, N) of the points ``indices`` (E, B) from an in-memory (E, P, N, N) array."""
    return jnp.take_along_axis(frames_all, indices[..., None, None], axis=1)


@eqx.filter_jit
def _step(engine: Engine, optimizer, params, opt_state, point_curvature, frames, pixel_weight, point_valid, indices,
          point_weight, step_scale, prior_scale, position_mode):
    """One minibatch step. ``point_curvature`` (E, P, 2): every point's cached position curvature,
    returned updated; ``position_mode``: ``POSITIONS_FIXED``, ``POSITIONS_CACHED`` or ``POSITIONS_FRESH``."""
    weight = pixel_weight * point_weight[..., None, None]
    objective = eqx.filter_value_and_grad(engine.objective, has_aux=True)
    (value, (data, prior, (patches, waves))), grads = objective(params, frames, weight, indices, prior_scale)
    fixed = jax.lax.stop_gradient(params)
    energy = jnp.arange(indices.shape[0])[:, None]
    cached = point_curvature[energy, indices]
    h_point = jax.lax.switch(position_mode, [
        lambda: jnp.ones_like(cached),  # a placeholder: positions take no step
        lambda: cached,
        lambda: engine.position_curvature(fixed, frames, weight, patches, waves),
    ])
    # Padding frames repeat a real point with weight 0: sent out of bounds, they leave its entry alone.
    stored = jnp.where(point_weight > 0, indices, point_curvature.shape[1])
    point_curvature = point_curvature.at[energy, stored].set(h_point, mode="drop")
    curvature = engine.curvature(fixed, frames, weight, indices, patches, h_point, prior_scale)
    updates, opt_state = optimizer.update(grads, opt_state, params, curvature=curvature)
    updates = jax.tree.map(lambda u: step_scale * u, updates)
    params = eqx.apply_updates(params, updates)
    params = eqx.tree_at(lambda p: p.positions, params, params.positions.canonical(point_valid))
    return params, opt_state, point_curvature, data, prior


# Position curvature in a step (``position_mode``): not needed, the cached value, or computed afresh.
POSITIONS_FIXED, POSITIONS_CACHED, POSITIONS_FRESH = 0, 1, 2


def position_mode(config: FitConfig, epoch: int) -> int:
    """How the steps of ``epoch`` get the position curvature (refreshed every ``position_curvature_every``)."""
    if not config.refine_positions or epoch < config.position_start_epoch:
        return POSITIONS_FIXED
    fresh = (epoch - config.position_start_epoch) % max(config.position_curvature_every, 1) == 0
    return POSITIONS_FRESH if fresh else POSITIONS_CACHED


def epoch_batches(point_valid: np.ndarray, batch_size: int, seed: int, epoch: int):
    """Minibatch indices (n_batches, E, B) and weights (0 = padding) for one epoch.

    ``n_batches = ceil(P / batch_size)`` for the largest number of points P of an energy, and the
    points are spread evenly over them: ``B = ceil(P / n_batches) <= batch_size``, so the padding is
    under one point per batch. (A last batch padded up to ``batch_size`` computed frames of weight 0:
    12 % of the frames for 100 points in batches of 16.) Each energy's points are shuffled
    independently with a generator seeded by (seed, epoch), so a resumed run sees exactly the
    batches an uninterrupted one would.
    """
    rng = np.random.default_rng([seed, epoch])
    n_e, p_max = point_valid.shape
    n_batches = max(1, math.ceil(p_max / batch_size))
    batch_size = max(1, math.ceil(p_max / n_batches))
    indices = np.zeros((n_e, n_batches * batch_size), np.int32)
    weights = np.zeros((n_e, n_batches * batch_size), np.float32)
    for e in range(n_e):
        points = np.flatnonzero(point_valid[e])
        order = rng.permutation(points)
        indices[e, : len(order)] = order
        indices[e, len(order):] = order[0]
        weights[e, : len(order)] = 1.0
    shape = (n_e, n_batches, batch_size)
    return indices.reshape(shape).transpose(1, 0, 2), weights.reshape(shape).transpose(1, 0, 2)


@dataclass
class FitResult:
    params: Reconstruction
    problem: Problem
    config: FitConfig
    loss_history: list
    epoch_times: list
    defocus_m: np.ndarray | None = None

    def object(self):
        return to_host(self.params.object())

    def probe(self):
        return to_host(self.params.probe())

    def positions_m(self):
        """Refined probe positions (E, P, 2), (y, x) in metres (padding points included)."""
        px = to_host(self.params.positions())
        return np.asarray(self.problem.grid.origin) + px * self.problem.grid.pixel_size


def register_energies(params: Reconstruction, scanned, band_px: int, upsample: int = 20) -> Reconstruction:
    """Align every energy's object with the energy-mean image and move the shift into its drift.

    Each energy's object is free up to a translation that its drift undoes (probe and positions
    move together with it), so without this the stack is not registered and the drift not
    measured. Shifts come from phase correlation (:func:`ptyjax.spectra.phase_correlation_shift`) of
    the phase images inside the scanned region, each flattened first: the phase offset and ramp
    that object and probe trade freely (:func:`fix_global_ambiguities`) are fitted over the outer
    ``band_px`` of the scanned region and removed. Left in, they make the scanned region a plateau
    whose border moves with the positions and dominates the correlation: on the ``small`` preset the
    energies stayed misregistered by 9 nm RMS (a third of a pixel), up to 19 nm at the Mn edge's ends.
    Only for the log-object parametrisation, whose leaves are images; others are returned unchanged.
    """
    from .spectra import phase_correlation_shift

    if not isinstance(params.object, LogObjectStack):
        return params
    phase = to_host(params.object.phase)
    flat = np.stack([_flattened(p, _outer_band(s, band_px)) for p, s in zip(phase, scanned)])
    lit_phase = np.where(scanned, flat, 0.0)
    reference = lit_phase.mean(axis=0)
    shifts = phase_correlation_shift(reference, lit_phase, upsample)
    shifts -= shifts.mean(axis=0)  # a common translation of all energies is not an ambiguity to remove
    # The translation itself on the device: its FFTs are 4x faster than scipy's on 2 CPU cores for the
    # small preset's prime-sized 281^2 grid, and the object stays where it is.
    device_shifts = jnp.asarray(shifts, jnp.float32)
    obj = LogObjectStack(*(_translate(image, device_shifts) for image in (params.object.log_amplitude, params.object.phase)))
    positions = params.positions
    # Shifting the object by +s moves its features to r + s; the beam must follow: drift + s.
    positions = ScanPositions(positions.nominal, jnp.asarray(to_host(positions.drift) + shifts, positions.drift.dtype), positions.jitter)
    return eqx.tree_at(lambda p: (p.object, p.positions), params, (obj, positions))


@jax.jit
def _translate(images, shifts):
    return jnp.real(fourier_translate(images, shifts)).astype(images.dtype)


# Fewest pixels of the outer band for fitting a phase plane (3 unknowns) through it.
_MIN_BAND_PIXELS = 10


def _outer_band(scanned, band_px: int):
    """The outer ``band_px`` pixels of a scanned region (Ny, Nx): the empty surroundings of the
    particle in a sensible scan, where the object's transmission is 1 and its phase 0."""
    from scipy import ndimage

    return scanned & ~ndimage.binary_erosion(scanned, iterations=band_px)


def _phase_plane(phase, band):
    """Least-squares plane ``c + a y + b x`` through ``phase`` (Ny, Nx) over ``band``: (c, a, b) in
    rad and rad per pixel (y, x in pixels); zeros where the band is too small to fit one."""
    if band.sum() < _MIN_BAND_PIXELS:
        return np.zeros(3)
    yy, xx = np.indices(phase.shape, dtype=np.float64)
    design = np.stack([np.ones(band.sum()), yy[band], xx[band]], axis=1)
    return np.linalg.lstsq(design, phase[band], rcond=None)[0]


def _flattened(phase, band):
    """``phase`` (Ny, Nx) minus its plane over ``band`` (:func:`_phase_plane`)."""
    c, a, b = _phase_plane(phase, band)
    yy, xx = np.indices(phase.shape, dtype=np.float64)
    return phase - (c + a * yy + b * xx)


def _band_px(problem: Problem) -> int:
    """Width (common pixels) of the outer band of the scanned region that fixes the gauge: a quarter frame."""
    return max(2, problem.geometry.frame_size // 4)


class _Stopper:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint can be written."""

    def __init__(self):
        self.requested = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _save_checkpoint(path: Path, state: dict, tree):
    tree = jax.tree.map(lambda x: to_host(x) if isinstance(x, jax.Array) else x, tree)
    if jax.process_index() != 0:  # several processes: one writes, all hold the same gathered values
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        header = json.dumps(state).encode()
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        eqx.tree_serialise_leaves(f, tree)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, template):
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            state = json.loads(f.read(size))
            tree = eqx.tree_deserialise_leaves(f, template)
    except Exception as error:  # equinox raises its own error types for a tree that does not match
        raise PtyjaxError(f"{path}: not a checkpoint of this run (another problem, configuration or ptyjax version: "
                          f"{error}); delete it, or run without resuming") from None
    return state, tree


def run_fit(problem: Problem, config: FitConfig, params: Reconstruction | None = None, checkpoint: str | Path | None = None,
            resume: bool = False, progress: bool = True, defocus_m=None, mesh=None) -> FitResult:
    """Fit ``problem``; returns a :class:`FitResult`. ``checkpoint``: file for checkpoints/resume.

    ``mesh``: a :func:`ptyjax.sharding.energy_mesh` to split every energy-indexed array over its
    devices (default: one device).
    """
    engine = Engine.create(problem, config)
    indices0, _ = epoch_batches(problem.point_valid, config.batch_size, config.seed, 0)
    steps_per_epoch = indices0.shape[0]
    optimizer = make_optimizer(config, steps_per_epoch)
    if params is None:
        params = initial_params(problem, config, defocus_m=0.0 if defocus_m is None else defocus_m)
    opt_state = optimizer.init(params)
    point_curvature = jnp.ones(problem.point_valid.shape + (2,), jnp.float32)
    history, times, start_epoch, step_scale = [], [], 0, 1.0
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint is not None and checkpoint.exists():
        state, (params, opt_state, point_curvature) = _load_checkpoint(checkpoint, (params, opt_state, point_curvature))
        history, times, start_epoch, step_scale = state["history"], state["times"], state["epoch"], state["step_scale"]
    place, place_tree = jnp.asarray, (lambda tree: tree)
    if mesh is not None:
        from functools import partial

        from . import sharding

        problem = sharding.shard_problem(problem, mesh)
        params, opt_state, point_curvature = sharding.shard_energy_tree((params, opt_state, point_curvature), mesh,
                                                                        problem.n_energies)
        place = partial(sharding.put_energy_sharded, mesh=mesh)
        # Host-side updates (registration) return unsharded arrays: put them back on the mesh.
        place_tree = partial(sharding.shard_energy_tree, mesh=mesh, n_energies=problem.n_energies)
    pixel_weight = problem.pixel_weight
    point_valid = place(problem.point_valid)
    # A streamed frame source reads the next minibatch in the background during each step.
    prefetch = getattr(problem.frames, "prefetch", None)
    bar = tqdm(total=config.epochs, initial=start_epoch, disable=not progress, desc="reconstruct", unit="epoch")
    good = (params, opt_state, point_curvature)
    epoch = start_epoch
    with _Stopper() as stopper:
        while epoch < config.epochs and not converged(history, config):
            t0 = time.perf_counter()
            indices, weights = epoch_batches(problem.point_valid, config.batch_size, config.seed, epoch)
            total = 0.0
            for b in range(indices.shape[0]):
                frames = problem.batch_frames(indices[b])
                if prefetch is not None and b + 1 < indices.shape[0]:
                    prefetch(indices[b + 1])
                elif prefetch is not None and epoch + 1 < config.epochs:
                    prefetch(epoch_batches(problem.point_valid, config.batch_size, config.seed, epoch + 1)[0][0])
                params, opt_state, point_curvature, data, prior = _step(
                    engine, optimizer, params, opt_state, point_curvature, frames, pixel_weight, point_valid,
                    place(indices[b]), place(problem.point_weights(indices[b], weights[b])), jnp.float32(step_scale),
                    jnp.float32(epoch >= config.prior_start_epoch), jnp.int32(position_mode(config, epoch)),
                )
                total += data + prior
                if stopper.requested is not None:
                    break
            if stopper.requested is not None:
                # The interrupted epoch is not counted: resuming repeats it from its start.
                params, opt_state, point_curvature = good
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, dict(epoch=epoch, history=history, times=times, step_scale=step_scale), good)
                raise KeyboardInterrupt(f"stopped by signal {stopper.requested} at epoch {epoch}")
            params = centre_probe(params, problem.geometry.scale)
            if config.refine_positions and config.register_every and epoch + 1 >= config.position_start_epoch \
                    and (epoch + 1 - config.position_start_epoch) % config.register_every == 0:
                params = place_tree(register_energies(params, _scanned(params, problem), _band_px(problem)))
            value = float(total) / indices.shape[0]
            if not np.isfinite(value):
                # Roll back to the last good state and retry the same epoch with half the step.
                params, opt_state, point_curvature = good
                step_scale *= 0.5
                if step_scale < 1e-3:
                    raise PtyjaxError("the loss stays non-finite even with 1/1000 of the step size; check the data and steps")
                bar.write(f"epoch {epoch}: non-finite loss, rolled back and halved the step (scale {step_scale:g})")
                continue
            good = (params, opt_state, point_curvature)
            history.append(value)
            times.append(time.perf_counter() - t0)
            epoch += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4g}", epoch_s=f"{times[-1]:.2f}")
            if checkpoint is not None and config.checkpoint_every and epoch % config.checkpoint_every == 0:
                _save_checkpoint(checkpoint, dict(epoch=epoch, history=history, times=times, step_scale=step_scale), good)
    if epoch < config.epochs:
        bar.write(f"converged after {epoch} epochs: the objective fell by less than {100 * config.converged_fall:g} % per "
                  f"epoch over the last {config.convergence_window}")
    bar.close()
    if checkpoint is not None:
        _save_checkpoint(checkpoint, dict(epoch=epoch, history=history, times=times, step_scale=step_scale), good)
    return FitResult(params, problem, config, history, times, defocus_m=None if defocus_m is None else np.asarray(defocus_m))


def converged(loss_history, config: FitConfig) -> bool:
    """Whether ``loss_history`` (the objective per epoch) meets ``config``'s stopping rule: over the last
    ``convergence_window`` epochs, all with the priors on, it fell by less than ``converged_fall`` per
    epoch (relative to its last value; a rising objective counts as not falling)."""
    window = config.convergence_window
    # The window's first value (the loss of epoch len - window - 1) must already include the priors.
    if config.converged_fall <= 0 or len(loss_history) - window - 1 < config.prior_start_epoch:
        return False
    fall, _ = loss_trend(loss_history, window)
    return bool(fall < config.converged_fall)


# Second stage of the defocus search: factors around the best coarse candidate (the coarse ones are
# a factor 1.5-2 apart, beam diameters of 0.5-3 scan steps).
DEFOCUS_REFINEMENT = (0.75, 0.87, 1.15, 1.3)


def choose_defocus(problem: Problem, config: FitConfig, edge_groups: dict, max_points: int = 48) -> np.ndarray:
    """Defocus (m) per energy, chosen per absorption edge by short trial reconstructions.

    For each edge, the lowest energy (pre-edge: the simplest object) is reconstructed for
    ``config.defocus_trial_epochs`` epochs from each candidate of
    :func:`ptyjax.initialise.defocus_candidates` (both signs), then from
    :data:`DEFOCUS_REFINEMENT` times the best one; the candidate whose final parameters fit that
    energy's frames best is used for every energy of that edge. The edges' trial energies run side by
    side in one problem (no priors couple them): one compilation and one run per candidate for all edges.
    """
    trial_config = dataclasses.replace(
        config, epochs=config.defocus_trial_epochs, refine_positions=False, priors={}, checkpoint_every=0, probe_start_epoch=1,
    )
    groups = list(edge_groups.values())
    if not groups:
        return np.zeros(problem.n_energies)
    sub = problem.subset([int(members[0]) for members in groups], max_points=max_points)
    candidates = []
    for i in range(sub.n_energies):
        step = initialise.mean_scan_step(sub.nominal_m[i][sub.point_valid[i]])
        lam = float(wavelength(sub.energies_ev[i]))
        candidates.append(initialise.defocus_candidates(
            sub.mean_patterns[i], sub.native_pixel_size[i], lam, step, sub.geometry.frame_size * sub.native_pixel_size[i]
        ))
    scores = [{} for _ in groups]

    def trial_round(lists):
        # Shorter lists repeat their first entry (already scored, or scored once more to no effect).
        for j in range(max(len(c) for c in lists)):
            distances = [c[j] if j < len(c) else c[0] for c in lists]
            losses_e = trial_losses(sub, trial_config, np.asarray(distances))
            for i, z in enumerate(distances):
                scores[i].setdefault(z, losses_e[i])

    trial_round(candidates)
    best = [min(sc, key=sc.get) for sc in scores]
    refinements = [[f * b for f in DEFOCUS_REFINEMENT] if b != 0 else [b] for b in best]
    if any(b != 0 for b in best):
        trial_round(refinements)
    defocus = np.zeros(problem.n_energies)
    for members, sc in zip(groups, scores):
        defocus[np.asarray(members)] = min(sc, key=sc.get)
    return defocus


def trial_losses(problem: Problem, config: FitConfig, defocus_m) -> np.ndarray:
    """Data term (E,) per energy over all points after a run of ``config`` from ``defocus_m`` (inf if not finite)."""
    params = run_fit(problem, config, progress=False, defocus_m=defocus_m).params
    engine = Engine.create(problem, config)
    indices, weights = epoch_batches(problem.point_valid, config.batch_size, config.seed, 0)
    total = 0.0
    for b in range(indices.shape[0]):
        weight = problem.pixel_weight * jnp.asarray(problem.point_weights(indices[b], weights[b]))[..., None, None]
        total = total + _energy_losses(engine, params, problem.batch_frames(indices[b]), weight, jnp.asarray(indices[b]))
    total = np.asarray(total, np.float64) / indices.shape[0]
    return np.where(np.isfinite(total), total, np.inf)


@eqx.filter_jit
def _energy_losses(engine: Engine, params, frames, weight, indices):
    return engine.energy_losses(params, frames, weight, indices)


def reconstruct(dataset, config: FitConfig | None = None, checkpoint=None, resume: bool = False, progress: bool = True,
                probe=None, stream: bool = False, devices: int | None = None) -> FitResult:
    """Reconstruct every energy of ``dataset`` (a :class:`ptyjax.data.Dataset`, or paths) jointly.

    The probe starts from the data (:func:`choose_defocus`) unless ``probe`` (E, M, N, N) or
    ``config.defocus_m`` is given. ``stream``: read frames from the files per minibatch instead of
    loading them (:mod:`ptyjax.streaming`). ``devices``: split the energies over this many devices
    (:mod:`ptyjax.sharding`; must divide the number of energies). Returns a :class:`FitResult`.
    """
    from .data import Dataset

    config = config or FitConfig()
    if not isinstance(dataset, Dataset):
        dataset = Dataset.open(dataset)
    problem = prepare(dataset, stream=stream)
    mesh = None
    if devices is not None:
        from .sharding import check_divisible, energy_mesh

        mesh = energy_mesh(devices)
        check_divisible(problem.n_energies, mesh)
    resuming = resume and checkpoint is not None and Path(checkpoint).exists()
    params, defocus = None, None
    if probe is not None:
        probe = np.asarray(probe, np.complex64)
        if probe.shape[0] != problem.n_energies or probe.shape[-2:] != problem.frames.shape[-2:]:
            raise PtyjaxError(f"probe of shape {probe.shape} does not fit {problem.n_energies} energies of "
                              f"{problem.frames.shape[-2]}x{problem.frames.shape[-1]} frames")
        params = initial_params(problem, config, probe=probe)
    elif resuming:
        defocus = 0.0  # only the shapes matter: the checkpoint replaces the values
    elif config.defocus_m is not None:
        defocus = config.defocus_m
    else:
        defocus = choose_defocus(problem, config, dataset.edges)
    return run_fit(problem, config, params=params, checkpoint=checkpoint, resume=resume, progress=progress, defocus_m=defocus,
                   mesh=mesh)


# Compiled once per problem: the scanned mask is needed at every registration (every few epochs)
# and when saving; run op by op it took 1.3-1.5 s on the small preset.
_illumination = eqx.filter_jit(illumination)


def _scanned(params: Reconstruction, problem: Problem, threshold: float = 0.1):
    indices = jnp.asarray(np.tile(np.arange(problem.point_valid.shape[1]), (problem.n_energies, 1)))
    illum = to_host(_illumination(params, problem.geometry, indices, problem.grid.shape))
    return illum > threshold * illum.max(axis=(-2, -1), keepdims=True)


def scanned_region(result: FitResult, threshold: float = 0.1):
    """(E, Ny, Nx) bool: pixels lit by at least ``threshold`` of each energy's peak illumination."""
    return _scanned(result.params, result.problem, threshold)


def fix_global_ambiguities(result: FitResult, band_px: int | None = None):
    """Object and probe with each energy's global complex scale and phase ramp fixed.

    Each energy's reconstruction is free up to a complex constant and a linear phase ramp shared
    (oppositely) by object and probe: ``O e^{i q.r}``, ``P e^{-i q.r}`` give the same intensities.
    ptyjax fixes both so that the outer band of the scanned area (``band_px`` wide, default a quarter
    frame: the empty surroundings of the particle in a sensible scan) has transmission 1, phase 0
    and no ramp, at every energy. Pixels never lit are set to 1. Returns (object, probe, scanned).
    """
    problem = result.problem
    obj, probe = result.object().copy(), result.probe().copy()
    scanned = scanned_region(result)
    band_px = band_px or _band_px(problem)
    yy, xx = np.indices(obj.shape[-2:], dtype=np.float64)
    n = probe.shape[-1]
    local = np.arange(n) - n // 2
    for e in range(obj.shape[0]):
        band = _outer_band(scanned[e], band_px)
        if band.sum() < _MIN_BAND_PIXELS:
            continue
        values = obj[e][band]
        reference = np.median(values.real) + 1j * np.median(values.imag)
        # Phase ramp (rad per common pixel): the plane through the band's phase relative to the reference.
        _, ramp_y, ramp_x = _phase_plane(np.angle(obj[e] / reference), band)
        corrected = obj[e] * np.exp(-1j * (ramp_y * yy + ramp_x * xx))
        values = corrected[band]
        reference = np.median(values.real) + 1j * np.median(values.imag)
        obj[e] = np.where(scanned[e], corrected / reference, 1.0)
        # The probe takes the opposite ramp on its native grid (its pixel = scale common pixels).
        s = float(problem.geometry.scale[e])
        probe_ramp = np.exp(1j * s * (ramp_y * local[:, None] + ramp_x * local[None, :]))
        probe[e] = probe[e] * probe_ramp * reference
    return obj, probe, scanned


def save_reconstruction(path, result: FitResult, extra_config: dict | None = None):
    """Write the ``/reconstruction`` group of the results file ``path`` (ambiguities fixed by
    :func:`fix_global_ambiguities`)."""
    from . import results

    problem = result.problem
    obj, probe, scanned = fix_global_ambiguities(result)
    positions = result.positions_m()
    positions = np.where(problem.point_valid[..., None], positions, np.nan)
    datasets = {
        "energy": (problem.energies_ev, "eV"),
        "object": (obj.astype(np.complex64), "1"),
        "scanned": (scanned, ""),
        "pixel_size": (problem.grid.pixel_size, "m"),
        "origin": (np.asarray(problem.grid.origin), "m"),
        "probe": (probe.astype(np.complex64), "sqrt(photons)"),
        "probe_pixel_size": (problem.native_pixel_size, "m"),
        "positions": (positions, "m"),
        "nominal_positions": (np.where(problem.point_valid[..., None], problem.nominal_m, np.nan), "m"),
        "drift": (to_host(result.params.positions.drift) * problem.grid.pixel_size, "m"),
        "loss": (np.asarray(result.loss_history, np.float64), "1"),
        "epoch_time": (np.asarray(result.epoch_times, np.float64), "s"),
    }
    extras = getattr(result.params.object, "extras", None)
    if extras is not None:  # e.g. chemical-basis amounts and spectra
        datasets.update(extras())
    if result.defocus_m is not None:
        datasets["initial_defocus"] = (np.broadcast_to(result.defocus_m, (problem.n_energies,)), "m")
    config = dict(result.config.to_dict(), **(extra_config or {}))
    if jax.process_index() != 0:  # several processes: all gathered the arrays above, one writes
        return None
    return results.write_group(path, "reconstruction", datasets, config=config)
