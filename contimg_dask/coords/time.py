"""Conversions between the time representations the pipeline meets (all UTC).

- Julian date (UVH5 ``time_array``), days.
- Unix seconds (MSv4/xarray ``time`` coordinate), POSIX seconds since 1970-01-01T00:00:00.
- MJD seconds (Measurement Set ``TIME`` column), seconds since MJD 0.

All are UTC-based counts that ignore leap seconds the same way, so the conversions are exact
affine maps. Use these functions and no other arithmetic on epochs.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from numpy.typing import ArrayLike, NDArray

SECONDS_PER_DAY = 86400.0
JD_UNIX_EPOCH = 2440587.5  # JD of 1970-01-01T00:00:00 UTC
JD_MJD_EPOCH = 2400000.5  # JD of MJD 0
MJD_UNIX_EPOCH_S = (JD_UNIX_EPOCH - JD_MJD_EPOCH) * SECONDS_PER_DAY


def jd_to_unix(jd: ArrayLike) -> NDArray[np.float64]:
    """Julian date (UTC) to Unix seconds."""
    return (np.asarray(jd, dtype=np.float64) - JD_UNIX_EPOCH) * SECONDS_PER_DAY


def unix_to_jd(unix_s: ArrayLike) -> NDArray[np.float64]:
    """Unix seconds to Julian date (UTC)."""
    return np.asarray(unix_s, dtype=np.float64) / SECONDS_PER_DAY + JD_UNIX_EPOCH


def unix_to_mjd_seconds(unix_s: ArrayLike) -> NDArray[np.float64]:
    """Unix seconds to Measurement Set time (MJD seconds, UTC)."""
    return np.asarray(unix_s, dtype=np.float64) + MJD_UNIX_EPOCH_S


def mjd_seconds_to_unix(mjd_s: ArrayLike) -> NDArray[np.float64]:
    """Measurement Set time (MJD seconds, UTC) to Unix seconds."""
    return np.asarray(mjd_s, dtype=np.float64) - MJD_UNIX_EPOCH_S


def datetime_to_unix(when: dt.datetime) -> float:
    """A datetime (naive means UTC) to Unix seconds."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def unix_to_datetime(unix_s: float) -> dt.datetime:
    """Unix seconds to an aware UTC datetime."""
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC)
