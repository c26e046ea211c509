"""The drift-averaged primary beam against analytic values and an independent integral."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from scipy.integrate import quad
from scipy.special import jn_zeros

from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.ops.primary_beam import (
    angular_separation,
    drift_averaged_beam,
    drift_averaged_beam_on_grid,
    tracked_beam_coefficients,
    tracking_scale,
)
from contimg_dask.telescope import airy_fwhm_rad, airy_power_beam

D = 4.65
NU = 1.405e9
SIDEREAL_DAY_S = 86164.0905
BLOCK_S = 24 * 12.884902


def drift_track(dec_rad: float, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Integration centres of one block's pointing, centred on RA 0 (ICRS, rad)."""
    span = 2 * np.pi * BLOCK_S / SIDEREAL_DAY_S
    return ((np.arange(n) + 0.5) / n - 0.5) * span, np.full(n, dec_rad)


def test_separation_agrees_with_astropy() -> None:
    rng = np.random.default_rng(1)
    ra1, ra2 = rng.uniform(0, 2 * np.pi, (2, 50))
    dec1, dec2 = rng.uniform(-np.pi / 2, np.pi / 2, (2, 50))
    expected = SkyCoord(ra1 * u.rad, dec1 * u.rad).separation(
        SkyCoord(ra2 * u.rad, dec2 * u.rad)).rad
    np.testing.assert_allclose(angular_separation(ra1, dec1, ra2, dec2), expected, atol=1e-12)


def test_single_pointing_is_the_airy_pattern_at_its_analytic_points() -> None:
    dec = np.radians(16.0)
    half_power = airy_fwhm_rad(NU, D) / 2
    # First null of (2 J1(x)/x)^2: x = first zero of J1, x = pi D sin(theta) / lambda.
    null = np.arcsin(jn_zeros(1, 1)[0] * SPEED_OF_LIGHT / NU / (np.pi * D))
    ra = np.array([0.0, half_power, null]) / np.cos(dec)
    # Offsets along RA at constant dec are not great circles: use the true separations.
    beam = drift_averaged_beam(ra, dec, [0.0], [dec], [NU], D)[0]
    np.testing.assert_allclose(beam[0], 1.0)
    sep = angular_separation(0.0, dec, ra, dec)
    np.testing.assert_allclose(beam, airy_power_beam(sep, NU, D), rtol=1e-12)
    # The same points along a meridian are exact: 1, 1/2, 0.
    beam = drift_averaged_beam(0.0, dec + np.array([0.0, half_power, null]), [0.0], [dec],
                               [NU], D)[0]
    np.testing.assert_allclose(beam, [1.0, 0.5, 0.0], atol=1e-9)
    # FWHM about 1.03 lambda/D = 2.7 deg at 1.405 GHz (DSA110.md).
    assert np.degrees(2 * half_power) == pytest.approx(2.71, abs=0.01)


@pytest.mark.parametrize("dec_deg", [16.0, 54.0])
@pytest.mark.parametrize("east_deg", [0.0, 1.0, 2.0])
def test_drift_average_equals_the_integral_along_the_track(dec_deg: float,
                                                           east_deg: float) -> None:
    dec = np.radians(dec_deg)
    track_ra, track_dec = drift_track(dec)
    ra = np.radians(east_deg) / np.cos(dec)
    span = 2 * np.pi * BLOCK_S / SIDEREAL_DAY_S

    def beam_at(pointing_ra: float) -> float:
        return float(airy_power_beam(angular_separation(pointing_ra, dec, ra, dec), NU, D))

    integral = quad(beam_at, -span / 2, span / 2, epsabs=1e-12)[0] / span
    averaged = drift_averaged_beam(ra, dec, track_ra, track_dec, [NU], D)[0]
    # 24 midpoint samples of a smooth function against its integral.
    assert averaged == pytest.approx(integral, abs=2e-4)


def test_drift_average_differs_from_the_static_beam_as_documented() -> None:
    """DSA110.md: about -5 % at the centre and +13 % at 2 deg in RA at dec 16 deg; -2 % and
    +5 % at dec 54 deg."""
    for dec_deg, centre, edge in ((16.0, -0.045, 0.125), (54.0, -0.018, 0.048)):
        dec = np.radians(dec_deg)
        track = drift_track(dec)
        ra = np.radians([0.0, 2.0]) / np.cos(dec)
        averaged = drift_averaged_beam(ra, dec, *track, [NU], D)[0]
        static = drift_averaged_beam(ra, dec, [0.0], [dec], [NU], D)[0]
        ratio = averaged / static - 1
        assert ratio[0] == pytest.approx(centre, abs=0.01), dec_deg
        assert ratio[1] == pytest.approx(edge, abs=0.015), dec_deg


def test_frequency_dependence_scales_with_wavelength() -> None:
    """The Airy beam depends on sin(theta) * nu only: at twice the frequency, half the
    offset gives the same response."""
    dec = np.radians(16.0)
    north = np.radians(np.array([0.3, 0.8, 1.4]))
    static_low = drift_averaged_beam(0.0, dec + north, [0.0], [dec], [NU], D)[0]
    static_high = drift_averaged_beam(0.0, dec + np.arcsin(np.sin(north) / 2), [0.0], [dec],
                                      [2 * NU], D)[0]
    assert np.all(np.diff(static_low) < 0)
    np.testing.assert_allclose(static_high, static_low, rtol=1e-9)


def test_grid_interpolation_matches_exact_evaluation() -> None:
    dec0 = np.radians(16.0)
    # 3.3 deg field, coarse grid every 4 pixels (0.02 deg, as the image stage uses).
    n, cell = 661, np.radians(18 / 3600)
    offsets = (np.arange(n) - n // 2) * cell
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    dec = dec0 + dy
    ra = dx / np.cos(dec)
    track = drift_track(dec0)
    freqs = np.array([1.32e9, 1.405e9, 1.49e9])
    exact = drift_averaged_beam(ra, dec, *track, freqs, D).mean(axis=0)
    gridded = drift_averaged_beam_on_grid(ra, dec, *track, freqs, D, step=4)
    assert np.max(np.abs(gridded - exact)) < 2e-4
    assert gridded[328, 328] == pytest.approx(exact[328, 328], abs=1e-12)  # a grid node


def test_beam_tracking_holds_the_source_constant_and_the_image_beam_follows() -> None:
    """Data of each integration times g = mean B(s0) / B(s0, t): the tracked source s0 has
    its drift-averaged flux in every integration, and the image's beam (the coefficients
    applied to the per-integration beam) is that mean at s0. Elsewhere the beam is the
    inverse-variance weighted mean of the rescaled data, computed here directly from
    visibilities of a source at s (noise-free): sum_t (w/g^2) (g B S) / sum_t (w/g^2)."""
    dec0 = np.radians(16.0)
    track = drift_track(dec0)
    freqs = np.array([1.32e9, 1.49e9])
    s0 = (np.radians(0.4), dec0 + np.radians(0.3))
    beam_s0 = np.stack([airy_power_beam(angular_separation(*s0, ra, de), freqs, D)
                        for ra, de in zip(*track, strict=True)])  # (time, freq)
    scale = tracking_scale(beam_s0)
    np.testing.assert_allclose(scale * beam_s0, beam_s0.mean(axis=0)[None, :].repeat(24, 0),
                               rtol=1e-12)
    assert np.ptp(scale) > 0.2  # the source does drift through the beam
    weights = np.linspace(0.5, 1.5, 24)  # e.g. flags differing between integrations
    coefficients = tracked_beam_coefficients(scale, weights)
    image_beam_s0 = drift_averaged_beam(*s0, *track, freqs, D, coefficients,
                                        normalise=False)
    np.testing.assert_allclose(image_beam_s0, beam_s0.mean(axis=0), rtol=1e-12)
    s = (np.radians(-1.2), dec0 - np.radians(0.5))
    beam_s = np.stack([airy_power_beam(angular_separation(*s, ra, de), freqs, D)
                       for ra, de in zip(*track, strict=True)])
    inverse_variance = weights[:, None] / scale ** 2
    direct = (inverse_variance * scale * beam_s).sum(axis=0) / inverse_variance.sum(axis=0)
    np.testing.assert_allclose(drift_averaged_beam(*s, *track, freqs, D, coefficients,
                                                   normalise=False), direct, rtol=1e-12)
    np.testing.assert_allclose(tracked_beam_coefficients(np.ones((24, 2))),
                               np.full((24, 2), 1 / 24), rtol=1e-12)


def test_bandwidth_smearing_against_numerical_average() -> None:
    """The closed form against a direct average of a Gaussian beam's peak response across a
    square band (the source's image moves radially by theta * (nu' / nu - 1))."""
    from contimg_dask.ops.smearing import bandwidth_smearing_peak_ratio

    fwhm = np.radians(27 / 3600)
    sigma = fwhm / np.sqrt(8 * np.log(2))
    nu, width = 1.405e9, 0.732e6
    for offset_deg in (0.5, 1.5, 2.0, 6.0):
        theta = np.radians(offset_deg)
        nus = nu + width * (np.arange(2001) / 2000 - 0.5)
        shift = theta * (nus / nu - 1)
        numeric = np.mean(np.exp(-0.5 * (shift / sigma) ** 2))
        closed = bandwidth_smearing_peak_ratio(theta, width, nu, fwhm)
        assert closed == pytest.approx(numeric, rel=1e-3), offset_deg
    assert bandwidth_smearing_peak_ratio(0.0, width, nu, fwhm) == 1.0
