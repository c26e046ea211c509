"""Apparent positions, sidereal time and Earth orientation (ERFA, offline IERS data).

"Apparent" here means what DSA-110's correlator and pyuvdata mean: topocentric, of date,
equinox-based right ascension and declination (precession, nutation, annual and diurnal
aberration, light deflection; no refraction). The apparent right ascension of hour angle 0
is the local apparent sidereal time.

Earth orientation (UT1-UTC, polar motion) comes from astropy's bundled IERS tables; downloads
are switched off on import so the pipeline never reaches for the network.
"""

from __future__ import annotations

import erfa
import numpy as np
from astropy.time import Time
from astropy.utils import iers
from numpy.typing import ArrayLike, NDArray

iers.conf.auto_download = False
iers.conf.iers_degraded_accuracy = "warn"

TWO_PI = 2.0 * np.pi


def _times(jd_utc: ArrayLike) -> Time:
    return Time(np.atleast_1d(np.asarray(jd_utc, dtype=np.float64)), format="jd", scale="utc")


def earth_orientation(jd_utc: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """UT1-UTC (s) and polar motion x, y (rad) at the given UTC Julian dates."""
    times = _times(jd_utc)
    table = iers.earth_orientation_table.get()
    dut1 = np.asarray(table.ut1_utc(times).to_value("s"))
    xp, yp = table.pm_xy(times)
    return dut1, np.asarray(xp.to_value("rad")), np.asarray(yp.to_value("rad"))


def local_apparent_sidereal_time(jd_utc: ArrayLike, longitude_rad: float) -> NDArray:
    """Local apparent sidereal time (rad, [0, 2π)) at east longitude ``longitude_rad``.

    GAST (IAU 2006/2000A) plus the TIO locator s' plus the longitude.
    """
    times = _times(jd_utc)
    dut1, _, _ = earth_orientation(jd_utc)
    ut1 = Time(times.jd1, times.jd2, format="jd", scale="utc")
    ut1.delta_ut1_utc = dut1
    ut1 = ut1.ut1
    tt = times.tt
    gast = erfa.gst06a(ut1.jd1, ut1.jd2, tt.jd1, tt.jd2)
    sp = erfa.sp00(tt.jd1, tt.jd2)
    return np.mod(gast + sp + longitude_rad, TWO_PI)


def icrs_to_apparent(
    ra_rad: ArrayLike,
    dec_rad: ArrayLike,
    jd_utc: ArrayLike,
    longitude_rad: float,
    latitude_rad: float,
    height_m: float,
) -> tuple[NDArray, NDArray]:
    """ICRS (ra, dec) to apparent topocentric equinox-based (ra, dec), radians.

    ``ra``/``dec`` and ``jd_utc`` broadcast against each other.
    """
    ra, dec, jd = np.broadcast_arrays(
        np.asarray(ra_rad, float), np.asarray(dec_rad, float), np.asarray(jd_utc, float)
    )
    dut1, xp, yp = earth_orientation(jd.ravel())
    times = _times(jd.ravel())
    out = erfa.atco13(
        ra.ravel(), dec.ravel(), 0.0, 0.0, 0.0, 0.0,
        times.jd1, times.jd2, dut1,
        longitude_rad, latitude_rad, height_m, xp, yp,
        0.0, 0.0, 0.0, 0.0,
    )
    app_dec, cio_ra, eqn_origins = out[3], out[4], out[5]
    app_ra = np.mod(cio_ra - eqn_origins, TWO_PI)
    return app_ra.reshape(jd.shape), app_dec.reshape(jd.shape)


def apparent_to_icrs(
    app_ra_rad: ArrayLike,
    app_dec_rad: ArrayLike,
    jd_utc: ArrayLike,
    longitude_rad: float,
    latitude_rad: float,
    height_m: float,
) -> tuple[NDArray, NDArray]:
    """Apparent topocentric equinox-based (ra, dec) to ICRS (ra, dec), radians."""
    ra, dec, jd = np.broadcast_arrays(
        np.asarray(app_ra_rad, float), np.asarray(app_dec_rad, float),
        np.asarray(jd_utc, float),
    )
    dut1, xp, yp = earth_orientation(jd.ravel())
    times = _times(jd.ravel())
    tt = times.tt
    bpn = erfa.pnm06a(tt.jd1, tt.jd2)
    x, y = erfa.bpn2xy(bpn)
    eqn_origins = erfa.eors(bpn, erfa.s06(tt.jd1, tt.jd2, x, y))
    icrs_ra, icrs_dec = erfa.atoc13(
        "R", ra.ravel() + eqn_origins, dec.ravel(),
        times.jd1, times.jd2, dut1,
        longitude_rad, latitude_rad, height_m, xp, yp,
        0.0, 0.0, 0.0, 0.0,
    )
    return np.mod(icrs_ra, TWO_PI).reshape(jd.shape), icrs_dec.reshape(jd.shape)


def angular_separation(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike,
                       dec2: ArrayLike) -> NDArray:
    """Great-circle separation (rad) between (ra1, dec1) and (ra2, dec2), all radians."""
    return erfa.seps(np.asarray(ra1, float), np.asarray(dec1, float),
                     np.asarray(ra2, float), np.asarray(dec2, float))


def icrs_position_angle(app_ra_rad: ArrayLike, app_dec_rad: ArrayLike, jd_utc: ArrayLike,
                        longitude_rad: float, latitude_rad: float, height_m: float,
                        offset_rad: float = np.radians(0.5)) -> NDArray:
    """Angle (rad) from apparent north to ICRS north at apparent positions (ra, dec).

    UVWs computed in the apparent frame are rotated about w by this angle so that v points to
    ICRS north, the frame the Measurement Set and the block store declare. Measured, as
    pyuvdata does, from two points ``offset_rad`` north and south of the position.
    """
    ra, dec, jd = np.broadcast_arrays(np.asarray(app_ra_rad, float),
                                      np.asarray(app_dec_rad, float), np.asarray(jd_utc, float))
    site = (longitude_rad, latitude_rad, height_m)
    up_ra, up_dec = apparent_to_icrs(ra, dec + offset_rad, jd, *site)
    dn_ra, dn_dec = apparent_to_icrs(ra, dec - offset_rad, jd, *site)
    return -erfa.pas(dn_ra, dn_dec, up_ra, up_dec)
