"""Host memory on CPU: keep freed buffers for reuse instead of handing them back to the kernel.

XLA:CPU allocates each call's temporary buffers afresh (about 270 MB per optimisation step on the
``small`` preset) and frees them at its end. glibc serves such large blocks with ``mmap`` (always
above 32 MB, and above 64 MB in the per-thread arenas of XLA's worker threads whatever the
settings) and unmaps them on ``free``, so every step faults its temporaries back in page by page:
on the ``small`` preset ~70 000 page faults and a third of the step's time in the kernel. With one
arena, no ``mmap`` and a high trim threshold, freed blocks stay in the heap and the next step
reuses them: epochs ran 1.4-1.6x faster (``experiments/bench_epoch.py``). The cost: freed blocks
stay in the (fragmenting) heap, so peak host memory can be higher, by 0-20 % in that benchmark, and
XLA's compiler threads share one arena, so compilation takes ~10 % longer (2.9-3.2 -> 3.3-3.4 s
for the small preset's step).
Settings: glibc ``mallopt`` (``man 3 mallopt``); other C libraries are left alone.

:func:`keep_freed_memory` runs when ``ptyjax`` is imported, which must precede the first JAX
computation: threads that already hold an arena keep it. Set ``PTYJAX_SYSTEM_MALLOC=1`` to skip it.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
# Freed memory at the top of the heap kept for reuse: a quarter of RAM, at most mallopt's int range.
TRIM_FRACTION_OF_RAM = 0.25


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def settings() -> dict:
    """The glibc malloc settings applied: ``{environment variable: value}`` (the same settings as
    ``MALLOC_*`` variables, for another process, e.g. a benchmark's competitor)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"MALLOC_ARENA_MAX": 1, "MALLOC_MMAP_MAX_": 0, "MALLOC_TRIM_THRESHOLD_": int(min(TRIM_FRACTION_OF_RAM * ram, 2**31 - 1))}


_MALLOPT = {"MALLOC_ARENA_MAX": M_ARENA_MAX, "MALLOC_MMAP_MAX_": M_MMAP_MAX, "MALLOC_TRIM_THRESHOLD_": M_TRIM_THRESHOLD}


def keep_freed_memory() -> bool:
    """Configure glibc malloc so that large freed blocks are reused, not unmapped (see the module
    docstring). Returns whether the settings were applied (glibc on Linux)."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(_MALLOPT[name], value) == 1 for name, value in settings().items())


def configure_from_environment() -> bool:
    """:func:`keep_freed_memory` unless ``PTYJAX_SYSTEM_MALLOC`` is set to a non-empty value."""
    if os.environ.get("PTYJAX_SYSTEM_MALLOC"):
        return False
    return keep_freed_memory()
