"""Time scales, frames and UVWs tied to astropy, ERFA and pyuvdata."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation
from astropy.time import Time
from pyuvdata.utils.phasing import (
    calc_frame_pos_angle,
    calc_uvw,
    transform_app_to_icrs,
    transform_icrs_to_app,
)
from pyuvdata.utils.times import get_lst_for_time

from contimg_dask.coords.frames import (
    apparent_to_icrs,
    icrs_position_angle,
    icrs_to_apparent,
    local_apparent_sidereal_time,
)
from contimg_dask.coords.time import (
    datetime_to_unix,
    jd_to_unix,
    mjd_seconds_to_unix,
    unix_to_jd,
    unix_to_mjd_seconds,
)
from contimg_dask.ops.uvw import ecef_to_local_meridian, rotate_uv, uvw_from_hadec, w_towards

LON, LAT, HEIGHT = -2.0644277991, 0.6498455107, 1188.0519
JD = 2461120.8333333 + np.arange(24) * 12.884902 / 86400


def test_time_conversions_agree_with_astropy() -> None:
    t = Time(JD, format="jd", scale="utc")
    np.testing.assert_allclose(jd_to_unix(JD), t.unix, atol=1e-5)
    np.testing.assert_allclose(unix_to_mjd_seconds(jd_to_unix(JD)), t.mjd * 86400, atol=1e-5)
    np.testing.assert_allclose(unix_to_jd(jd_to_unix(JD)), JD, rtol=0, atol=1e-11)
    np.testing.assert_allclose(mjd_seconds_to_unix(unix_to_mjd_seconds(1e9)), 1e9, atol=1e-6)
    assert datetime_to_unix(dt.datetime(2026, 3, 21, 8)) == Time("2026-03-21T08:00:00").unix


def test_sidereal_time_agrees_with_pyuvdata_and_astropy() -> None:
    ours = local_apparent_sidereal_time(JD, LON)
    pyuv = get_lst_for_time(JD, telescope_loc=EarthLocation.from_geodetic(
        LON * u.rad, LAT * u.rad, HEIGHT * u.m))
    np.testing.assert_allclose(ours, pyuv, atol=1e-9)
    astropy_last = Time(JD, format="jd", scale="utc").sidereal_time(
        "apparent", longitude=LON * u.rad).rad
    assert np.max(np.abs(ours - astropy_last)) < np.radians(0.01 / 3600)  # 10 mas


def test_apparent_positions_agree_with_pyuvdata() -> None:
    location = EarthLocation.from_geodetic(LON * u.rad, LAT * u.rad, HEIGHT * u.m)
    ra, dec = np.radians(123.4), np.radians(16.3)
    app_ra, app_dec = icrs_to_apparent(ra, dec, JD, LON, LAT, HEIGHT)
    ref_ra, ref_dec = transform_icrs_to_app(time_array=JD, ra=np.full(JD.size, ra),
                                            dec=np.full(JD.size, dec), telescope_loc=location)
    np.testing.assert_allclose(app_ra, ref_ra, atol=1e-10)  # 20 µas
    np.testing.assert_allclose(app_dec, ref_dec, atol=1e-10)
    # Precession since J2000 alone moves the field ~0.35 deg: the frames are not the same.
    assert abs(app_ra[0] - ra) > np.radians(0.1)
    back_ra, back_dec = apparent_to_icrs(app_ra, app_dec, JD, LON, LAT, HEIGHT)
    np.testing.assert_allclose(back_ra, ra, atol=1e-10)
    np.testing.assert_allclose(back_dec, dec, atol=1e-10)
    ref_back = transform_app_to_icrs(time_array=JD, app_ra=app_ra, app_dec=app_dec,
                                     telescope_loc=location)
    np.testing.assert_allclose(back_ra, ref_back[0], atol=1e-10)


@pytest.mark.parametrize("dec_deg", [-5.0, 16.1, 54.6, 80.0])
def test_uvw_agrees_with_pyuvdata(dec_deg: float) -> None:
    rng = np.random.default_rng(3)
    ecef = rng.uniform(-1500, 1500, (50, 3))
    ha = rng.uniform(-0.3, 0.3, 50)
    lst = rng.uniform(0, 2 * np.pi, 50)
    dec = np.radians(dec_deg)
    ours = uvw_from_hadec(ecef_to_local_meridian(ecef, LON), ha, dec)
    theirs = calc_uvw(app_ra=lst - ha, app_dec=np.full(50, dec), lst_array=lst,
                      use_ant_pos=True, antenna_positions=np.vstack([np.zeros(3), ecef]),
                      antenna_numbers=np.arange(51), ant_1_array=np.zeros(50, int),
                      ant_2_array=np.arange(1, 51), telescope_lon=LON, telescope_lat=LAT)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)  # nanometres on km baselines


@pytest.mark.parametrize("dec_deg", [-5.0, 16.1, 54.6])
def test_w_towards_agrees_with_pyuvdata(dec_deg: float) -> None:
    """The path difference the simulator and the calibration model share (w alone) is
    pyuvdata's w, for the phase centre and for directions away from it."""
    rng = np.random.default_rng(4)
    ecef = rng.uniform(-1500, 1500, (50, 3))
    ha = rng.uniform(-0.3, 0.3, 50)
    lst = rng.uniform(0, 2 * np.pi, 50)
    dec = np.radians(dec_deg) + rng.uniform(-0.05, 0.05, 50)
    ours = w_towards(ecef_to_local_meridian(ecef, LON), ha, dec)
    theirs = calc_uvw(app_ra=lst - ha, app_dec=dec, lst_array=lst,
                      use_ant_pos=True, antenna_positions=np.vstack([np.zeros(3), ecef]),
                      antenna_numbers=np.arange(51), ant_1_array=np.zeros(50, int),
                      ant_2_array=np.arange(1, 51), telescope_lon=LON, telescope_lat=LAT)
    np.testing.assert_allclose(ours, theirs[:, 2], atol=1e-9)
    assert np.abs(theirs[:, 2]).max() > 100  # not trivially zero


def test_angular_separation_agrees_with_astropy() -> None:
    from astropy.coordinates import SkyCoord

    from contimg_dask.coords.frames import angular_separation

    rng = np.random.default_rng(6)
    ra1, ra2 = rng.uniform(0, 2 * np.pi, (2, 100))
    dec1, dec2 = rng.uniform(-1.5, 1.5, (2, 100))
    theirs = SkyCoord(ra1 * u.rad, dec1 * u.rad).separation(SkyCoord(ra2 * u.rad,
                                                                     dec2 * u.rad)).rad
    np.testing.assert_allclose(angular_separation(ra1, dec1, ra2, dec2), theirs, atol=1e-12)


@pytest.mark.parametrize("app_ra", [0.5, 3.15, 5.0])
def test_uvw_in_icrs_orientation_agrees_with_pyuvdata(app_ra: float) -> None:
    """(u, v) turned from apparent to ICRS north, as the MS and the block store declare."""
    location = EarthLocation.from_geodetic(LON * u.rad, LAT * u.rad, HEIGHT * u.m)
    jd = np.full(50, JD[0])
    ecef = np.random.default_rng(1).uniform(-1500, 1500, (50, 3))
    ra, dec, lst = np.full(50, app_ra), np.full(50, 1.1), np.full(50, app_ra + 0.05)
    pa_ref = calc_frame_pos_angle(time_array=jd, app_ra=ra, app_dec=dec,
                                  telescope_loc=location, ref_frame="icrs")
    pa = icrs_position_angle(ra, dec, jd, LON, LAT, HEIGHT)
    np.testing.assert_allclose(pa, pa_ref, atol=1e-12)
    assert np.abs(pa).max() > 1e-4  # precession: not a negligible rotation
    theirs = calc_uvw(app_ra=ra, app_dec=dec, lst_array=lst, frame_pa=pa_ref, use_ant_pos=True,
                      antenna_positions=np.vstack([np.zeros(3), ecef]),
                      antenna_numbers=np.arange(51), ant_1_array=np.zeros(50, int),
                      ant_2_array=np.arange(1, 51), telescope_lon=LON, telescope_lat=LAT)
    ours = rotate_uv(uvw_from_hadec(ecef_to_local_meridian(ecef, LON), lst - ra, dec), pa)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


@pytest.mark.parametrize("uniform", [True, False])
def test_rotation_kernel_is_the_phase_rotation(uniform: bool) -> None:
    """The Numba kernel (phasor recurrence on uniform channels) equals the direct formula
    V·exp(-2πi ν (w_new - w_old)/c) to complex64 precision; conjugated, in place and from a
    frequency-reversed view as well."""
    from contimg_dask.ops.phasing import rotate_by_path_difference

    rng = np.random.default_rng(0)
    shape = (3, 5, 48, 2)
    vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    w_old, w_new = rng.uniform(-2600, 2600, (2, 3, 5))
    freq = 1.311e9 + np.arange(48) * 244140.625
    if not uniform:
        freq[7] += 5e4
    expected = vis * np.exp(-2j * np.pi * freq[None, None, :, None]
                            * (w_new - w_old)[:, :, None, None] / 299792458.0)
    tolerance = 1e-6 * np.abs(expected).max()
    got = rotate_by_path_difference(vis, w_new - w_old, freq)
    assert np.abs(got - expected).max() < tolerance
    in_place = vis.copy()
    rotate_by_path_difference(in_place, w_new - w_old, freq, out=in_place, conjugate=True)
    assert np.abs(in_place - np.conj(expected)).max() < tolerance
    got = rotate_by_path_difference(vis[:, :, ::-1], w_new - w_old, freq[::-1])  # strided
    assert np.abs(got[:, :, ::-1] - expected).max() < tolerance
