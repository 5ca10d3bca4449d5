"""X-ray physics: wavelengths, refractive indices from composition, near-edge (XANES) models.

Conventions: photon energy in eV, lengths in metres, refractive index ``n = 1 - delta + i beta``,
atomic scattering factors ``f = f1 + i f2`` in electrons with ``f1 = Z + f'`` (the *full* f1, not the
anomalous part alone) and ``f2 = f''``. Free-atom values come from the Chantler tables in ``xraydb``.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

# CODATA 2018: h c = 1.239841984e-6 eV m; classical electron radius r_e = 2.8179403262e-15 m.
HC_EV_M = 1.239841984e-6
R_ELECTRON_M = 2.8179403262e-15
# CODATA 2018 elementary charge, to convert CXI energies (joules) to eV.
JOULE_PER_EV = 1.602176634e-19
# CODATA 2018 Avogadro constant (1/mol).
AVOGADRO = 6.02214076e23

# K-shell core-hole lifetime widths (Lorentzian FWHM, eV): Krause & Oliver, J. Phys. Chem. Ref. Data 8, 329 (1979).
CORE_HOLE_WIDTH_EV = {("Mn", "K"): 1.16, ("Ni", "K"): 1.44, ("Fe", "K"): 1.25, ("Co", "K"): 1.33}

# Edge energies (eV, half-jump point of the edge step) of reference compounds by formal valence.
# Mn K: MnO, Mn2O3, MnO2, ~4 eV per unit of valence (Ressler et al., Environ. Sci. Technol. 34, 950 (2000);
# Manceau, Marcus & Grangeon, Am. Mineral. 97, 816 (2012)).
# Ni K: NiO, LiNiO2, NiO2-like (charged LiNiO2), ~1.5 eV per unit (Mansour et al., J. Electrochem. Soc. 146,
# 2799 (1999); Rougier et al., J. Electrochem. Soc. 143, 1168 (1996)). Approximate: calibrate at the beamline.
REFERENCE_EDGE_ENERGIES = {
    "Mn": {2: 6544.0, 3: 6548.0, 4: 6552.0},
    "Ni": {2: 8344.0, 3: 8345.5, 4: 8347.0},
}


def _valence_slope(table):
    valence = np.array(sorted(table), dtype=float)
    energy = np.array([table[v] for v in sorted(table)])
    return float(np.polyfit(valence, energy, 1)[0])


# Edge shift (eV per unit of formal valence): least-squares slope of REFERENCE_EDGE_ENERGIES.
EDGE_SHIFT_PER_VALENCE = {element: _valence_slope(table) for element, table in REFERENCE_EDGE_ENERGIES.items()}


def wavelength(energy_ev):
    """Wavelength in metres of a photon of ``energy_ev`` eV."""
    return HC_EV_M / np.asarray(energy_ev, dtype=np.float64)


def wavenumber(energy_ev):
    """Wavenumber ``k = 2 pi / lambda`` in 1/m."""
    return 2.0 * np.pi / wavelength(energy_ev)


def edge_energy_for_valence(element: str, valence):
    """Edge energy (eV) of ``element`` at formal ``valence``: linear interpolation (and extrapolation)
    of :data:`REFERENCE_EDGE_ENERGIES`."""
    table = REFERENCE_EDGE_ENERGIES[element]
    v0 = min(table)
    return table[v0] + EDGE_SHIFT_PER_VALENCE[element] * (np.asarray(valence, dtype=float) - v0)


# ---------------------------------------------------------------------------------------------------
# Free-atom tables
# ---------------------------------------------------------------------------------------------------


def _xraydb():
    import xraydb  # imported lazily: it opens an SQLite database

    return xraydb


def tabulated_f1_f2(element: str, energy_ev):
    """Free-atom Chantler ``(f1, f2)`` in electrons at ``energy_ev`` (eV); ``f1 = Z + f'``."""
    xdb = _xraydb()
    energy = np.atleast_1d(np.asarray(energy_ev, dtype=np.float64))
    f1 = xdb.atomic_number(element) + np.asarray(xdb.f1_chantler(element, energy))
    f2 = np.asarray(xdb.f2_chantler(element, energy))
    return f1.reshape(np.shape(energy_ev)), f2.reshape(np.shape(energy_ev))


def atomic_densities(formula: str, density_g_cm3: float) -> dict[str, float]:
    """Number densities (atoms per m^3) of each element of ``formula`` at mass density ``density_g_cm3``."""
    xdb = _xraydb()
    stoichiometry = xdb.chemparse(formula)
    molar_mass = sum(n * xdb.atomic_mass(el) for el, n in stoichiometry.items())  # g/mol
    formula_units_per_m3 = density_g_cm3 * 1e6 * AVOGADRO / molar_mass  # 1e6 cm^3 per m^3
    return {el: n * formula_units_per_m3 for el, n in stoichiometry.items()}


def delta_beta_from_densities(densities: dict[str, float], f1: dict, f2: dict, energy_ev):
    """``(delta, beta)`` from atom densities (1/m^3) and full scattering factors ``f1[el]``, ``f2[el]``
    (electrons, arrays broadcastable with ``energy_ev``). Densities may be arrays (e.g. maps)."""
    # delta + i beta = (r_e lambda^2 / 2 pi) sum_a n_a (f1_a + i f2_a)
    prefactor = R_ELECTRON_M * wavelength(energy_ev) ** 2 / (2.0 * np.pi)
    delta = prefactor * sum(np.asarray(n) * np.asarray(f1[el]) for el, n in densities.items())
    beta = prefactor * sum(np.asarray(n) * np.asarray(f2[el]) for el, n in densities.items())
    return delta, beta


def delta_beta(formula: str, density_g_cm3: float, energy_ev, f1: dict | None = None, f2: dict | None = None):
    """Refractive index decrements ``(delta, beta)`` of a material, ``n = 1 - delta + i beta``.

    ``energy_ev``: photon energies (eV). ``f1``, ``f2``: optional per-element overrides
    ``{element: array}`` of the *full* ``f1 = Z + f'`` and of ``f2`` (electrons, same shape as
    ``energy_ev``), e.g. from :func:`edge_model_f1_f2`; other elements use the Chantler tables.
    """
    densities = atomic_densities(formula, density_g_cm3)
    f1, f2 = dict(f1 or {}), dict(f2 or {})
    for el in densities:
        if el not in f1 or el not in f2:
            t1, t2 = tabulated_f1_f2(el, energy_ev)
            f1.setdefault(el, t1)
            f2.setdefault(el, t2)
    return delta_beta_from_densities(densities, f1, f2, energy_ev)


def transmission(delta, beta, thickness_m, energy_ev):
    """Complex transmission ``exp(-i k delta t) exp(-k beta t)`` of thickness ``thickness_m`` (m)."""
    k = wavenumber(energy_ev)
    return np.exp(-k * np.asarray(thickness_m) * (np.asarray(beta) + 1j * np.asarray(delta)))


def optical_density(obj):
    """Optical density ``-ln |O|^2 = -2 ln |O|`` of a complex transmission (works on NumPy and JAX arrays)."""
    return -2.0 * np.log(np.abs(obj))


# ---------------------------------------------------------------------------------------------------
# Kramers-Kronig transforms
# ---------------------------------------------------------------------------------------------------


def _maclaurin_sums(energy_ev, values):
    """``(A_i, B_i)`` with ``A_i = sum_{k odd} v_{i+k} / (k h)`` and ``B_i = sum_{i+j odd} v_j / (E_i + E_j)``.

    Ohta & Ishida's "Maclaurin formula" (Appl. Spectrosc. 42, 952 (1988)) for a principal-value integral
    on a uniform grid: sum over every other point, skipping the pole. Computed as FFT convolutions.
    """
    from scipy.signal import fftconvolve

    energy = np.asarray(energy_ev, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n = energy.size
    step = (energy[-1] - energy[0]) / (n - 1)
    if n < 3 or not np.allclose(np.diff(energy), step, rtol=1e-6, atol=0):
        raise ValueError("Kramers-Kronig transforms need an increasing, uniformly spaced energy grid")
    offsets = np.arange(-(n - 1), n)
    odd = offsets % 2 == 1
    # A: kernel over the difference k = j - i (odd only).
    kernel_a = np.where(odd, 1.0 / np.where(odd, offsets * step, 1.0), 0.0)
    a = fftconvolve(values, kernel_a[::-1], mode="full")[n - 1 : 2 * n - 1]
    # B: kernel over the sum s = i + j (odd only), E_i + E_j = 2 E_0 + s h.
    sums = np.arange(0, 2 * n - 1)
    kernel_b = np.where(sums % 2 == 1, 1.0 / (2.0 * energy[0] + sums * step), 0.0)
    # sum_j v_j kernel_b[i + j] is a correlation: convolve with the reversed values.
    b = fftconvolve(kernel_b, values[::-1], mode="full")[n - 1 : 2 * n - 1]
    return a, b, step


def kramers_kronig_f1(energy_ev, f2):
    """Anomalous ``f'`` (electrons) from ``f''`` on a uniform energy grid (eV) by Kramers-Kronig.

    ``f'(E) = (2/pi) P int_0^inf E' f''(E') / (E^2 - E'^2) dE'`` (Henke, Gullikson & Davis, At. Data
    Nucl. Data Tables 54, 181 (1993)): absorption above ``E`` lowers ``f'``, so ``f'`` dips at an
    absorption edge, as Chantler's tables do. The integral is restricted to the given grid (Ohta-Ishida
    Maclaurin quadrature, error O(h^2)). Accurate for ``f''`` that vanishes towards both ends of the
    grid (e.g. a difference of two edge models); the result then also excludes Z and relativistic
    constants.
    """
    a, b, step = _maclaurin_sums(energy_ev, f2)
    # E'/(E^2 - E'^2) = -(1/2) [1/(E' - E) + 1/(E' + E)], Maclaurin weight 2h.
    return -(2.0 / np.pi) * step * (a + b)


def kramers_kronig_f2(energy_ev, f1):
    """Inverse of :func:`kramers_kronig_f1`: ``f''`` from the anomalous ``f'`` on a uniform grid (eV).

    ``f''(E) = -(2E/pi) P int_0^inf f'(E') / (E^2 - E'^2) dE'``, same quadrature and restrictions.
    """
    a, b, step = _maclaurin_sums(energy_ev, f1)
    # 2E/(E^2 - E'^2) = -[1/(E' - E) - 1/(E' + E)], Maclaurin weight 2h.
    return (2.0 / np.pi) * step * (a - b)


# ---------------------------------------------------------------------------------------------------
# Near-edge (XANES) model
# ---------------------------------------------------------------------------------------------------


def _array_module(*values):
    """``jax.numpy`` if any value is a JAX array (or tracer), else NumPy: the line shapes below stay
    traceable for JAX fits while the free-atom and Kramers-Kronig code keeps NumPy float64."""
    return jnp if any(isinstance(v, jax.Array) for v in values) else np


def arctan_step(energy_ev, edge_energy_ev, width_ev):
    """Unit edge step broadened by a Lorentzian of FWHM ``width_ev``: 0 below, 1/2 at E0, 1 above.

    Energies in eV. NumPy in, NumPy out; JAX in (any argument), JAX out (traceable)."""
    xp = _array_module(energy_ev, edge_energy_ev, width_ev)
    return 0.5 + xp.arctan(2.0 * (xp.asarray(energy_ev) - edge_energy_ev) / width_ev) / xp.pi


def gaussian_peak(energy_ev, centre_ev, fwhm_ev):
    """Unit-height Gaussian of full width at half maximum ``fwhm_ev`` (eV).

    NumPy in, NumPy out; JAX in (any argument), JAX out (traceable)."""
    xp = _array_module(energy_ev, centre_ev, fwhm_ev)
    # FWHM = 2 sqrt(2 ln 2) sigma, so exp(-x^2 / 2 sigma^2) = exp(-4 ln 2 x^2 / FWHM^2).
    return xp.exp(-4.0 * xp.log(2.0) * ((xp.asarray(energy_ev) - centre_ev) / fwhm_ev) ** 2)


@dataclasses.dataclass(frozen=True)
class EdgeModel:
    """Near-edge model of one absorption edge of ``element`` (energies in eV).

    ``f''`` is the free-atom table shifted so that its edge sits at ``edge_energy_ev`` (E0, the half-jump
    point of the step: *the* edge energy everywhere in ptyjax), its jump replaced by an arctan step of
    Lorentzian FWHM ``width_ev`` (default: core-hole width, Krause & Oliver 1979), plus a Gaussian white
    line at ``E0 + white_line_offset_ev`` of FWHM ``white_line_width_ev`` and height
    ``white_line_height`` in units of the edge jump. ``f'`` follows by Kramers-Kronig.
    """

    element: str
    _: dataclasses.KW_ONLY
    edge: str = "K"
    edge_energy_ev: float
    width_ev: float | None = None
    white_line_height: float = 0.0
    white_line_offset_ev: float = 3.0
    white_line_width_ev: float = 4.0

    @property
    def lorentz_width_ev(self) -> float:
        return float(self.width_ev if self.width_ev is not None else CORE_HOLE_WIDTH_EV[(self.element, self.edge)])

    def shifted(self, shift_ev: float) -> "EdgeModel":
        """The same model with its edge moved by ``shift_ev`` eV."""
        return dataclasses.replace(self, edge_energy_ev=self.edge_energy_ev + shift_ev)


# Table points closer than this to the tabulated edge (eV) belong to its (broadened) jump and are replaced
# by the model step; the branches are extrapolated over the gap. Chantler's Mn/Ni K tables rise from ~15 eV
# below the edge and settle ~3 eV above it.
_BRANCH_GAP_EV = (16.0, 3.0)
# Gap (eV) for the edge *jump*: branches from 16 eV below and 3 eV above the edge, extrapolated to it.
# Larch's pre_edge (Newville, J. Synchrotron Rad. 20, 322 (2013)) starts its post-edge line at
# norm1 = +25 eV, where Chantler's f'' is ~2.6 % higher than at +3 eV; so a fitted step reads ~2.5 %
# above this jump (documented by an xfail test) while ratios of two elements are unaffected.
_JUMP_GAP_EV = (16.0, 3.0)
# Range (eV) of table points used for the slope of each branch's extrapolation.
_BRANCH_FIT_EV = 250.0
# Half-width (eV) and step (eV) of the grid on which f' of the model is computed by Kramers-Kronig.
_KK_HALF_WIDTH_EV = 400.0
_KK_STEP_EV = 0.05


@functools.lru_cache(maxsize=None)
def _chantler_branches(element: str, edge: str, gap_ev: tuple[float, float] = _BRANCH_GAP_EV):
    """Log-log linear pieces of the Chantler f'' table below and above the edge, as callables of energy.

    Each branch interpolates the table points outside the gap ``gap_ev`` = (below, above) eV around the
    tabulated edge exactly as ``xraydb`` does (log-log), and extrapolates over the gap from its table
    point nearest the edge with the log-log slope fitted to its table points within
    :data:`_BRANCH_FIT_EV` of the edge.
    """
    xdb = _xraydb()
    edge_ev = float(xdb.xray_edge(element, edge).energy)
    # The raw Chantler table, as xraydb's own f2_chantler reads it.
    row = xdb.get_xraydb().get_cache("Chantler", column="element", value=xdb.atomic_symbol(xdb.atomic_number(element)))[0]
    table_e = np.array(json.loads(row.energy))
    table_f2 = np.array(json.loads(row.f2))

    def branch(side):
        if side < 0:
            keep = table_e < edge_ev - gap_ev[0]
            fit = keep & (table_e > edge_ev - _BRANCH_FIT_EV)
        else:
            keep = table_e > edge_ev + gap_ev[1]
            fit = keep & (table_e < edge_ev + _BRANCH_FIT_EV)
        log_e, log_f = np.log(table_e[keep]), np.log(table_f2[keep])
        slope = np.polyfit(np.log(table_e[fit]), np.log(table_f2[fit]), 1)[0]
        anchor = -1 if side < 0 else 0

        def f2(energy):
            x = np.log(np.asarray(energy, dtype=np.float64))
            inside = np.interp(x, log_e, log_f)
            extrapolated = log_f[anchor] + slope * (x - log_e[anchor])
            gap = x > log_e[-1] if side < 0 else x < log_e[0]
            return np.exp(np.where(gap, extrapolated, inside))

        return f2

    return edge_ev, branch(-1), branch(+1)


def edge_jump_f2(element: str, edge: str = "K") -> float:
    """Free-atom jump of ``f''`` (electrons) across the edge, as an edge step is measured.

    Post-edge minus pre-edge level at the tabulated edge energy E_t (``xraydb.xray_edge``): the Chantler
    table from E_t + 25 eV up (Larch ``pre_edge`` default ``norm1``) and from E_t - 16 eV down, each
    extrapolated to E_t along its log-log line (slope fitted within 250 eV of E_t), see
    :data:`_JUMP_GAP_EV`. Unlike the model branches (:data:`_BRANCH_GAP_EV`), the post-edge level thus
    excludes the rise of ``f''`` in the first ~20 eV above the edge, which a fitted step does not follow.
    """
    edge_ev, below, above = _chantler_branches(element, edge, _JUMP_GAP_EV)
    return float(above(edge_ev) - below(edge_ev))


def edge_jump_cross_section(element: str, edge: str = "K") -> float:
    """Jump (m^2 per atom) of the photo-absorption cross section ``sigma = 2 r_e lambda f''`` across the edge.

    Evaluated at the tabulated edge energy E_t (``xraydb.xray_edge``) with the free-atom ``f''`` jump of
    :func:`edge_jump_f2` (post-edge line from E_t + 25 eV and pre-edge line from E_t - 16 eV, extrapolated
    to E_t). An optical-density jump is ``OD_jump = n_areal * sigma_jump`` for ``n_areal`` absorbing atoms
    per m^2.
    """
    edge_ev, _, _ = _chantler_branches(element, edge)
    return float(2.0 * R_ELECTRON_M * wavelength(edge_ev) * edge_jump_f2(element, edge))


def _model_f2(model: EdgeModel, energy):
    """Model ``f''`` at ``energy`` (eV), and the shifted free-atom table ``f''`` it replaces."""
    edge_ev, below, above = _chantler_branches(model.element, model.edge)
    shift = model.edge_energy_ev - edge_ev
    e_table = energy - shift
    step = arctan_step(energy, model.edge_energy_ev, model.lorentz_width_ev)
    white_line = model.white_line_height * edge_jump_f2(model.element, model.edge) * gaussian_peak(
        energy, model.edge_energy_ev + model.white_line_offset_ev, model.white_line_width_ev
    )
    f2 = below(e_table) * (1.0 - step) + above(e_table) * step + white_line
    return f2, _xraydb().f2_chantler(model.element, e_table)


@functools.lru_cache(maxsize=64)
def _model_f1_correction(model: EdgeModel):
    """Kramers-Kronig ``f'`` of (model ``f''`` - shifted table ``f''``) on a fine uniform grid around E0."""
    grid = model.edge_energy_ev + np.arange(-_KK_HALF_WIDTH_EV, _KK_HALF_WIDTH_EV + _KK_STEP_EV / 2, _KK_STEP_EV)
    f2, f2_table = _model_f2(model, grid)
    return grid, kramers_kronig_f1(grid, f2 - f2_table)


def edge_model_f1_f2(model: EdgeModel, energy_ev):
    """Full ``(f1, f2)`` (electrons, ``f1 = Z + f'``) of ``model.element`` at ``energy_ev`` (eV).

    ``f2`` is the model of :class:`EdgeModel`; ``f1`` is the shifted Chantler ``f1`` plus the
    Kramers-Kronig transform of (model ``f2`` - shifted Chantler ``f2``), a difference localised near the
    edge, computed on a +-400 eV, 0.05 eV grid around E0 (outside it the correction is taken as 0).
    """
    energy = np.asarray(energy_ev, dtype=np.float64)
    edge_ev, _, _ = _chantler_branches(model.element, model.edge)
    f2, _ = _model_f2(model, energy)
    grid, correction = _model_f1_correction(model)
    f1_table, _ = tabulated_f1_f2(model.element, energy - (model.edge_energy_ev - edge_ev))
    f1 = f1_table + np.interp(energy, grid, correction, left=0.0, right=0.0)
    return f1, f2


def compound_delta_beta(formula: str, density_g_cm3: float, energy_ev, edges: dict[str, EdgeModel] | None = None):
    """``(delta, beta)`` of a compound whose absorbing elements follow near-edge models.

    ``edges`` maps an element of ``formula`` to its :class:`EdgeModel`; other elements use the free-atom
    tables. ``energy_ev`` in eV, ``density_g_cm3`` in g/cm^3.
    """
    f1, f2 = {}, {}
    for element, model in (edges or {}).items():
        f1[element], f2[element] = edge_model_f1_f2(model, energy_ev)
    return delta_beta(formula, density_g_cm3, energy_ev, f1=f1, f2=f2)
