"""Primary beam of a DSA-110 dish: the Airy pattern of a uniformly illuminated aperture.

Power response ``(2 J1(x) / x)^2`` with ``x = π D sin(θ) / λ``; half-power full width
≈ 1.029 λ/D (2.7° for D = 4.65 m at 1.405 GHz), first null at 1.22 λ/D.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq
from scipy.special import j1

from contimg_dask.constants import SPEED_OF_LIGHT


def airy_power_beam(offset_rad: ArrayLike, freq_hz: ArrayLike,
                    diameter_m: float) -> NDArray[np.float64]:
    """Power response (1 on axis) at angular offset ``offset_rad`` from the pointing.

    ``offset_rad`` and ``freq_hz`` broadcast against each other.
    """
    offset, freq = np.broadcast_arrays(np.asarray(offset_rad, float), np.asarray(freq_hz, float))
    x = np.pi * diameter_m * np.sin(offset) * freq / SPEED_OF_LIGHT
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.where(np.abs(x) < 1e-8, 1.0, 2.0 * j1(x) / x)
    return amp * amp


def airy_fwhm_rad(freq_hz: float, diameter_m: float) -> float:
    """Full width at half power (rad), solved numerically from the Airy pattern."""
    wavelength = SPEED_OF_LIGHT / freq_hz
    first_null = 1.2197 * wavelength / diameter_m
    half = brentq(lambda t: airy_power_beam(t, freq_hz, diameter_m) - 0.5, 1e-9, first_null)
    return 2.0 * half
