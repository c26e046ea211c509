"""The mosaic's algorithms on their own (ops/mosaic): grid choice across RA 0/360, the
PB²/σ² accumulation against the weighted mean written out by hand, the beam algebra against
Gaussian moments."""

from __future__ import annotations

import numpy as np
import pytest

from contimg_dask.ops.mosaic import (
    GaussianBeam,
    accumulate,
    common_beam,
    contains,
    convolve_to_beam,
    finalise,
    grid_covering,
    mean_direction,
)


def test_mean_direction_across_ra_zero_is_not_the_arithmetic_mean() -> None:
    ra = [357.0, 359.0, 1.0, 3.0]
    centre = mean_direction(ra, [16.0] * 4)
    assert np.isclose((centre[0] + 180) % 360 - 180, 0.0, atol=1e-9)
    assert np.mean(ra) == 180.0  # what the telescope's own mosaicker takes
    assert 16.0 < centre[1] < 16.1  # the small circle's chord lies poleward


def test_mean_direction_of_a_whole_circle_is_an_error() -> None:
    with pytest.raises(ValueError, match="in pieces"):
        mean_direction(np.arange(0, 360, 10.0), np.zeros(36))


@pytest.mark.parametrize("ra0", [0.0, 180.0, 359.5])
def test_grid_covering_is_the_same_up_to_an_ra_shift(ra0: float) -> None:
    rng = np.random.default_rng(3)
    dra, dec = rng.uniform(-6, 6, 500), rng.uniform(14, 18, 500)
    reference = grid_covering((100.0 + dra) % 360, dec, 8 / 3600)
    grid = grid_covering((ra0 + dra) % 360, dec, 8 / 3600)
    assert (grid.nx, grid.ny, grid.crpix1, grid.crpix2) == (
        reference.nx, reference.ny, reference.crpix1, reference.crpix2)
    assert np.isclose((grid.ra_deg - ra0 - (reference.ra_deg - 100.0) + 180) % 360 - 180, 0,
                      atol=1e-9)
    x, y = grid.wcs().wcs_world2pix((ra0 + dra) % 360, dec, 0)
    assert x.min() >= 0 and y.min() >= 0 and x.max() <= grid.nx - 1 and y.max() <= grid.ny - 1
    # 12 deg of RA at dec ~16: about 12 cos(16) / (8") pixels, plus the margins.
    assert abs(grid.nx - 12 * np.cos(np.radians(16)) * 450) < 0.02 * grid.nx


def test_car_grid_holds_a_long_strip_across_ra_zero() -> None:
    """CAR (oblique about the strip's centre) for strips longer than an hour: 100 deg of RA
    at dec 16, centred on RA 0, every direction inside, RA growing to the left."""
    ra = np.r_[np.linspace(310.0, 359.9, 200), np.linspace(0.0, 50.0, 200)]
    dec = np.full(ra.size, 16.0)
    grid = grid_covering(ra, dec, 0.05, "CAR")
    assert abs((grid.ra_deg + 180) % 360 - 180) < 0.1
    x, y = grid.wcs().wcs_world2pix(ra, dec, 0)
    assert x.min() >= 0 and x.max() <= grid.nx - 1 and y.min() >= 0 and y.max() <= grid.ny - 1
    assert np.all(np.diff(x[:200]) < 0) and x[-1] < x[0]  # east (larger RA) to the left


def test_accumulate_is_the_inverse_variance_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    shape = (5, 7)
    sky = rng.normal(1.0, 0.1, shape)
    pbs = [rng.uniform(0.05, 1.0, shape), rng.uniform(0.05, 1.0, shape)]
    sigmas = [0.01, 0.03]
    images = [pb * sky + rng.normal(0, s, shape) for pb, s in zip(pbs, sigmas, strict=True)]
    images[1][0, 0] = np.nan  # a blank input pixel contributes nothing
    s, w = np.zeros(shape), np.zeros(shape)
    for image, pb, sigma in zip(images, pbs, sigmas, strict=True):
        accumulate(s, w, image, pb, sigma, 0.2)
    mosaic, noise = finalise(s, w)
    # By hand: each input's PB-corrected value and its variance (sigma/PB)^2.
    num, den = np.zeros(shape), np.zeros(shape)
    for image, pb, sigma in zip(images, pbs, sigmas, strict=True):
        use = (pb >= 0.2) & np.isfinite(image)
        var = (sigma / pb) ** 2
        num += np.where(use, np.nan_to_num(image / pb) / var, 0)
        den += np.where(use, 1 / var, 0)
    covered = den > 0
    np.testing.assert_allclose(mosaic[covered], num[covered] / den[covered], rtol=1e-6)
    np.testing.assert_allclose(noise[covered], 1 / np.sqrt(den[covered]), rtol=1e-6)
    assert np.all(np.isnan(mosaic[~covered])) and np.all(np.isnan(noise[~covered]))
    assert (~covered).any()  # the cutoff did exclude pixels


def test_common_beam_contains_every_beam_and_keeps_equal_ones() -> None:
    a = GaussianBeam(68 / 3600, 37 / 3600, 10.0)
    assert np.allclose(common_beam([a, a]).covariance(), a.covariance())
    beams = [a, GaussianBeam(60 / 3600, 45 / 3600, -30.0), GaussianBeam(50 / 3600, 48 / 3600, 80)]
    c = common_beam(beams)
    assert all(contains(c, b) for b in beams)
    assert c.area_deg2 < 1.6 * max(b.area_deg2 for b in beams)
    round_trip = GaussianBeam.from_covariance(a.covariance())
    assert np.allclose([round_trip.major_deg, round_trip.minor_deg], [a.major_deg, a.minor_deg])
    assert np.isclose(round_trip.pa_deg, 10.0)


def _moments(image: np.ndarray, cell: float) -> np.ndarray:
    """Second moments (east, north; deg²) of a non-negative image whose x points west."""
    y, x = np.mgrid[:image.shape[0], :image.shape[1]]
    total = image.sum()
    east, north = -(x - (image * x).sum() / total) * cell, (y - (image * y).sum() / total) * cell
    return np.array([[(image * east * east).sum(), (image * east * north).sum()],
                     [(image * east * north).sum(), (image * north * north).sum()]]) / total


@pytest.mark.parametrize("other", [GaussianBeam(56 / 3600, 40 / 3600, -45.0),
                                   # nearly the same area: a thin, almost degenerate kernel
                                   GaussianBeam(54 / 3600, 30 / 3600, -60.0)])
def test_convolution_takes_a_beam_to_the_target(other: GaussianBeam) -> None:
    cell = 4 / 3600
    beam = GaussianBeam(40 / 3600, 24 / 3600, 30.0)
    target = common_beam([beam, other])
    point = np.zeros((201, 201))
    point[100, 100] = 1.0
    restored = convolve_to_beam(point, beam, GaussianBeam(0, 0, 0), cell)
    assert np.isclose(restored.sum(), 1.0)
    np.testing.assert_allclose(_moments(restored, cell), beam.covariance(), rtol=2e-3,
                               atol=1e-3 * np.trace(beam.covariance()))
    convolved = convolve_to_beam(restored, target, beam, cell)
    np.testing.assert_allclose(_moments(convolved, cell), target.covariance(), rtol=2e-3,
                               atol=1e-3 * np.trace(target.covariance()))
    assert convolve_to_beam(restored, beam, beam, cell) is None
    with pytest.raises(ValueError, match="not contained"):
        convolve_to_beam(restored, beam, target, cell)


def test_spline_coordinate_map_matches_the_exact_transform_and_reproject() -> None:
    """The coarse coordinate map (every 32 px) against astropy's transform of every pixel,
    and the regridded values against reproject_interp (the field's library) on the same
    tile: two SIN grids 1.3 deg apart at dec 16 with 8" pixels, as consecutive blocks."""
    from astropy.wcs import WCS
    from reproject import reproject_interp

    from contimg_dask.ops.mosaic.grid import MosaicGrid
    from contimg_dask.ops.mosaic.regrid import pixel_map, sample

    cell = 8 / 3600
    source = MosaicGrid(150.0, 16.1, cell, 600, 500, 300.0, 250.0).wcs()
    # The tile's projection centre is 1.3 deg east; the tile itself covers part of the source.
    tile = MosaicGrid(151.3, 16.1, cell, 400, 300, -232.0, 150.0).wcs()
    shape = (300, 400)

    def transform(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return source.wcs_world2pix(*tile.wcs_pix2world(x, y, 0), 0)

    x_map, y_map = pixel_map(transform, shape, 32)
    x_exact, y_exact = transform(*np.meshgrid(np.arange(400.0), np.arange(300.0)))
    assert max(np.abs(x_map - x_exact).max(), np.abs(y_map - y_exact).max()) < 1e-4
    rng = np.random.default_rng(2)
    # A smooth field (beam-correlated noise): what the interpolation sees in block images.
    from scipy.ndimage import gaussian_filter

    plane = gaussian_filter(rng.standard_normal((500, 600)), 2.0)
    plane /= plane.std()
    ours = sample(plane, x_map, y_map, 3)
    theirs = reproject_interp((plane, WCS(source.to_header())), tile, shape_out=shape,
                              order="bicubic", return_footprint=False)
    both = np.isfinite(ours) & np.isfinite(theirs)
    assert both.sum() > 0.3 * ours.size
    assert np.array_equal(np.isfinite(ours), np.isfinite(theirs)) or (
        np.count_nonzero(np.isfinite(ours) != np.isfinite(theirs)) < 0.01 * both.sum())
    # Near the input's border the two differ by up to ~1e-3 sigma (the splines' boundary
    # conditions, decaying with distance); block images are far below the PB cutoff there.
    interior = both & (x_map > 12) & (x_map < 587) & (y_map > 12) & (y_map < 487)
    assert np.abs(ours[interior] - theirs[interior]).max() < 1e-5
    blanked = plane.copy()
    blanked[200:210, 300:310] = np.nan
    with_blank = sample(blanked, x_map, y_map, 3)
    assert np.isnan(with_blank).sum() > np.isnan(ours).sum()
    assert np.isfinite(with_blank[np.isfinite(ours)]).mean() > 0.99  # NaN stays local
