"""WGS84 geodetic, ECEF (ITRF) and local ENU coordinates. Metres and radians throughout."""

from __future__ import annotations

import erfa
import numpy as np
from numpy.typing import ArrayLike, NDArray

WGS84 = 1  # ERFA ellipsoid identifier


def geodetic_to_ecef(longitude_rad: ArrayLike, latitude_rad: ArrayLike,
                     height_m: ArrayLike) -> NDArray[np.float64]:
    """WGS84 (longitude, latitude, height) to ECEF (x, y, z), shape (..., 3), metres."""
    return erfa.gd2gc(WGS84, np.asarray(longitude_rad, float), np.asarray(latitude_rad, float),
                      np.asarray(height_m, float))


def enu_rotation(longitude_rad: float, latitude_rad: float) -> NDArray[np.float64]:
    """Matrix taking ECEF offsets to local (east, north, up) at the given geodetic position."""
    sl, cl = np.sin(longitude_rad), np.cos(longitude_rad)
    sp, cp = np.sin(latitude_rad), np.cos(latitude_rad)
    return np.array([
        [-sl, cl, 0.0],
        [-sp * cl, -sp * sl, cp],
        [cp * cl, cp * sl, sp],
    ])


def ecef_offsets_to_enu(offsets: ArrayLike, longitude_rad: float,
                        latitude_rad: float) -> NDArray[np.float64]:
    """ECEF offsets (..., 3) from a reference point to ENU (..., 3) at that point."""
    return np.asarray(offsets, float) @ enu_rotation(longitude_rad, latitude_rad).T
