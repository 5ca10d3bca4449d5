"""User plugins: a Python file that registers priors, object parametrisations or recipes when imported.

``ptyjax reconstruct/run --plugin FILE.py`` calls :func:`load` before the recipe is read, so a recipe
may name what the plugin registers (``ptyjax.priors.register``, ``ptyjax.model.register_object_model``,
``ptyjax.recipes.register``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from .errors import DataError

# Plugins already imported, by resolved path: loading one twice would register everything twice.
_LOADED: dict[Path, object] = {}


def load(path):
    """Import the plugin file ``path`` and return its module (once per file and process).

    Raises :class:`ptyjax.errors.DataError` naming the file when it does not exist, is not a ``.py``
    file, or fails while being imported (the message gives the error and its line in the plugin).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "plugin file does not exist")
    if path.suffix != ".py":
        raise DataError(path, "a plugin must be a Python file ending in .py")
    resolved = path.resolve()
    if resolved in _LOADED:
        return _LOADED[resolved]
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"ptyjax_plugin_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 -- any failure of user code becomes one clear line
        del sys.modules[name]
        line = _line_in(error, resolved)
        where = f" (line {line})" if line else ""
        raise DataError(path, f"plugin failed to load{where}: {type(error).__name__}: {error}") from error
    _LOADED[resolved] = module
    return module


def load_all(paths) -> list:
    """:func:`load` each of ``paths`` (None or empty: nothing) in order."""
    return [load(p) for p in paths or ()]


def _line_in(error: BaseException, file: Path):
    """Line number in ``file`` where ``error`` arose (syntax errors included), or None."""
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename).resolve() == file:
        return error.lineno
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == file]
    return frames[-1].lineno if frames else None
