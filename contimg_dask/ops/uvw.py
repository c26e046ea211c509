"""UVW coordinates from antenna positions (float64, metres).

Conventions (pyuvdata's, and the DSA-110 correlator's): the baseline of a row is
``x[ant2] - x[ant1]``; (u, v, w) are its components along east, north and the phase-centre
direction in the apparent (of-date) equatorial frame; the hour angle is the local apparent
sidereal time minus the apparent right ascension. Polar motion is neglected in the
ECEF-to-celestial rotation, as pyuvdata does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def ecef_to_local_meridian(ecef_offsets: ArrayLike, longitude_rad: float) -> NDArray[np.float64]:
    """Rotate ECEF offsets (..., 3) about the pole so x points to the local meridian.

    The result is (X, Y, Z) with X towards (HA 0, dec 0), Y towards (HA -6h, dec 0), Z towards
    the celestial pole: the frame in which (u, v, w) follow from hour angle and declination.
    """
    xyz = np.asarray(ecef_offsets, dtype=np.float64)
    c, s = np.cos(longitude_rad), np.sin(longitude_rad)
    out = np.empty_like(xyz)
    out[..., 0] = c * xyz[..., 0] + s * xyz[..., 1]
    out[..., 1] = -s * xyz[..., 0] + c * xyz[..., 1]
    out[..., 2] = xyz[..., 2]
    return out


def uvw_from_hadec(baselines_xyz: ArrayLike, hour_angle_rad: ArrayLike,
                   dec_rad: ArrayLike) -> NDArray[np.float64]:
    """(u, v, w) of local-meridian baselines (N, 3) towards (hour angle, dec), shape (N, 3).

    ``hour_angle_rad`` and ``dec_rad`` are scalars or length-N arrays (one per row).
    """
    b = np.asarray(baselines_xyz, dtype=np.float64)
    h = np.asarray(hour_angle_rad, dtype=np.float64)
    d = np.asarray(dec_rad, dtype=np.float64)
    sh, ch, sd, cd = np.sin(h), np.cos(h), np.sin(d), np.cos(d)
    x, y, z = b[..., 0], b[..., 1], b[..., 2]
    u = sh * x + ch * y
    v = -sd * ch * x + sd * sh * y + cd * z
    w = cd * ch * x - cd * sh * y + sd * z
    return np.stack([u, v, w], axis=-1)


def w_towards(baselines_xyz: ArrayLike, hour_angle_rad: ArrayLike,
              dec_rad: ArrayLike) -> NDArray[np.float64]:
    """Only the w component (the geometric path difference, m) towards (hour angle, dec)."""
    b = np.asarray(baselines_xyz, dtype=np.float64)
    h = np.asarray(hour_angle_rad, dtype=np.float64)
    d = np.asarray(dec_rad, dtype=np.float64)
    cd = np.cos(d)
    return cd * np.cos(h) * b[..., 0] - cd * np.sin(h) * b[..., 1] + np.sin(d) * b[..., 2]


def rotate_uv(uvw: ArrayLike, angle_rad: ArrayLike) -> NDArray[np.float64]:
    """Rotate (u, v) about w by ``angle_rad`` (e.g. the apparent-to-ICRS position angle)."""
    out = np.array(uvw, dtype=np.float64, copy=True)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u, v = out[..., 0].copy(), out[..., 1].copy()
    out[..., 0] = c * u - s * v
    out[..., 1] = s * u + c * v
    return out
