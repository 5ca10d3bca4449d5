"""X-ray physics: wavelengths, refractive indices from composition, near-edge (XANES) models.

Conventions: photon energy in eV, lengths in metres, refractive index ``n = 1 - delta + i beta``.
"""

from __future__ import annotations

import numpy as np

# CODATA 2018: h c = 1.239841984e-6 eV m; classical electron radius r_e = 2.8179403262e-15 m.
HC_EV_M = 1.239841984e-6
R_ELECTRON_M = 2.8179403262e-15
# CODATA 2018 elementary charge, to convert CXI energies (joules) to eV.
JOULE_PER_EV = 1.602176634e-19


def wavelength(energy_ev):
    """Wavelength in metres of a photon of ``energy_ev`` eV."""
    return HC_EV_M / np.asarray(energy_ev, dtype=np.float64)


def wavenumber(energy_ev):
    """Wavenumber ``k = 2 pi / lambda`` in 1/m."""
    return 2.0 * np.pi / wavelength(energy_ev)
