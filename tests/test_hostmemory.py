"""Freed XLA:CPU temporaries are reused instead of faulted in afresh at every call (ptyjax.hostmemory)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ptyjax import hostmemory

PROBE = """
import resource, ptyjax, jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.abs(jnp.fft.ifft2(2 * jnp.fft.fft2(x)))))
x = jnp.ones((32, 512, 512), jnp.complex64)  # 64 MB, temporaries of the same size
for _ in range(8):  # the heap settles after a few calls
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
"""


def page_faults_per_call(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(hostmemory._glibc() is None, reason="glibc malloc settings only")
def test_temporaries_are_reused_not_faulted_in_again():
    system = page_faults_per_call(PTYJAX_SYSTEM_MALLOC="1")
    # The median of three processes: which calls still fault depends on where each process's heap
    # places the temporaries (measured per process: 0, 4096, 8192, 12 288 or 16 384 pages per call).
    kept = float(np.median([page_faults_per_call(PTYJAX_SYSTEM_MALLOC="0") for _ in range(3)]))
    # The system allocator unmaps the 64 MB temporaries: ~32 000 fresh 4 KiB pages per call.
    assert system > 10_000, system
    assert kept < 0.5 * system, (kept, system)


@pytest.mark.parametrize(
    "environ, accelerator, expected",
    [
        ({}, False, True),  # plain CPU install
        ({}, True, False),  # a CUDA/ROCm/TPU backend is installed: JAX prefers it
        ({"JAX_PLATFORMS": "cpu"}, True, True),  # CPU asked for explicitly
        ({"JAX_PLATFORMS": "cuda,cpu"}, False, False),
        ({"JAX_PLATFORM_NAME": "CPU"}, True, True),  # the older variable, any case
        ({"JAX_PLATFORMS": " gpu "}, False, False),
    ],
)
def test_cpu_only_follows_jax_platform_choice(environ, accelerator, expected):
    assert hostmemory.cpu_only(environ, lambda: accelerator) is expected


@pytest.mark.skipif(hostmemory._glibc() is None, reason="glibc malloc settings only")
def test_settings_applied_for_cpu_runs_only_unless_forced():
    # Re-applying in this process is harmless: importing ptyjax applied the same settings on this CPU.
    assert hostmemory.configure_from_environment({"JAX_PLATFORMS": "cpu"}) is True
    assert hostmemory.configure_from_environment({"JAX_PLATFORMS": "cuda"}) is False
    assert hostmemory.configure_from_environment({"JAX_PLATFORMS": "cuda", "PTYJAX_SYSTEM_MALLOC": "0"}) is True
    assert hostmemory.configure_from_environment({"JAX_PLATFORMS": "cpu", "PTYJAX_SYSTEM_MALLOC": "1"}) is False
