"""Every energy reconstructed on its own: the conventional two-step baseline (no prior)."""

DESCRIPTION = "every energy on its own, no prior (the conventional baseline)"

OPTIONS = {"priors": {}}
