"""Clustering-aware reconstruction: spectral smoothness plus a Gaussian-mixture prior on per-pixel
edge jumps and density whose groups are re-estimated from the object at every step."""

import ptyjax.mixture_prior  # noqa: F401  (registers the "chemical_mixture" prior)

DESCRIPTION = "joint-smooth + Gaussian-mixture prior on per-pixel edge jumps and density"

# Weight 1: a curvature bound of 1/n_elements, like the smoothness prior's 2/(dE n_elements) at 1.5 eV
# spacing (ptyjax.mixture_prior); groups: background + the three phases of an LNMO particle.
OPTIONS = {
    "priors": {
        "spectral_smoothness": {"weight": 3.0, "delta": None},
        "chemical_mixture": {"weight": 1.0, "n_components": 4, "em_steps": 5},
    },
}
