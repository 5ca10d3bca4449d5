"""Synthetic multi-energy ptychography-XAFS datasets of a LiNi0.5Mn1.5O4 (LNMO) particle, with ground truth.

The phantom is continuous: every quantity is a function of the (y, x) position in metres, so each
energy is sampled exactly on its own native grid ``dx(E) = lambda z / (N p)`` at the true (sub-pixel)
probe positions. A probe window centred on position ``r`` has pixel ``(i, j)`` at
``r + ((i, j) - N // 2) dx`` (the optical axis at pixel ``N // 2``, as in :mod:`ptyjax.propagation`).

The particle is a rounded body (ellipsoidal thickness profile) with an irregular outline and three
phases, each column of the projection belonging to one phase (smooth transitions of ~10 nm):

1. ``spinel``: ordered spinel core LiNi0.5Mn1.5O4 (Mn4+, Ni2+);
2. ``disordered``: oxygen-deficient disordered spinel rim with Mn3+ (Mn valence ~3.8);
3. ``rocksalt``: Ni-rich rock-salt surface patches (Li_xNi_{1-x}O-like, with Mn3+).

Edge energies follow :data:`ptyjax.physics.REFERENCE_EDGE_ENERGIES` by valence, plus smooth random
fields (+-0.1 eV); the Ni/Mn ratio varies smoothly (+-5 %) within each phase.
"""

from __future__ import annotations

import dataclasses
from functools import partial
import json
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from . import __version__, physics
from .cxi import write_cxi
from .errors import PtyjaxError
from .geometry import ObjectGrid, real_space_pixel_size
from .propagation import farfield, fresnel_propagate, intensity, to_sample_plane

EDGE_ELEMENTS = ("Mn", "Ni")


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
    """One phase of the particle: composition, mass density (g/cm^3), formal valences and white lines
    (heights in units of the f'' edge jump, see :class:`ptyjax.physics.EdgeModel`)."""

    name: str
    formula: str
    density_g_cm3: float
    mn_valence: float
    ni_valence: float
    mn_white_line: float
    ni_white_line: float


# Illustrative phases of LNMO cathodes (e.g. Kunduraci & Amatucci, J. Electrochem. Soc. 153, A1345 (2006) on
# O-deficient disordered spinel; rock-salt Li_xNi_{1-x}O impurity). Densities: spinel 4.45 g/cm^3 (X-ray
# density), rock salt between NiO (6.67) and Li-rich Li_xNi_{1-x}O. Charge balance:
# LiNi0.45Mn1.55O3.9: 1 + 0.9 + 1.55 v = 7.8 -> v(Mn) = 3.81; Li0.2Ni0.6Mn0.2O: Ni2.33+ holes (Li doping).
LNMO_PHASES = (
    PhaseSpec("spinel", "LiNi0.5Mn1.5O4", 4.45, mn_valence=4.0, ni_valence=2.0, mn_white_line=0.6, ni_white_line=0.9),
    PhaseSpec("disordered", "LiNi0.45Mn1.55O3.9", 4.40, mn_valence=3.81, ni_valence=2.0, mn_white_line=0.45, ni_white_line=0.8),
    PhaseSpec("rocksalt", "Li0.2Ni0.6Mn0.2O", 6.0, mn_valence=3.0, ni_valence=2.33, mn_white_line=0.3, ni_white_line=1.3),
)


def edge_scan(pre, edge_start, edge_stop, edge_step, post):
    """Energies (eV) of one edge scan: explicit pre-edge points, a regular edge region, post-edge points."""
    edge = np.arange(edge_start, edge_stop + edge_step / 2, edge_step)
    return tuple(float(e) for e in np.concatenate([pre, edge, post]))


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a synthetic dataset (SI units; energies in eV)."""

    name: str
    energies_ev: tuple[float, ...]
    frame_size: int  # detector pixels N (square frames)
    n_positions: int
    particle_diameter_m: float
    thickness_m: float  # maximum thickness of the body (at its centre)
    scan_radius_m: float  # nominal scan covers a disk of this radius around the particle centre
    detector_distance_m: float
    detector_pixel_m: float
    outer_zone_width_m: float  # zone plate: numerical aperture lambda / (2 dr)
    zone_plate_diameter_m: float  # with dr sets the focal length f = D dr / lambda (chromatic)
    central_stop_fraction: float  # central stop diameter / zone plate diameter
    defocus_m: float  # sample downstream of the focus at each edge's focus energy
    focus_energies_ev: tuple[float, ...] = (6552.0, 8344.0)  # zone plate refocused per edge (moved in z)
    fluence: float = 3e6  # photons per frame (all modes)
    # Exit waves are computed on a grid this many times finer than the native pixel and only the
    # detector's window of their far field is kept (what a detector of finite extent records).
    # 1 point-samples the transmission on the native grid, which aliases the particle's sharp outline.
    oversample: int = 1
    poisson: bool = True
    n_modes: int = 1
    mode_powers: tuple[float, ...] = (0.85, 0.10, 0.05)
    scan: str = "spiral"
    drift_m: float = 30e-9  # amplitude of the smooth per-energy drift
    jitter_m: float = 15e-9  # RMS per-point position error, per axis
    n_dead_pixels: int = 3
    n_hot_pixels: int = 2
    hot_pixel_counts: float = 2.0**20  # a hot pixel reads about this many counts
    edge_field_ev: float = 0.1  # amplitude of the smooth edge-energy variation within a phase
    composition_field: float = 0.05  # relative amplitude of the smooth Ni/Mn variation
    rim_width_m: float = 150e-9
    phases: tuple[PhaseSpec, ...] = LNMO_PHASES
    seed: int = 0

    def replace(self, **changes) -> "SimulationConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _mn_ni_energies(mn, ni):
    return tuple(sorted(mn + ni))


PRESETS = {
    # Tests: 32x32 frames, 36 positions, per edge two pre-edge, three edge and one post-edge energy
    # (the fewest with which an edge can be fitted); dx 40-52 nm.
    "tiny": SimulationConfig(
        name="tiny",
        energies_ev=_mn_ni_energies(
            (6520.0, 6535.0, 6549.0, 6551.0, 6553.0, 6575.0), (8320.0, 8330.0, 8343.0, 8344.5, 8346.0, 8370.0)
        ),
        frame_size=32,
        n_positions=36,
        particle_diameter_m=1.5e-6,
        thickness_m=1.0e-6,
        scan_radius_m=0.9e-6,
        detector_distance_m=0.65,
        detector_pixel_m=75e-6,
        outer_zone_width_m=80e-9,
        zone_plate_diameter_m=15e-6,
        central_stop_fraction=0.4,
        defocus_m=270e-6,
        rim_width_m=120e-9,
    ),
    # Demo: 64x64 frames, 100 positions, 30 energies (1 eV steps across both edges); dx 27-35 nm.
    "small": SimulationConfig(
        name="small",
        energies_ev=_mn_ni_energies(
            edge_scan((6520.0, 6535.0, 6543.0), 6546.0, 6556.0, 1.0, (6560.0, 6575.0, 6600.0)),
            edge_scan((8320.0, 8335.0, 8340.0), 8342.0, 8348.0, 1.0, (8352.0, 8365.0, 8390.0)),
        ),
        frame_size=64,
        n_positions=100,
        particle_diameter_m=2.0e-6,
        thickness_m=1.3e-6,
        scan_radius_m=1.2e-6,
        detector_distance_m=0.87,
        detector_pixel_m=75e-6,
        outer_zone_width_m=54e-9,
        zone_plate_diameter_m=15e-6,
        central_stop_fraction=0.4,
        defocus_m=220e-6,
    ),
    # Benchmarks: 128x128 frames, 400 positions, 62 energies (0.5 eV steps at the edges); dx 20-26 nm.
    "medium": SimulationConfig(
        name="medium",
        energies_ev=_mn_ni_energies(
            edge_scan((6500.0, 6515.0, 6530.0, 6538.0, 6542.0), 6544.0, 6558.0, 0.5, (6562.0, 6570.0, 6585.0, 6610.0)),
            edge_scan((8300.0, 8320.0, 8334.0, 8338.0), 8340.0, 8350.0, 0.5, (8355.0, 8370.0, 8400.0)),
        ),
        frame_size=128,
        n_positions=400,
        particle_diameter_m=2.5e-6,
        thickness_m=1.6e-6,
        scan_radius_m=1.5e-6,
        detector_distance_m=1.29,
        detector_pixel_m=75e-6,
        outer_zone_width_m=40e-9,
        zone_plate_diameter_m=15e-6,
        central_stop_fraction=0.4,
        defocus_m=190e-6,
        n_modes=3,
    ),
}


# ---------------------------------------------------------------------------------------------------
# Phantom: a continuous particle
# ---------------------------------------------------------------------------------------------------

# Width (m) of the smooth transitions between phases: below one pixel, so phase boundaries stay sharp.
_TRANSITION_M = 10e-9
# Edge-energy offsets (eV) tabulated per phase and element: the fields stay well inside +-0.5 eV.
_SHIFT_GRID_EV = np.linspace(-0.5, 0.5, 101)


@dataclasses.dataclass(frozen=True)
class Phantom:
    """Random parameters of one particle (lengths in m, angles in rad); evaluate with :func:`phantom_maps`."""

    config: SimulationConfig
    outline: np.ndarray  # (K, 3): harmonic order, relative amplitude, phase of the radius perturbation
    rim: np.ndarray  # (K, 3): same for the rim width
    patches: np.ndarray  # (P, 3): centre y, centre x, radius of rock-salt patches
    fields: dict  # name -> (W, 4): wavevector y, x (1/m), phase, weight of a smooth random field


def _random_harmonics(rng, orders, amplitude):
    amps = amplitude * rng.uniform(0.3, 1.0, len(orders)) / np.arange(1, len(orders) + 1)
    return np.stack([np.asarray(orders, float), amps, rng.uniform(0, 2 * np.pi, len(orders))], axis=1)


def _random_field(rng, length_m, n_waves=6):
    """Plane waves with wavelengths 1-3 ``length_m`` and weights summing to 1 (so |field| <= 1)."""
    k = rng.uniform(1 / 3, 1.0, n_waves) / length_m
    angle = rng.uniform(0, 2 * np.pi, n_waves)
    weight = rng.uniform(0.5, 1.0, n_waves)
    return np.stack([k * np.sin(angle), k * np.cos(angle), rng.uniform(0, 2 * np.pi, n_waves), weight / weight.sum()], 1)


def random_streams(config: SimulationConfig) -> dict[str, np.random.Generator]:
    """Independent generators from ``config.seed`` for the phantom, probe modes, scan errors and noise,
    so that e.g. switching off the noise leaves the phantom, probe and positions unchanged."""
    names = ("phantom", "probe", "scan", "noise")
    return dict(zip(names, (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(len(names)))))


def make_phantom(config: SimulationConfig) -> Phantom:
    """Draw the particle of ``config.seed``: outline, rim, rock-salt patches and smooth fields."""
    rng = random_streams(config)["phantom"]
    radius = config.particle_diameter_m / 2
    # Low-order outline perturbations (orders 2-5, up to ~12 %): an irregular, smooth body.
    outline = _random_harmonics(rng, (2, 3, 4, 5), 0.12)
    rim = _random_harmonics(rng, (1, 2, 3), 0.5)
    n_patches = 3
    angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * (np.arange(n_patches) + rng.uniform(-0.15, 0.15, n_patches)) / n_patches
    r_outline = radius * _harmonic_sum(outline, angle)
    centre = 0.9 * r_outline  # patches sit at the surface
    patch_radius = radius * rng.uniform(0.18, 0.28, n_patches)
    patches = np.stack([centre * np.sin(angle), centre * np.cos(angle), patch_radius], axis=1)
    fields = {name: _random_field(rng, radius) for name in ("edge_Mn", "edge_Ni", "composition")}
    return Phantom(config, outline, rim, patches, fields)


def _harmonic_sum(harmonics, angle):
    order, amp, phase = harmonics.T
    return 1.0 + np.sum(amp * np.cos(order * np.asarray(angle)[..., None] + phase), axis=-1)


def _field(params, y, x):
    ky, kx, phase, weight = params.T
    return np.sum(weight * np.cos(2 * np.pi * (ky * y[..., None] + kx * x[..., None]) + phase), axis=-1)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def phantom_maps(phantom: Phantom, y, x) -> dict:
    """Ground-truth maps at points ``(y, x)`` (m, any shape): ``thickness`` (m), ``weights`` (3, ...) of
    the phases, ``edge_shift_Mn``/``edge_shift_Ni`` (eV, within-phase field), ``composition`` (relative
    Ni excess, moves Ni <-> Mn at constant transition-metal content)."""
    cfg = phantom.config
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    r, angle = np.hypot(y, x), np.arctan2(y, x)
    r_outline = cfg.particle_diameter_m / 2 * _harmonic_sum(phantom.outline, angle)
    rho = r / r_outline
    thickness = cfg.thickness_m * np.sqrt(np.clip(1.0 - rho**2, 0.0, None))  # ellipsoidal, rounded body
    depth = r_outline - r  # distance inwards from the outline, along the radius
    rim_width = cfg.rim_width_m * np.clip(_harmonic_sum(phantom.rim, angle), 0.2, None)
    in_rim = _sigmoid((rim_width - depth) / _TRANSITION_M)
    patch_distance = np.hypot(y[..., None] - phantom.patches[:, 0], x[..., None] - phantom.patches[:, 1])
    in_patch = np.max(_sigmoid((phantom.patches[:, 2] - patch_distance) / _TRANSITION_M), axis=-1)
    weights = np.stack([(1 - in_patch) * (1 - in_rim), (1 - in_patch) * in_rim, in_patch])
    return {
        "thickness": thickness,
        "weights": weights,
        "edge_shift_Mn": cfg.edge_field_ev * _field(phantom.fields["edge_Mn"], y, x),
        "edge_shift_Ni": cfg.edge_field_ev * _field(phantom.fields["edge_Ni"], y, x),
        "composition": cfg.composition_field * _field(phantom.fields["composition"], y, x),
    }


def phase_edge_models(phase: PhaseSpec) -> dict[str, physics.EdgeModel]:
    """Mn and Ni K-edge models of a phase, edge energies from valence (REFERENCE_EDGE_ENERGIES)."""
    return {
        "Mn": physics.EdgeModel("Mn", edge_energy_ev=float(physics.edge_energy_for_valence("Mn", phase.mn_valence)),
                                white_line_height=phase.mn_white_line),
        "Ni": physics.EdgeModel("Ni", edge_energy_ev=float(physics.edge_energy_for_valence("Ni", phase.ni_valence)),
                                white_line_height=phase.ni_white_line),
    }


class _Optics:
    """Per-energy scattering factors of every phase, tabulated against the local edge shift."""

    def __init__(self, phantom: Phantom):
        self.phantom = phantom
        self._cache = {}

    def factors(self, energy_ev):
        """``[(densities, f1, f2)]`` per phase; Mn/Ni factors are (len(_SHIFT_GRID_EV),) arrays over the shift."""
        if energy_ev not in self._cache:
            out = []
            for phase in self.phantom.config.phases:
                densities = physics.atomic_densities(phase.formula, phase.density_g_cm3)
                f1, f2 = {}, {}
                for element in densities:
                    if element in EDGE_ELEMENTS:
                        # A shifted edge is a translated spectrum: f(E; E0 + s) = f(E - s; E0).
                        model = phase_edge_models(phase)[element]
                        f1[element], f2[element] = physics.edge_model_f1_f2(model, energy_ev - _SHIFT_GRID_EV)
                    else:
                        f1[element], f2[element] = (float(v) for v in physics.tabulated_f1_f2(element, energy_ev))
                out.append((densities, f1, f2))
            self._cache[energy_ev] = out
        return self._cache[energy_ev]

    def delta_beta(self, maps, energy_ev):
        """``(delta, beta)`` at the points of ``maps`` (from :func:`phantom_maps`)."""
        delta = beta = 0.0
        for weight, (densities, f1, f2) in zip(maps["weights"], self.factors(energy_ev)):
            local = _local_densities(densities, maps["composition"])
            g1, g2 = {}, {}
            for element in densities:
                if element in EDGE_ELEMENTS:
                    shift = maps[f"edge_shift_{element}"]
                    g1[element] = np.interp(shift, _SHIFT_GRID_EV, f1[element])
                    g2[element] = np.interp(shift, _SHIFT_GRID_EV, f2[element])
                else:
                    g1[element], g2[element] = f1[element], f2[element]
            d, b = physics.delta_beta_from_densities(local, g1, g2, energy_ev)
            delta, beta = delta + weight * d, beta + weight * b
        return delta, beta


def _local_densities(densities, composition):
    """Move ``composition * n_Ni`` atoms from Mn to Ni sites (constant transition-metal content)."""
    local = dict(densities)
    moved = composition * densities.get("Ni", 0.0)
    local["Ni"] = densities.get("Ni", 0.0) + moved
    local["Mn"] = densities.get("Mn", 0.0) - moved
    return local


def phantom_transmission(phantom: Phantom, energy_ev: float, y, x, optics: _Optics | None = None):
    """Complex transmission of the particle at photon energy ``energy_ev`` (eV) at points ``(y, x)`` (m)."""
    optics = optics or _Optics(phantom)
    maps = phantom_maps(phantom, y, x)
    delta, beta = optics.delta_beta(maps, float(energy_ev))
    return physics.transmission(delta, beta, maps["thickness"], energy_ev)


# ---------------------------------------------------------------------------------------------------
# Beam, scan, detector
# ---------------------------------------------------------------------------------------------------


def native_pixel_sizes(config: SimulationConfig):
    """Real-space pixel size (m) of each energy: lambda z / (N p)."""
    return real_space_pixel_size(np.asarray(config.energies_ev), config.detector_distance_m,
                                 config.detector_pixel_m, config.frame_size)


def defocus_at(config: SimulationConfig, energy_ev: float) -> float:
    """Distance (m) of the sample downstream of the zone-plate focus at ``energy_ev``.

    The zone plate (focal length ``f = D dr E / hc``, proportional to E) is placed so that the sample is
    ``defocus_m`` past the focus at the nearest of ``focus_energies_ev``; at other energies the focus moves.
    """
    focal = lambda e: config.zone_plate_diameter_m * config.outer_zone_width_m / physics.wavelength(e)  # noqa: E731
    reference = min(config.focus_energies_ev, key=lambda e: abs(e - energy_ev))
    return float(config.defocus_m + focal(reference) - focal(energy_ev))


def make_probe(config: SimulationConfig, energy_ev: float, pixel_size_m: float, rng: np.random.Generator):
    """Probe modes (modes, N, N) complex at the sample on the native grid, ``sum |P|^2 = fluence``.

    Focused beam of a zone plate with central stop (an annular pupil of numerical aperture
    lambda / (2 dr)), propagated by the defocus. Extra modes come from source points displaced across
    the pupil (partial coherence), orthogonalised and weighted by ``mode_powers``.
    """
    n = config.frame_size
    wavelength = float(physics.wavelength(energy_ev))
    # Pupil radius on the detector in pixels: NA z / p = (lambda / 2 dr) (N dx / lambda) = N dx / (2 dr).
    radius_px = n * pixel_size_m / (2 * config.outer_zone_width_m)
    if radius_px >= n / 2:
        raise PtyjaxError(f"zone-plate pupil ({radius_px:.1f} px) does not fit the {n}-pixel detector at {energy_ev} eV")
    u = np.arange(n) - n // 2
    uy, ux = np.meshgrid(u, u, indexing="ij")
    r = np.hypot(uy, ux)
    # Anti-aliased annulus (edges ramp over one pixel): less ringing of the probe than a hard edge.
    outer = np.clip(radius_px - r + 0.5, 0.0, 1.0)
    stop = np.clip(r - config.central_stop_fraction * radius_px + 0.5, 0.0, 1.0)
    pupil = (outer * stop).astype(np.complex128)
    modes = []
    for m in range(config.n_modes):
        # Mode m: a displaced source point, i.e. a linear phase of ~0.3 waves per pupil radius across it.
        tilt = np.zeros(2) if m == 0 else rng.normal(0, 0.3, 2)
        modes.append(pupil * np.exp(2j * np.pi * (tilt[0] * uy + tilt[1] * ux) / radius_px))
    focus = np.asarray(to_sample_plane(jnp.asarray(np.stack(modes))))
    probe = np.asarray(fresnel_propagate(jnp.asarray(focus), pixel_size_m, wavelength, defocus_at(config, energy_ev)))
    q, _ = np.linalg.qr(probe.reshape(config.n_modes, -1).T)  # orthonormal, first mode unchanged in direction
    q = q.T * np.exp(1j * np.angle(np.vdot(q[:, 0], probe[0].ravel())))  # keep mode 0's global phase
    powers = np.asarray(config.mode_powers[: config.n_modes], dtype=float)
    powers = powers / powers.sum() if config.n_modes > 1 else np.ones(1)
    return (q * np.sqrt(powers * config.fluence)[:, None]).reshape(config.n_modes, n, n).astype(np.complex64)


def nominal_positions(config: SimulationConfig):
    """Nominal probe positions (Npos, 2), (y, x) in metres, centred on the particle."""
    if config.scan == "spiral":
        # Fermat spiral (Huang et al., Opt. Express 22, 12634 (2014)): r = c sqrt(k), golden-angle steps.
        k = np.arange(config.n_positions)
        r = config.scan_radius_m * np.sqrt((k + 0.5) / config.n_positions)
        angle = k * np.pi * (3.0 - np.sqrt(5.0))
        return np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1)
    if config.scan == "raster":
        side = int(round(np.sqrt(config.n_positions)))
        axis = np.linspace(-config.scan_radius_m, config.scan_radius_m, side)
        yy, xx = np.meshgrid(axis, axis, indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1)
    raise PtyjaxError(f"unknown scan pattern {config.scan!r} (use 'spiral' or 'raster')")


def position_errors(config: SimulationConfig, n_positions: int, rng: np.random.Generator):
    """Drift (E, 2), smooth in energy index, and jitter (E, Npos, 2), both in metres."""
    n_e = len(config.energies_ev)
    t = np.linspace(0.0, 1.0, n_e)[:, None, None]
    # Three low-order harmonics per axis, weights summing to ~1: a slow wander of amplitude drift_m.
    coef = rng.normal(0, 1, (1, 3, 2)) / np.sqrt(3)
    phase = rng.uniform(0, 2 * np.pi, (1, 3, 2))
    order = np.arange(1, 4)[None, :, None]
    drift = config.drift_m * np.sum(coef * np.cos(np.pi * order * t / 2 + phase), axis=1)
    jitter = rng.normal(0, config.jitter_m, (n_e, n_positions, 2))
    return drift, jitter


def detector_mask(config: SimulationConfig, rng: np.random.Generator):
    """``(mask, dead, hot)``: ``mask`` (N, N) uint8 non-zero at bad pixels; dead/hot flat pixel indices."""
    n = config.frame_size
    bad = rng.choice(n * n, config.n_dead_pixels + config.n_hot_pixels, replace=False)
    mask = np.zeros(n * n, np.uint8)
    mask[bad] = 1
    return mask.reshape(n, n), bad[: config.n_dead_pixels], bad[config.n_dead_pixels :]


def patch_coordinates(positions_m, pixel_size_m: float, n: int):
    """(y, x) coordinates (Npos, N, N) in metres of the pixels of probe windows centred on ``positions_m``."""
    offsets = (np.arange(n) - n // 2) * pixel_size_m
    pos = np.asarray(positions_m)
    y = pos[:, 0, None, None] + offsets[None, :, None] + 0 * offsets[None, None, :]
    x = pos[:, 1, None, None] + offsets[None, None, :] + 0 * offsets[None, :, None]
    return y, x


def expected_frames(transmission, probe, positions_m, pixel_size_m: float, oversample: int = 1):
    """Expected detector counts (Npos, N, N) float64 of ``probe`` (M, N, N; native grid, pixel
    ``pixel_size_m`` m) on an object ``transmission(y, x)`` (complex, at points in m) at ``positions_m``
    (Npos, 2) m.

    With ``oversample = s > 1`` the transmission is sampled on an ``s``-times finer grid, the probe
    interpolated onto it exactly (it is band-limited: its spectrum lies inside the detector window) and
    the far field of the fine exit waves cropped to the detector's ``N x N`` window, so the frames hold
    no aliased copies of the object's spectrum from beyond the detector's extent.
    """
    s, n = int(oversample), probe.shape[-1]
    if s < 1 or s != oversample:
        raise PtyjaxError(f"oversample must be a positive integer, got {oversample}")
    fine = n * s
    window = slice(fine // 2 - n // 2, fine // 2 - n // 2 + n)  # keeps the zero frequency at N // 2
    spectrum = np.zeros(probe.shape[:-2] + (fine, fine), np.complex64)
    spectrum[..., window, window] = np.asarray(farfield(jnp.asarray(probe)))
    fine_probe = to_sample_plane(jnp.asarray(spectrum))  # unitary: sum |P|^2 unchanged
    out = []
    chunk = max(1, 2**22 // fine**2)  # fine patches of a chunk: ~32 MB complex64
    for start in range(0, len(positions_m), chunk):
        y, x = patch_coordinates(positions_m[start:start + chunk], pixel_size_m / s, fine)
        patches = np.broadcast_to(np.asarray(transmission(y, x), np.complex64), y.shape)
        out.append(np.asarray(_cropped_frames(fine_probe, jnp.asarray(patches), n), dtype=np.float64))
    return np.concatenate(out)


@partial(jax.jit, static_argnums=2)
def _cropped_frames(probe, patches, n: int):
    fine = patches.shape[-1]
    lo = fine // 2 - n // 2
    waves = farfield(probe[None, :, :, :] * patches[:, None, :, :])[..., lo:lo + n, lo:lo + n]
    return intensity(waves)


# ---------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------


def cxi_name(energy_ev: float) -> str:
    """File name of one energy's scan, e.g. ``scan_e006539.5eV.cxi`` (sorts by energy)."""
    return f"scan_e{energy_ev:08.1f}eV.cxi"


def simulate(config: SimulationConfig, out_dir) -> Path:
    """Write one CXI file per energy and ``truth.h5`` into ``out_dir``; return the truth file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = random_streams(config)
    rng_probe, rng_scan, rng_noise = streams["probe"], streams["scan"], streams["noise"]
    phantom = make_phantom(config)
    optics = _Optics(phantom)
    energies = np.asarray(config.energies_ev, dtype=np.float64)
    if np.any(np.diff(energies) <= 0):
        raise PtyjaxError("energies_ev must be strictly increasing")
    dx = native_pixel_sizes(config)
    nominal = nominal_positions(config)
    drift, jitter = position_errors(config, len(nominal), rng_scan)
    positions = nominal[None] + drift[:, None, :] + jitter
    mask, dead, hot = detector_mask(config, rng_noise)
    n = config.frame_size
    probes = []
    for i, energy in enumerate(energies):
        probe = make_probe(config, energy, dx[i], rng_probe)
        frames = expected_frames(partial(phantom_transmission, phantom, energy, optics=optics), probe, positions[i],
                                 dx[i], config.oversample)
        counts = rng_noise.poisson(frames) if config.poisson else frames
        counts = counts.reshape(len(nominal), -1)
        counts[:, dead] = 0
        counts[:, hot] = rng_noise.poisson(config.hot_pixel_counts, (len(nominal), len(hot)))
        counts = counts.reshape(-1, n, n).astype(np.int32 if config.poisson else np.float32)
        write_cxi(out_dir / cxi_name(energy), counts, nominal, energy, config.detector_distance_m,
                  config.detector_pixel_m, mask=mask)
        probes.append(probe)
    return _write_truth(out_dir / "truth.h5", config, phantom, optics, energies, dx, np.stack(probes),
                        positions, nominal, drift, jitter, mask)


def _write_truth(path, config, phantom, optics, energies, dx, probes, positions, nominal, drift, jitter, mask):
    n = config.frame_size
    grid = ObjectGrid.covering(positions, (n * dx.max(), n * dx.max()), pixel_size=float(dx.min()))
    gy, gx = grid.coordinates()
    y, x = np.meshgrid(gy, gx, indexing="ij")
    maps = phantom_maps(phantom, y, x)
    inside = maps["thickness"] > 0
    weights = maps["weights"]
    label = np.where(inside, 1 + np.argmax(weights, axis=0), 0)
    models = [phase_edge_models(p) for p in config.phases]
    truth = {
        "energy": (energies, "eV"),
        "pixel_size": (grid.pixel_size, "m"),
        "origin": (np.asarray(grid.origin), "m"),
        "native_pixel_size": (dx, "m"),
        "probe": (probes, "sqrt(photons)"),
        "positions": (positions, "m"),
        "nominal_positions": (nominal, "m"),
        "drift": (drift, "m"),
        "jitter": (jitter, "m"),
        "defocus": (np.array([defocus_at(config, e) for e in energies]), "m"),
        "detector_mask": (mask, ""),
        "phase_label": (label.astype(np.int32), ""),
        "thickness": (maps["thickness"], "m"),
    }
    nan = np.full(label.shape, np.nan)
    for element in EDGE_ELEMENTS:
        e0 = sum(w * m[element].edge_energy_ev for w, m in zip(weights, models)) + maps[f"edge_shift_{element}"]
        truth[f"edge_energy_{element}"] = (np.where(inside, e0, nan), "eV")
    n_ni = n_mn = n_electrons = 0.0
    for w, phase in zip(weights, config.phases):
        local = _local_densities(physics.atomic_densities(phase.formula, phase.density_g_cm3), maps["composition"])
        n_ni, n_mn = n_ni + w * local["Ni"], n_mn + w * local["Mn"]
        n_electrons = n_electrons + w * sum(local[el] * _atomic_number(el) for el in local)
    truth["ni_mn_ratio"] = (np.where(inside, n_ni / n_mn, nan), "1")
    truth["electron_density_areal"] = (n_electrons * maps["thickness"], "electrons/m^2")
    od, phase_map, obj = [], [], []
    for energy in energies:
        delta, beta = optics.delta_beta(maps, float(energy))
        k = physics.wavenumber(energy)
        od.append(2 * k * beta * maps["thickness"])  # unwrapped truth, not from the complex object
        phase_map.append(-k * delta * maps["thickness"])
        obj.append(physics.transmission(delta, beta, maps["thickness"], energy))
    truth["object"] = (np.stack(obj).astype(np.complex64), "1")
    truth["optical_density"] = (np.stack(od).astype(np.float32), "1")
    truth["phase"] = (np.stack(phase_map).astype(np.float32), "rad")
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["ptyjax_version"] = __version__
        f.attrs["config"] = json.dumps(config.to_dict())
        f.attrs["phase_names"] = json.dumps(["outside"] + [p.name for p in config.phases])
        f.attrs["edge_energies"] = json.dumps({p.name: {el: m.edge_energy_ev for el, m in mdl.items()} for p, mdl in zip(config.phases, models)})
        for name, (value, units) in truth.items():
            f.create_dataset(name, data=np.asarray(value))
            f[name].attrs["units"] = units
        f.create_dataset("phase_names", data=np.array(["outside"] + [p.name for p in config.phases], dtype=h5py.string_dtype()))
        f["phase_names"].attrs["units"] = ""
    tmp.replace(path)
    return path


def _atomic_number(element):
    import xraydb

    return xraydb.atomic_number(element)


def load_truth(path) -> dict:
    """The ground truth written by :func:`simulate`: arrays by name, plus ``config`` (dict),
    ``phase_names`` (list) and ``edge_energies`` ({phase: {element: eV}})."""
    from .errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(path, "truth file does not exist")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("config", "edge_energies") if k not in f.attrs] + [k for k in ("phase_names",) if k not in f]
        if missing:
            raise DataError(path, f"is not a ptyjax simulator truth file (no {', '.join(missing)})")
        out = {name: f[name][()] for name in f if name != "phase_names" and isinstance(f[name], h5py.Dataset)}
        out["phase_names"] = list(f["phase_names"].asstr()[()])
        out["config"] = json.loads(f.attrs["config"])
        out["edge_energies"] = json.loads(f.attrs["edge_energies"])
    return out


def config_from_dict(values: dict) -> SimulationConfig:
    """Rebuild a :class:`SimulationConfig` from :meth:`SimulationConfig.to_dict` (e.g. ``load_truth()["config"]``)."""
    values = dict(values)
    values["phases"] = tuple(PhaseSpec(**p) for p in values["phases"])
    for key in ("energies_ev", "focus_energies_ev", "mode_powers"):
        values[key] = tuple(values[key])
    return SimulationConfig(**values)
