"""Regenerate ``larch_reference.json``: Larch ``find_e0`` / ``pre_edge`` on committed synthetic spectra.

Larch (xraylarch, ~1.7 GB with its dependencies) is a reference only, never a ptyjax dependency. Run with
a throw-away environment, e.g.::

    python -m venv --system-site-packages /tmp/larchvenv
    /tmp/larchvenv/bin/pip install --no-deps xraylarch
    /tmp/larchvenv/bin/pip install asteval lmfit uncertainties dill pyshortcuts termcolor tabulate pyyaml \
        tomli tomli_w packaging psutil numdifftools
    /tmp/larchvenv/bin/python tests/data/make_larch_reference.py

The spectra are arctan steps with a Gaussian white line on a sloped pre-edge (plain NumPy, written out in
full in the JSON so the test does not depend on how they were made), sampled on a typical
ptychography-XAFS grid around the Mn K edge (coarse pre-edge, 0.5-1 eV through the edge, coarse post-edge).
"""

import json
import sys
from pathlib import Path

import numpy as np
from larch import __version__ as larch_version
from larch.xafs import find_e0, pre_edge

COMMAND = "/tmp/larchvenv/bin/python tests/data/make_larch_reference.py"


def spectrum(energy, e0, jump, width, white, offset, fwhm, pre, slope, post_slope):
    x = energy - e0
    step = 0.5 + np.arctan(2.0 * x / width) / np.pi
    peak = np.exp(-4.0 * np.log(2.0) * ((x - offset) / fwhm) ** 2)
    return pre + slope * (energy - 6539.0) + jump * (step * (1.0 + post_slope * x) + white * peak)


def main():
    energy = np.concatenate([np.arange(6490.0, 6530.0, 5.0), np.arange(6530.0, 6562.0, 0.8),
                             np.arange(6562.0, 6650.0, 6.0)])
    rng = np.random.default_rng(20240601)
    cases = []
    for k in range(6):
        params = dict(e0=float(6544.0 + 1.7 * k + rng.uniform(-0.3, 0.3)), jump=float(rng.uniform(0.02, 0.1)),
                      width=float(rng.uniform(1.2, 3.0)), white=float(rng.uniform(0.0, 0.6)),
                      offset=float(rng.uniform(2.0, 6.0)), fwhm=float(rng.uniform(3.0, 8.0)),
                      pre=float(rng.uniform(0.2, 0.5)), slope=float(rng.uniform(-5e-4, 5e-4)),
                      post_slope=float(rng.uniform(-3e-3, 0.0)))
        mu = spectrum(energy, **params)
        e0 = find_e0(energy, mu)
        result = pre_edge(energy, mu)
        # Larch >= 0.9.70 returns None and stores results on a group for plain arrays; handle both.
        if result is None or not isinstance(result, dict):
            from larch import Group

            group = Group(energy=energy, mu=mu)
            pre_edge(group)
            result = {k: getattr(group, k) for k in ("e0", "edge_step", "pre_edge", "post_edge")}
        cases.append(dict(params=params, mu=mu.tolist(), find_e0=float(e0), pre_edge_e0=float(result["e0"]),
                          edge_step=float(result["edge_step"]), pre_edge=np.asarray(result["pre_edge"]).tolist(),
                          post_edge=np.asarray(result["post_edge"]).tolist()))
    out = dict(command=COMMAND, larch_version=larch_version, python=sys.version.split()[0],
               energy=energy.tolist(), cases=cases)
    path = Path(__file__).with_name("larch_reference.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
