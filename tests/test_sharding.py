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
    # Both spectral priors act from the start: they couple the energies that sit on different devices.
    priors = {"spectral_smoothness": {"weight": 3.0, "delta": None}, "spectral_low_rank": {"weight": 10.0, "rank": 2}}
    config = fit.FitConfig(epochs=3, batch_size=8, defocus_m=270e-6, checkpoint_every=0, position_start_epoch=1, register_every=1,
                           prior_start_epoch=0, priors=priors)
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



MULTIPROCESS = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[3]))
    import numpy as np
    from ptyjax import fit
    from ptyjax.data import Dataset

    assert jax.process_count() == 2 and jax.local_device_count() == 2 and jax.device_count() == 4
    dataset = Dataset.open(sys.argv[1])
    priors = {"spectral_smoothness": {"weight": 3.0, "delta": None}, "spectral_low_rank": {"weight": 10.0, "rank": 2}}
    config = fit.FitConfig(epochs=3, batch_size=8, defocus_m=270e-6, checkpoint_every=0, position_start_epoch=1, register_every=1,
                           prior_start_epoch=0, priors=priors)
    single = fit.reconstruct(dataset, config, progress=False)  # this process alone, one device
    sharded = fit.reconstruct(dataset, config, progress=False, devices=4)  # both processes, 4 devices
    leaf = sharded.params.object.log_amplitude
    scale = float(np.abs(single.object()).max())
    out = dict(
        addressable=len(leaf.addressable_shards), global_devices=len(leaf.sharding.device_set),
        object=float(np.abs(sharded.object() - single.object()).max()) / scale,
        positions_px=float(np.abs(sharded.positions_m() - single.positions_m()).max()) / single.problem.grid.pixel_size,
        loss_single=single.loss_history, loss_sharded=sharded.loss_history,
    )
    print("RESULT" + json.dumps(out), flush=True)
    """
)


def test_two_processes_equal_one_device(data):
    # Several hosts, simulated by two processes of two CPU devices each (gloo collectives): the
    # energies are split over all four devices, each process holding two of them.
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, "-c", MULTIPROCESS, str(data), str(port), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    for out, _ in outputs:
        r = json.loads(out.split("RESULT", 1)[1])
        assert r["global_devices"] == 4 and r["addressable"] == 2  # each process holds half the energies
        assert r["object"] < 2e-5 and r["positions_px"] < 1e-3  # as in the single-process test
        assert r["loss_sharded"] == pytest.approx(r["loss_single"], rel=1e-5)
