"""Bandwidth and time smearing: the peak loss of a point source at an offset from the phase
centre when visibilities are averaged over a channel width (a square bandpass, Gaussian
synthesised beam; Bridle & Schwab 1999, eq. 18-43) or over an integration time (the block's
own uv tracks)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erf

from contimg_dask.constants import SPEED_OF_LIGHT


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


#: Earth's rotation rate relative to the stars (rad per second of UT).
EARTH_ROTATION_RAD_PER_S = 7.292115855e-5


def uv_rates(baselines_xyz_m: ArrayLike, hour_angle_rad: float, dec_rad: float,
             freq_hz: float) -> NDArray[np.float64]:
    """d(u, v)/dt (wavelengths per second), shape (N, 2), of local-meridian baselines (N, 3;
    ops/uvw.py's frame) tracking a fixed direction at ``hour_angle_rad``: the Earth's rotation
    times the derivative of u and v with respect to the hour angle."""
    b = np.asarray(baselines_xyz_m, float)
    sh, ch, sd = np.sin(hour_angle_rad), np.cos(hour_angle_rad), np.sin(dec_rad)
    du = ch * b[:, 0] - sh * b[:, 1]
    dv = sd * (sh * b[:, 0] + ch * b[:, 1])
    scale = EARTH_ROTATION_RAD_PER_S * freq_hz / SPEED_OF_LIGHT
    return scale * np.stack([du, dv], axis=-1)


def time_smearing_peak_ratio(uv_rate: ArrayLike, l_rad: float, m_rad: float,
                             integration_s: ArrayLike, weights: ArrayLike | None = None
                             ) -> float:
    """Smeared peak / true peak of a point source at direction cosines (l, m) when each
    visibility averages its uv track over ``integration_s`` (scalar or one per visibility).

    Over an interval the track moves linearly at ``uv_rate`` (N, 2; wavelengths/s, e.g.
    :func:`uv_rates`), so the source's phase 2π (u l + v m) turns at a constant rate and the
    average of its fringe over the interval is sinc((u̇ l + v̇ m) τ) (np.sinc: sin(πx)/(πx));
    the image's peak is the ``weights``-weighted mean of that (default: natural weights)."""
    rate = np.asarray(uv_rate, float)
    fringe = np.sinc((rate[:, 0] * l_rad + rate[:, 1] * m_rad)
                     * np.asarray(integration_s, float))
    return float(np.average(fringe, weights=weights))
