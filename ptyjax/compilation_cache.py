"""Persistent compilation cache: compiled XLA programs kept on disk between runs.

A reconstruction compiles its step a few times (defocus trials per edge, then the joint fit); on a
GPU each compilation takes 10-15 s against ~0.03 s per epoch of the `small` preset, so compilation
is most of a short run (H200, README's performance section). JAX can keep compiled programs on
disk, keyed by the program, the device and the compiler flags; a later run of the same shapes loads
them instead of compiling. The command line turns this on (:func:`enable`); from Python, call
:func:`enable` once before the first reconstruction.

Folder: ``$PTYJAX_COMPILATION_CACHE`` if set (``off`` disables), else JAX's own
``JAX_COMPILATION_CACHE_DIR`` setting if the user made one, else ``$XDG_CACHE_HOME/ptyjax/xla``
(``~/.cache/ptyjax/xla``). Only programs that took over a second to compile are stored (JAX's
``jax_persistent_cache_min_compile_time_secs``), so the folder stays small: tens of MB.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax

ENV = "PTYJAX_COMPILATION_CACHE"
_OFF = {"", "0", "off", "false", "no", "none"}


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/ptyjax/xla``, or ``~/.cache/ptyjax/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ptyjax" / "xla"


def enable(folder: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled programs in ``folder`` (default: see the module); returns it, or None if off.

    A folder that cannot be created (a read-only home, say) gives a warning and no cache: the run
    goes on, compiling as usual.
    """
    if folder is None:
        setting = os.environ.get(ENV)
        if setting is not None and setting.strip().lower() in _OFF:
            return None
        if setting is None and jax.config.jax_compilation_cache_dir:
            return Path(jax.config.jax_compilation_cache_dir)
        folder = setting or default_folder()
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(f"compilation cache {folder} not usable ({error}); compiling every run", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder
