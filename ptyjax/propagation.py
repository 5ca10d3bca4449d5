"""Far-field propagation, shared by the simulator and the reconstruction model.

A real-space frame of N pixels has its optical axis at pixel ``N // 2``; detector frames are stored
with zero frequency at pixel ``N // 2`` too (``fftshift``-ed, as in CXI files). Transforms are unitary
(``norm="ortho"``), so ``sum |psi|^2`` of an exit wave equals the photon count of its frame.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def centring_phases(n: int, sign: int = -1):
    """Factors (input, output), each (n,), that replace the shifts around a length-``n`` DFT with
    exponent sign ``sign`` (-1 forward, +1 inverse): with ``m = n // 2``,
    ``fftshift(dft(ifftshift(x)))[k] = out_k dft(in * x)[k]``, ``in_j = exp(-sign 2 pi i j m / n)``,
    ``out_k = exp(-sign 2 pi i m (k - m) / n)``: ``ifftshift`` (a shift by ``m``) multiplies the
    transform by a phase, and ``fftshift`` of the transform is the transform of ``x`` times a phase.
    For even ``n`` both are ``(-1)^j`` and ``(-1)^(k - m)``, exact in floating point. Multiplies
    fuse with their neighbours where the shifts' copies did not (~10 % of a CPU step's thread time,
    JAX profiler, small preset).
    """
    m = n // 2
    j = np.arange(n)
    if n % 2 == 0:
        checker = np.where(j % 2 == 0, 1.0, -1.0).astype(np.float32)
        return checker, (checker if m % 2 == 0 else -checker)
    return (np.exp(-sign * 2j * np.pi * j * m / n).astype(np.complex64),
            np.exp(-sign * 2j * np.pi * m * (j - m) / n).astype(np.complex64))


def _centred(transform, wave, sign):
    """``fftshift(transform(ifftshift(wave)))`` over the last two axes, by phase factors."""
    (in_y, out_y), (in_x, out_x) = centring_phases(wave.shape[-2], sign), centring_phases(wave.shape[-1], sign)
    return transform(wave * (in_y[:, None] * in_x[None, :]), norm="ortho") * (out_y[:, None] * out_x[None, :])


def farfield(wave):
    """Far-field (Fraunhofer) wave of ``wave`` (..., N, N), zero frequency at the frame centre."""
    return _centred(jnp.fft.fft2, wave, -1)


def to_sample_plane(farfield_wave):
    """Inverse of :func:`farfield`."""
    return _centred(jnp.fft.ifft2, farfield_wave, +1)


def farfield_intensity(exit_waves, mode_axis=-3):
    """Detector intensity: far-field intensities summed over incoherent modes (``mode_axis``)."""
    return intensity(farfield(exit_waves), mode_axis)


def intensity(waves, mode_axis=-3):
    """Intensity of waves summed over their incoherent modes (``mode_axis``)."""
    return jnp.sum(jnp.abs(waves) ** 2, axis=mode_axis)


def fresnel_propagate(wave, pixel_size_m, wavelength_m, distance_m):
    """Angular-spectrum propagation of ``wave`` (..., N, N) by ``distance_m`` (m, positive downstream).

    Used to defocus probes: a probe focused at the sample becomes, ``distance_m`` downstream, this.
    """
    n_y, n_x = wave.shape[-2:]
    fy = jnp.fft.fftfreq(n_y, d=pixel_size_m)
    fx = jnp.fft.fftfreq(n_x, d=pixel_size_m)
    fy, fx = jnp.meshgrid(fy, fx, indexing="ij")
    # Paraxial transfer function exp(-i pi lambda z (fx^2 + fy^2)); the constant phase exp(ikz) is dropped.
    transfer = jnp.exp(-1j * jnp.pi * wavelength_m * distance_m * (fx**2 + fy**2))
    return jnp.fft.ifft2(jnp.fft.fft2(wave) * transfer)
