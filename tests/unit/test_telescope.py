"""The DSA-110 array model against the published layout and independent geodesy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation

from contimg_dask.config import load_config
from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.telescope import Telescope, airy_fwhm_rad, airy_power_beam, load_telescope


@pytest.fixture(scope="module")
def telescope() -> Telescope:
    return load_telescope(load_config(environment="testing", environ={}).telescope)


def test_station_table(telescope: Telescope) -> None:
    assert telescope.n_stations == 117
    assert telescope.antenna_names[:3] == ["1", "2", "3"]
    assert telescope.antenna_names[-1] == "117"
    # DSA-117 has no elevation in the file: filled from its nearest neighbours, not NaN.
    assert np.all(np.isfinite(telescope.stations.elevation_m))
    assert 1175 < telescope.stations.elevation_m[116] < 1190


def test_active_set_comes_from_configuration(telescope: Telescope) -> None:
    assert len(telescope.active_stations) == 96
    inactive = {10, 21, 22, 23, *range(52, 68), 117}
    assert not inactive & set(telescope.active_stations)
    config = load_config(environment="testing", environ={},
                         overrides={"telescope.inactive_stations": [1, 2]})
    assert len(load_telescope(config.telescope).active_stations) == 115


def test_ecef_agrees_with_astropy(telescope: Telescope) -> None:
    s = telescope.stations
    loc = EarthLocation.from_geodetic(s.longitude_deg * u.deg, s.latitude_deg * u.deg,
                                      s.elevation_m * u.m, ellipsoid="WGS84")
    astropy_xyz = np.stack([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)], -1)
    np.testing.assert_allclose(telescope.ecef, astropy_xyz, atol=1e-6)


def test_reference_position_matches_casa_ovro_mma(telescope: Telescope) -> None:
    # CASA's Observatories table: OVRO_MMA at -118.283 deg, 37.2334051 deg, 1188.0519 m.
    assert np.degrees(telescope.longitude_rad) == pytest.approx(-118.283, abs=1e-6)
    assert np.degrees(telescope.latitude_rad) == pytest.approx(37.2334051, abs=1e-6)
    assert telescope.height_m == pytest.approx(1188.0519)


def test_arms_are_east_west_and_north_south(telescope: Telescope) -> None:
    enu = telescope.enu
    ew = enu[0:51]  # DSA-001..051 lie on the east-west arm
    ns = enu[51:102]  # DSA-052..102 lie on the north-south arm, DSA-103..117 are outriggers
    ew_dir = np.polyfit(ew[:, 0], ew[:, 1], 1)[0]
    ns_dir = np.polyfit(ns[:, 1], ns[:, 0], 1)[0]
    assert abs(ew_dir) < 1e-3  # north drift per metre east: < 0.06 deg
    assert abs(ns_dir) < 1e-3
    ew_spacing = np.median(np.diff(ew[:, 0]))
    ns_spacing = np.median(np.abs(np.diff(ns[:, 1])))
    assert ew_spacing == pytest.approx(5.75, abs=0.02)
    assert ns_spacing == pytest.approx(8.65, abs=0.05)
    assert 380 < np.ptp(ew[:, 0]) < 420  # about +-200 m
    assert 420 < ns[:, 1].max() < 460  # out to ~440 m


def test_longest_baseline_is_2p6_km(telescope: Telescope) -> None:
    enu = telescope.enu[telescope.active_antenna_numbers]
    longest = np.linalg.norm(enu[:, None] - enu[None], axis=-1).max()
    assert longest == pytest.approx(2600, abs=60)


def test_beam_half_power_width_is_1p03_lambda_over_d() -> None:
    for freq in (1.311e9, 1.405e9, 1.499e9):
        lam_over_d = SPEED_OF_LIGHT / freq / 4.65
        assert airy_fwhm_rad(freq, 4.65) == pytest.approx(1.029 * lam_over_d, rel=1e-3)
    assert np.degrees(airy_fwhm_rad(1.405e9, 4.65)) == pytest.approx(2.7, abs=0.05)


def test_beam_agrees_with_an_independent_airy_pattern() -> None:
    """The beam the simulator applies and the calibrator model uses equals the Airy pattern
    written independently in tests/helpers.py (scipy's J1, the textbook formula), and the
    speed of light is astropy's."""
    from astropy.constants import c

    from tests.helpers import airy_power

    assert c.to_value("m/s") == SPEED_OF_LIGHT
    offset = np.linspace(0, np.radians(6), 400)[:, None]
    freq = np.array([1.311e9, 1.405e9, 1.499e9])[None, :]
    np.testing.assert_allclose(airy_power_beam(offset, freq, 4.65), airy_power(offset, freq),
                               rtol=1e-9, atol=1e-12)


def test_beam_shape() -> None:
    freq = 1.405e9
    lam_over_d = SPEED_OF_LIGHT / freq / 4.65
    assert airy_power_beam(0.0, freq, 4.65) == pytest.approx(1.0)
    assert airy_power_beam(1.2197 * lam_over_d, freq, 4.65) < 1e-6  # first null
    # Wider at lower frequency.
    assert airy_power_beam(0.02, 1.3e9, 4.65) > airy_power_beam(0.02, 1.5e9, 4.65)
