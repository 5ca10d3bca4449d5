"""Far-field propagation, shared by the simulator and the reconstruction model.

A real-space frame of N pixels has its optical axis at pixel ``N // 2``; detector frames are stored
with zero frequency at pixel ``N // 2`` too (``fftshift``-ed, as in CXI files). Transforms are unitary
(``norm="ortho"``), so ``sum |psi|^2`` of an exit wave equals the photon count of its frame.
"""

from __future__ import annotations

import jax.numpy as jnp


def farfield(wave):
    """Far-field (Fraunhofer) wave of ``wave`` (..., N, N), zero frequency at the frame centre."""
    axes = (-2, -1)
    return jnp.fft.fftshift(jnp.fft.fft2(jnp.fft.ifftshift(wave, axes=axes), norm="ortho"), axes=axes)


def to_sample_plane(farfield_wave):
    """Inverse of :func:`farfield`."""
    axes = (-2, -1)
    return jnp.fft.fftshift(jnp.fft.ifft2(jnp.fft.ifftshift(farfield_wave, axes=axes), norm="ortho"), axes=axes)


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
