"""Object parametrisations beyond one log-object per energy: spectral bases shared by all pixels.

Both models here write the log-object as a sum of K real per-pixel maps times K complex spectra,

    log O(E, r) = sum_k maps_k(r) * spectra_k(E),

which is the physics of a thin object made of K materials: ``log O = -k t (beta + i delta)`` is linear in
the projected amount of each material, with a complex spectrum per material (absorption in the real
part, phase in the imaginary part). Real maps keep each material's phase/absorption ratio the same in
every pixel.

* ``low-rank`` (:func:`low_rank`): maps and spectra both learned. Maps start at 0 (transmission one)
  and spectra at a smooth random orthonormal basis, so the first steps fit maps with fixed spectra
  (non-zero gradient) and spectra follow once maps are non-zero.
* ``chemical-basis`` (:func:`chemical_basis`): spectra fixed to tabulated references of a few species
  (:data:`SPECIES_SETS`, from :mod:`ptyjax.physics` edge models), optionally plus learned corrections
  starting at 0; maps are the per-pixel amounts of each species (the idea of SPA, Chang et al.,
  J. Appl. Cryst. 53 (2020)).

Units: photon energies in eV; maps are dimensionless amounts (for ``chemical-basis``, areal densities
in units of :data:`UNIT_AREAL_DENSITY` formula units per m^2, see :meth:`SpectralBasisStack.areal_density`).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import physics
from .errors import PtyjaxError
from .model import ObjectStack, register_object_model, transmission

# Amount unit of the chemical basis: 1e22 formula units per m^2 (Mn in ~0.3 um of LiNi0.5Mn1.5O4,
# whose Mn density is 3.7e28 m^-3): keeps amounts of order one for micrometre particles.
UNIT_AREAL_DENSITY = 1e22
# Relative floor of the spectra curvature: bounds the steps of a component whose map is still ~0.
_SPECTRA_FLOOR = 1e-3


class SpectralBasisStack(ObjectStack):
    """``log O(E, r) = sum_k maps_k(r) (reference_k(E) + spectra_k(E))``.

    ``maps`` (K, Ny, Nx) float32; ``spectra_re``/``spectra_im`` (K, E) learned part of the spectra, or
    None when the spectra are fixed; ``reference``: fixed part, a static tuple ``(re, im)`` of K*E floats
    each (empty: zero). ``unit`` (static): areal density (formula units per m^2) of a map value of 1,
    per component (empty when the components have no physical unit).
    """

    maps: jax.Array
    spectra_re: jax.Array | None
    spectra_im: jax.Array | None
    reference: tuple = eqx.field(static=True, default=())
    names: tuple = eqx.field(static=True, default=())
    unit: tuple = eqx.field(static=True, default=())

    def spectra(self) -> jax.Array:
        """Complex spectra (K, E): per unit amount, the log-transmission at each energy."""
        k = self.maps.shape[0]
        total = 0.0
        if self.reference:
            re, im = (jnp.asarray(np.reshape(part, (k, -1)), jnp.float32) for part in self.reference)
            total = jax.lax.complex(re, im)
        if self.spectra_re is not None:
            total = total + jax.lax.complex(self.spectra_re, self.spectra_im)
        return total

    def log_object(self):
        return jnp.einsum("kyx,ke->eyx", self.maps.astype(jnp.complex64), self.spectra())

    def __call__(self):
        log_object = self.log_object()
        return transmission(jnp.real(log_object), jnp.imag(log_object))

    def areal_density(self):
        """Amounts in formula units per m^2 (K, Ny, Nx); requires a physical ``unit``."""
        if not self.unit:
            raise PtyjaxError("this spectral basis has no physical unit (learned spectra)")
        return self.maps * jnp.asarray(self.unit, jnp.float32)[:, None, None]

    def extras(self) -> dict:
        """``{name: (array, units)}`` worth saving next to the object: the maps (amounts) and spectra."""
        units = f"{self.unit[0]:g} formula units/m^2" if self.unit else "1"
        out = {"basis_maps": (np.asarray(self.maps), units), "basis_spectra": (np.asarray(self.spectra()), "1")}
        if self.names:
            out["basis_names"] = (list(self.names), "")
        return out

    def curvature(self, h):
        """Diagonal majoriser of the Gauss-Newton matrix of the maps and spectra, given the curvature
        ``h`` (E, Ny, Nx) w.r.t. the real and imaginary parts of the log-object.

        The exact Gauss-Newton block of the K maps of one pixel is ``G_kl = sum_E h Re(c_k^* c_l)``, of
        the K spectra of one energy ``S_kl = sum_r h m_k m_l`` (the same for real and imaginary parts,
        which do not couple for real maps). Absolute row sums (Gershgorin) majorise each block, so
        that the K components stepping together do not overshoot; when maps and spectra are both
        learned, the two blocks of the bilinear model step together and a factor 2 majorises their
        coupling (``(a + b)^2 <= 2 a^2 + 2 b^2``). A step of 1 is then at most a Gauss-Newton step.
        """
        c = self.spectra()
        learned = self.spectra_re is not None
        factor = 2.0 if learned else 1.0
        overlap = jnp.real(jnp.conj(c)[:, None, :] * c[None, :, :])  # (K, K, E)
        h_maps = factor * jnp.sum(jnp.abs(jnp.einsum("kle,eyx->klyx", overlap, h)), axis=1) + 1e-30
        if not learned:
            return dataclasses.replace(self, maps=h_maps)
        gram = jnp.einsum("kyx,lyx,eyx->kle", self.maps, self.maps, h)
        h_spectra = factor * jnp.sum(jnp.abs(gram), axis=1)
        h_spectra = h_spectra + _SPECTRA_FLOOR * jnp.max(h_spectra) + 1e-30
        return dataclasses.replace(self, maps=h_maps, spectra_re=h_spectra, spectra_im=h_spectra)


def smooth_orthonormal_spectra(energies_ev, rank: int, seed: int = 0) -> np.ndarray:
    """``rank`` complex spectra (K, E), orthonormal over energies with RMS 1 per energy, each a random
    combination of polynomials of degree < ``rank`` in energy (smooth: no edge preferred a priori)."""
    energies = np.asarray(energies_ev, dtype=np.float64)
    if rank > energies.size:
        raise PtyjaxError(f"rank {rank} exceeds the number of energies ({energies.size})")
    span = np.ptp(energies) or 1.0
    x = 2.0 * (energies - energies.min()) / span - 1.0
    polynomials, _ = np.linalg.qr(np.vander(x, rank, increasing=True))  # (E, K) orthonormal
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((rank, rank)) + 1j * rng.standard_normal((rank, rank))
    basis, _ = np.linalg.qr(polynomials @ mixing)
    return (basis.T * np.sqrt(energies.size)).astype(np.complex64)


@register_object_model("low-rank")
def low_rank(n_energies, shape, energies_ev, rank: int = 3, seed: int = 0) -> SpectralBasisStack:
    """Learned rank-``rank`` factorisation; maps start at 0, spectra at :func:`smooth_orthonormal_spectra`."""
    energies = np.arange(n_energies, dtype=float) if energies_ev is None else np.asarray(energies_ev, float)
    spectra = smooth_orthonormal_spectra(energies, int(rank), int(seed))
    return SpectralBasisStack(
        maps=jnp.zeros((int(rank),) + tuple(shape), jnp.float32),
        spectra_re=jnp.asarray(spectra.real, jnp.float32),
        spectra_im=jnp.asarray(spectra.imag, jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class Species:
    """A chemical species of the basis: ``formula`` (one formula unit) and near-edge models of its absorbers."""

    name: str
    formula: str
    edges: tuple[physics.EdgeModel, ...] = ()


def _edge(element, valence, white_line):
    return physics.EdgeModel(element, edge_energy_ev=float(physics.edge_energy_for_valence(element, valence)),
                             white_line_height=white_line)


# Species sets by name. LNMO: the transition-metal oxides whose sums make up LiNi0.5Mn1.5O4 and its
# degradation products (Mn4+ and Mn3+ oxides, Ni2+ oxide) plus a light-element matrix (Li2O) carrying
# phase but no edge. Edge energies from physics.REFERENCE_EDGE_ENERGIES by valence; white-line heights
# (units of the jump) are illustrative values of the LNMO literature, as in ptyjax.simulate.LNMO_PHASES:
# measured reference spectra should replace them for real data.
SPECIES_SETS: dict[str, tuple[Species, ...]] = {
    "lnmo": (
        Species("Mn4+ oxide", "MnO2", (_edge("Mn", 4, 0.6),)),
        Species("Mn3+ oxide", "MnO1.5", (_edge("Mn", 3, 0.3),)),
        Species("Ni2+ oxide", "NiO", (_edge("Ni", 2, 0.9),)),
        Species("matrix", "Li2O"),
    ),
}


def species_spectrum(species: Species, energies_ev) -> np.ndarray:
    """Complex log-transmission (E,) of :data:`UNIT_AREAL_DENSITY` formula units per m^2 of ``species``:
    ``-k t (beta + i delta)`` with number densities times thickness = the areal densities."""
    energies = np.asarray(energies_ev, dtype=np.float64)
    import xraydb  # lazily, as in ptyjax.physics: it opens an SQLite database

    stoichiometry = xraydb.chemparse(species.formula)
    densities = {el: n * UNIT_AREAL_DENSITY for el, n in stoichiometry.items()}  # per m^3, over t = 1 m
    f1, f2 = {}, {}
    models = {m.element: m for m in species.edges}
    for element in densities:
        if element in models:
            f1[element], f2[element] = physics.edge_model_f1_f2(models[element], energies)
        else:
            f1[element], f2[element] = physics.tabulated_f1_f2(element, energies)
    delta, beta = physics.delta_beta_from_densities(densities, f1, f2, energies)
    return -physics.wavenumber(energies) * (beta + 1j * delta)


@register_object_model("chemical-basis")
def chemical_basis(n_energies, shape, energies_ev, species: str = "lnmo", learn_spectra: bool = False) -> SpectralBasisStack:
    """Amounts (start 0) of the species of ``SPECIES_SETS[species]`` times their reference spectra at
    ``energies_ev`` (eV); ``learn_spectra`` adds learned corrections to the spectra (start 0)."""
    if energies_ev is None:
        raise PtyjaxError("the chemical-basis object model needs the photon energies")
    if species not in SPECIES_SETS:
        raise PtyjaxError(f"unknown species set {species!r}; known: {sorted(SPECIES_SETS)}")
    members = SPECIES_SETS[species]
    reference = np.stack([species_spectrum(s, energies_ev) for s in members])  # (K, E)
    k = len(members)
    zeros = jnp.zeros((k, len(energies_ev)), jnp.float32) if learn_spectra else None
    return SpectralBasisStack(
        maps=jnp.zeros((k,) + tuple(shape), jnp.float32),
        spectra_re=zeros,
        spectra_im=zeros,
        reference=(tuple(float(v) for v in reference.real.ravel()), tuple(float(v) for v in reference.imag.ravel())),
        names=tuple(s.name for s in members),
        unit=(UNIT_AREAL_DENSITY,) * k,
    )
