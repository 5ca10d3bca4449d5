"""ptyjax: joint multi-energy ptychography-XAFS in JAX.

Units: SI inside (metres, seconds), photon energy in eV. See README.md.
"""

__version__ = "0.1.0"
