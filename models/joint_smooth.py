"""Joint reconstruction of all energies with a quadratic spectral-smoothness prior (the default)."""

DESCRIPTION = "all energies jointly, spectral smoothness prior along energy "

OPTIONS = {"priors": {"spectral_smoothness": {"weight": 3.0, "delta": None}}}
