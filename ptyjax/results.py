"""The ptyjax results file: one HDF5 file to which each stage adds a group.

Layout (see README): ``/reconstruction``, ``/spectra``, ``/chemistry``, ``/clustering``. Every
dataset carries a ``units`` attribute ("1" for dimensionless, "" for labels/text); the root carries
the ptyjax version and the configuration of each stage that wrote to it (JSON, attribute
``config_<group>``). Writes are atomic: the file is copied, changed and renamed into place, so a
killed run never leaves a half-written results file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import DataError


def write_group(path, group: str, datasets: dict, attrs: dict | None = None, config: dict | None = None):
    """Write (replace) ``/group`` of the results file ``path`` atomically.

    ``datasets`` maps a name to ``(array, units)``; names may contain ``/`` for sub-groups. Strings
    and lists of strings are stored as UTF-8 string datasets. ``attrs`` are set on the group.
    ``config`` (a JSON-serialisable dict) is stored at the root as ``config_<group>``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if path.exists():
        shutil.copyfile(path, tmp)
    with h5py.File(tmp, "a") as f:
        f.attrs["ptyjax_version"] = __version__
        if config is not None:
            f.attrs[f"config_{group}"] = json.dumps(config, sort_keys=True, default=_json_default)
        if group in f:
            del f[group]
        g = f.create_group(group)
        for key, value in (attrs or {}).items():
            g.attrs[key] = value
        for name, (array, units) in datasets.items():
            if isinstance(array, str) or (isinstance(array, (list, tuple)) and array and isinstance(array[0], str)):
                dset = g.create_dataset(name, data=np.array(array, dtype=h5py.string_dtype()))
            else:
                dset = g.create_dataset(name, data=np.asarray(array))
            dset.attrs["units"] = units
    os.replace(tmp, path)
    return path


def read_group(path, group: str) -> dict:
    """All datasets of ``/group`` as a dict of NumPy arrays (strings decoded), plus ``"attrs"``."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "results file does not exist")
    try:
        with h5py.File(path, "r") as f:
            if group not in f:
                raise DataError(path, f"has no /{group} group (run the stage that writes it first)")
            out = {"attrs": dict(f[group].attrs)}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    value = obj[()]
                    if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype) is not None:
                        value = obj.asstr()[()]
                        value = value.tolist() if isinstance(value, np.ndarray) else value
                    out[name] = value

            f[group].visititems(visit)
            return out
    except OSError as error:
        raise DataError(path, f"cannot be read as HDF5 ({error})") from None


def read_config(path) -> dict:
    """The stored configuration of every stage, ``{group: config}``."""
    with h5py.File(path, "r") as f:
        return {k[len("config_"):]: json.loads(v) for k, v in f.attrs.items() if k.startswith("config_")}


def units_of(path, dataset: str) -> str:
    with h5py.File(path, "r") as f:
        return f[dataset].attrs["units"]


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
