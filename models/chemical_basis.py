"""Chemical basis (SPA, Chang et al., J. Appl. Cryst. 2020): the object is parametrised by per-pixel
amounts of a few species with tabulated reference spectra, i.e. chemical maps fitted to the data."""

import ptyjax.parametrisations  # noqa: F401  (registers the "chemical-basis" object model)

DESCRIPTION = "per-pixel amounts of Mn4+/Mn3+/Ni2+ oxides + matrix with tabulated spectra"

# Fixed reference spectra (ptyjax.parametrisations.SPECIES_SETS["lnmo"]); set learn_spectra to True to
# add learned corrections. No smoothness prior: with fixed spectra it would only shrink the amounts.
OPTIONS = {"object_model": "chemical-basis", "object_options": {"species": "lnmo", "learn_spectra": False}, "priors": {}}
