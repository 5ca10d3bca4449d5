"""Model recipes: short files in ``models/`` that say which parametrisation, priors and optimiser
settings a reconstruction uses, selectable by name (``--model NAME``; the file ``joint_smooth.py``
is the recipe ``joint-smooth``).

A recipe module defines ``DESCRIPTION`` (one line) and ``OPTIONS``, a dict of
:class:`ptyjax.fit.FitConfig` fields. Recipes are looked up in the ``models/`` folder of the ptyjax
source tree and in the folders listed in ``PTYJAX_MODELS`` (``os.pathsep``-separated). A plugin
(:mod:`ptyjax.plugins`) may also define recipes in code with :func:`register`.
"""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

from .errors import PtyjaxError
from .fit import FitConfig

DEFAULT_MODEL = "joint-smooth"

# Recipes registered in code (plugins), by name: module-like objects with DESCRIPTION and OPTIONS.
REGISTERED: dict[str, types.SimpleNamespace] = {}


def register(name: str, options: dict, description: str = ""):
    """Register recipe ``name`` with ``options`` (FitConfig fields) and a one-line ``description``;
    it takes precedence over a file of the same name."""
    REGISTERED[name] = types.SimpleNamespace(DESCRIPTION=description, OPTIONS=dict(options))


def model_folders() -> list[Path]:
    folders = [Path(p) for p in os.environ.get("PTYJAX_MODELS", "").split(os.pathsep) if p]
    return folders + [Path(__file__).resolve().parent.parent / "models"]


def available() -> dict[str, Path]:
    """``{name: file}`` of every recipe found (earlier folders win; registered recipes map to None)."""
    found: dict[str, Path] = {}
    for folder in reversed(model_folders()):
        for file in sorted(folder.glob("*.py")):
            if not file.name.startswith("_"):
                found[file.stem.replace("_", "-")] = file
    found.update(dict.fromkeys(REGISTERED))
    return found


def load(name: str):
    """The recipe module called ``name``."""
    if name in REGISTERED:
        return REGISTERED[name]
    recipes = available()
    if name not in recipes:
        raise PtyjaxError(f"unknown model {name!r}; available: {', '.join(sorted(recipes)) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"ptyjax_model_{name.replace('-', '_')}", recipes[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit_config(name: str = DEFAULT_MODEL, **overrides) -> FitConfig:
    """The :class:`FitConfig` of recipe ``name`` with ``overrides`` (None values ignored) applied."""
    options = dict(getattr(load(name), "OPTIONS", {}))
    options.update({k: v for k, v in overrides.items() if v is not None})
    return FitConfig.from_dict(options)
