"""The energy axis sharded over several (forced host-platform) CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ptyjax.sharding import ENERGY_AXIS


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from ptyjax import fit
    from ptyjax.data import Dataset
    from ptyjax.errors import PtyjaxError
    from ptyjax.sharding import energy_mesh, check_divisible

    assert jax.device_count() == 4, jax.devices()
    dataset = Dataset.open(sys.argv[1])
    config = fit.FitConfig(epochs=3, batch_size=8, defocus_m=270e-6, checkpoint_every=0, position_start_epoch=1, register_every=1)
    single = fit.reconstruct(dataset, config, progress=False)
    sharded = fit.reconstruct(dataset, config, progress=False, devices=4)
    streamed = fit.reconstruct(dataset, config, progress=False, devices=2, stream=True)
    leaf = sharded.params.object.log_amplitude
    try:
        check_divisible(6, energy_mesh(4))
        refused = False
    except PtyjaxError:
        refused = True
    scale = float(np.abs(single.object()).max())
    out = dict(
        shard_devices=len(leaf.sharding.device_set),
        spec=str(leaf.sharding.spec),
        shard_shape=list(leaf.addressable_shards[0].data.shape),
        moved=float(np.abs(single.object() - 1).max()) / scale,
        loss_single=single.loss_history, loss_sharded=sharded.loss_history, loss_streamed=streamed.loss_history,
        object=float(np.abs(sharded.object() - single.object()).max()) / scale,
        object_streamed=float(np.abs(streamed.object() - single.object()).max()) / scale,
        probe=float(np.abs(sharded.probe() - single.probe()).max() / np.abs(single.probe()).max()),
        positions_px=float(np.abs(sharded.params.positions() - single.params.positions()).max()),
        refused=refused,
    )
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def data(tiny_four_energies):
    return tiny_four_energies


def test_sharded_fit_equals_single_device(data):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(data)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.split("RESULT", 1)[1])
    # Really split: each of the 4 devices holds one energy of the object.
    assert r["shard_devices"] == 4 and ENERGY_AXIS in r["spec"] and r["shard_shape"][0] == 1
    # Equal up to float32 summation order (collectives reduce in another order than one device):
    # measured 2-3e-6 of the largest |O| after 3 epochs.
    tol = 2e-5
    assert r["moved"] > 1000 * tol  # the fit changed the object far beyond the tolerance
    assert r["object"] < tol and r["object_streamed"] < tol and r["probe"] < tol, r
    assert r["positions_px"] < 1e-3  # common-grid pixels
    for losses in (r["loss_sharded"], r["loss_streamed"]):
        assert losses == pytest.approx(r["loss_single"], rel=1e-5)
    assert r["refused"]  # 6 energies do not split over 4 devices

