"""Host memory on CPU: keep freed buffers for reuse instead of handing them back to the kernel.

XLA:CPU allocates each call's temporary buffers afresh (about 270 MB per optimisation step on the
``small`` preset) and frees them at its end. glibc serves such large blocks with ``mmap`` (always
above 32 MB, and above 64 MB in the per-thread arenas of XLA's worker threads whatever the
settings) and unmaps them on ``free``, so every step faults its temporaries back in page by page:
on the ``small`` preset ~70 000 page faults and a third of the step's time in the kernel. With one
arena, no ``mmap`` and a high trim threshold, freed blocks stay in the heap and the next step
reuses them: epochs ran 1.4-1.6x faster (``experiments/bench_epoch.py``). The cost: freed blocks
stay in the (fragmenting) heap, so peak host memory can be higher, by 0-20 % in that benchmark, and
XLA's compiler threads share one arena, so compilation takes longer: the tiny preset's step
2.5-2.6 s with the system allocator, 3.3-3.5 s with these settings (2 CPU cores, side by side).
Settings: glibc ``mallopt`` (``man 3 mallopt``); other C libraries are left alone.

Only a run on the CPU gains: on a GPU the temporaries live in device memory, while the compiler
(autotuning, many threads) still shares the one arena. The step's GPU compilation went from 2.2 s
to 12.8 s in the range of commits that brought these settings (``experiments/results/
gpu_compile_h200.md``), and on the CPU they alone account for that range's compile-time increase.
So they are applied only when JAX will run on the CPU (:func:`cpu_only`).

:func:`configure_from_environment` runs when ``ptyjax`` is imported, which must precede the first
JAX computation: threads that already hold an arena keep it. ``PTYJAX_SYSTEM_MALLOC=1`` never
applies the settings, ``PTYJAX_SYSTEM_MALLOC=0`` always does.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
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


def accelerator_plugin_installed() -> bool:
    """Whether a JAX accelerator backend is installed: a PJRT plugin (the ``jax_plugins`` namespace
    package or entry points, e.g. ``jax-cuda12-plugin``) or ``libtpu``. JAX then prefers it to the
    CPU."""
    try:
        plugins = importlib.metadata.entry_points(group="jax_plugins")
    except Exception:  # broken metadata of some other distribution: fall back to the modules
        plugins = ()
    return bool(plugins) or any(importlib.util.find_spec(name) is not None for name in ("jax_plugins", "libtpu"))


def cpu_only(environ=os.environ, accelerator_installed=accelerator_plugin_installed) -> bool:
    """Whether JAX will run on the CPU, decided without starting it: ``JAX_PLATFORMS`` (or the
    older ``JAX_PLATFORM_NAME``) names ``cpu`` first, or it is unset and no accelerator backend is
    installed (``accelerator_installed()``)."""
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    first = platforms.split(",")[0].strip().lower()
    if first:
        return first == "cpu"
    return not accelerator_installed()


def configure_from_environment(environ=os.environ) -> bool:
    """:func:`keep_freed_memory` when JAX will run on the CPU (:func:`cpu_only`).
    ``PTYJAX_SYSTEM_MALLOC=1`` never applies it, ``PTYJAX_SYSTEM_MALLOC=0`` always does. Returns
    whether the settings were applied."""
    choice = environ.get("PTYJAX_SYSTEM_MALLOC", "").strip()
    if choice == "0" or (not choice and cpu_only(environ)):
        return keep_freed_memory()
    return False
