"""ptyjax: joint multi-energy ptychography-XAFS in JAX.

Units: SI inside (metres, seconds), photon energy in eV. See README.md.
"""

from . import hostmemory

# Before any JAX computation starts XLA's worker threads (see ptyjax.hostmemory).
hostmemory.configure_from_environment()

__version__ = "0.1.0"
