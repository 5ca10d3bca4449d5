"""Low-rank object: the log-object stack as K real spatial maps times K complex spectra, both learned."""

import ptyjax.parametrisations  # noqa: F401  (registers the "low-rank" object model)

DESCRIPTION = "log-object = sum of K maps x K learned spectra (K=3), no prior"

# K = 3: the three phases of an LNMO particle (spinel, disordered rim, rock-salt patches). The rank
# itself is the spectral prior, so no smoothness prior (it would bias the learned edges).
OPTIONS = {"object_model": "low-rank", "object_options": {"rank": 3, "seed": 0}, "priors": {}}
