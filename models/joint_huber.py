"""Joint reconstruction with an edge-preserving (Huber) spectral prior."""

DESCRIPTION = "all energies jointly, Huber spectral prior that keeps absorption edges sharp"

# Threshold 0.02 per eV: about the steepest log-object slope of a Mn K edge of a 1 um LNMO particle
# (OD jump ~0.08 over ~2 eV, DESIGN notes section 1), so real edges reach the linear regime.
OPTIONS = {"priors": {"spectral_smoothness": {"weight": 3.0, "delta": 0.02}}}
