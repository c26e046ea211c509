"""Bandwidth smearing: the peak loss of a point source at an offset from the phase centre when
visibilities are averaged over a channel width (a square bandpass, Gaussian synthesised beam;
Bridle & Schwab 1999, eq. 18-43)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erf


def bandwidth_smearing_peak_ratio(offset_rad: ArrayLike, channel_width_hz: float,
                                  freq_hz: float, beam_fwhm_rad: float) -> NDArray[np.float64]:
    """Smeared peak / true peak at ``offset_rad`` from the phase centre.

    With beta = (dnu / nu) (theta / theta_HPBW):
    I / I0 = sqrt(pi) / (2 sqrt(ln 2)) / beta * erf(sqrt(ln 2) beta)  (1 at beta = 0).
    """
    beta = np.abs(np.asarray(offset_rad, float)) * abs(channel_width_hz) / (
        freq_hz * beam_fwhm_rad)
    ln2 = np.log(2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.sqrt(np.pi) / (2 * np.sqrt(ln2) * beta) * erf(np.sqrt(ln2) * beta)
    return np.where(beta < 1e-9, 1.0, ratio)
