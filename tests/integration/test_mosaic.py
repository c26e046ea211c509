"""Science and behaviour of the linear mosaic (docs/mosaicking.md) on synthetic block images
with known truth (contimg_dask/testing/mosaic_images.py: what the image stage writes, made
directly).

- Pure noise: mosaic / noise map has standard deviation 1.00 +- 0.03 in every region, by
  the number of overlapping blocks (1 to 3) and in RA stripes.
- Sources in the overlaps: PB-corrected peak within 2 % of the true flux, position within
  0.1 beam (fitted with the mosaic's restoring beam, tests/image_fits.py).
- The same strip across RA 0 and across RA 180: the same mosaic and fluxes.
- Different restoring beams: convolved to the common beam (header), point-source peaks kept,
  noise still normalised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from reproject import reproject_interp
from scipy.optimize import least_squares

from contimg_dask.imaging.mosaic_build import MosaicSettings
from contimg_dask.imaging.mosaic_inputs import Selection, select_inputs
from contimg_dask.imaging.mosaic_writer import MosaicOutcome, new_mosaic
from contimg_dask.ops.mosaic import GaussianBeam, contains
from contimg_dask.testing.mosaic_images import (
    SIDEREAL_DEG_PER_S,
    Source,
    block_ids,
    strip,
    write_block_image,
)
from tests.image_fits import fit_point_source

SETTINGS = MosaicSettings(pb_cutoff=0.2, tile_pixels=256, interpolation="bicubic",
                          beam_tolerance=0.05, projection="SIN", cell_arcsec=None)
STEP_DEG = SIDEREAL_DEG_PER_S * 309.237648  # RA between consecutive blocks' centres
DEC = 16.1


def _mosaic(images: Path, work: Path, settings: MosaicSettings = SETTINGS) -> MosaicOutcome:
    work.mkdir(parents=True)
    inputs = select_inputs([images], Selection())
    return new_mosaic(inputs, settings, work, "m", provenance={}, quicklook=False)


def _coverage(outcome: MosaicOutcome) -> np.ndarray:
    """How many inputs reach each mosaic pixel above the PB cutoff, from the inputs' PB files
    regridded independently (reproject directly, not our tiles)."""
    header = fits.getheader(outcome.files["mosaic"])
    count = np.zeros((header["NAXIS2"], header["NAXIS1"]), int)
    for item in outcome.inputs:
        with fits.open(item.pb) as hdul:
            pb, _ = reproject_interp(hdul[0], WCS(header), shape_out=count.shape)
        count += np.nan_to_num(pb) >= SETTINGS.pb_cutoff
    return count


def test_noise_is_normalised_in_every_region(tmp_path: Path) -> None:
    # A smaller beam than the other tests (4 x 3 px): more independent samples per region.
    strip(tmp_path / "images", 4, 30.0, DEC, beam=GaussianBeam(0.04, 0.03, 20.0), seed=11)
    outcome = _mosaic(tmp_path / "images", tmp_path / "out")
    mosaic, noise = fits.getdata(outcome.files["mosaic"]), fits.getdata(outcome.files["noise"])
    ratio = mosaic / noise
    coverage = _coverage(outcome)
    # NaN exactly where no block reaches the cutoff (up to the edge pixels, where the two
    # interpolations of the PB may fall either side of the cutoff).
    mismatch = np.count_nonzero(np.isfinite(mosaic) != (coverage > 0))
    assert mismatch < 0.003 * np.count_nonzero(coverage), mismatch
    stds = {}
    # Four blocks overlap on a strip 0.24 deg wide: too few independent beams (~170) there to
    # measure a std to 3 %; 1, 2 and 3 blocks have >= 5000 pixels (>= 370 beams) each.
    for k in range(1, 4):
        region = ratio[coverage == k]
        assert region.size > 5000, (k, region.size)
        stds[f"{k} blocks"] = float(np.nanstd(region))
    for x0 in range(0, ratio.shape[1] - 99, ratio.shape[1] // 6):
        region = ratio[:, x0:x0 + ratio.shape[1] // 6]
        stds[f"x {x0}"] = float(np.nanstd(region))
    assert all(abs(s - 1.0) <= 0.03 for s in stds.values()), stds
    # The noise map itself: sigma / PB for one block, 1/sqrt(sum PB^2/sigma^2) in overlaps.
    assert np.nanmin(noise) < outcome.inputs[0].noise_jy / 0.9


def test_noise_is_normalised_where_four_blocks_overlap(tmp_path: Path) -> None:
    """Four blocks at dec 70: consecutive blocks 1.29 deg apart in RA are 0.44 deg apart on
    the sky, so the four overlap over a wide region (at dec 16 their common strip is 0.24 deg
    wide, ~170 beams: ±5 % statistical). The standard deviation of a std measured on N
    independent beams is 1/√(2N) (the noise is correlated over one beam area); the test
    requires N large enough that this is ≤ 1 % (so ±0.03 is 3 statistical σ)."""
    beam = GaussianBeam(0.04, 0.03, 20.0)
    strip(tmp_path / "images", 4, 30.0, 70.0, beam=beam, seed=13)
    outcome = _mosaic(tmp_path / "images", tmp_path / "out")
    mosaic, noise = fits.getdata(outcome.files["mosaic"]), fits.getdata(outcome.files["noise"])
    coverage = _coverage(outcome)
    ratio = (mosaic / noise)[coverage == 4]
    ratio = ratio[np.isfinite(ratio)]
    cell_deg = abs(fits.getheader(outcome.files["mosaic"])["CDELT2"])
    beams = ratio.size / (beam.area_deg2 / cell_deg ** 2)
    statistical = 1 / np.sqrt(2 * beams)
    assert statistical <= 0.01, (ratio.size, beams)
    assert abs(float(np.std(ratio)) - 1.0) <= 0.03, (float(np.std(ratio)), beams, statistical)


def _overlap_sources(ra0: float, n: int) -> tuple[Source, ...]:
    return tuple(Source((ra0 + (i + 0.5) * STEP_DEG) % 360, DEC + dy, flux)
                 for i in range(n - 1) for dy, flux in ((-0.8, 1.0), (0.5, 2.0)))


def _check_sources(outcome: MosaicOutcome, sources: tuple[Source, ...]) -> list[float]:
    header = fits.getheader(outcome.files["mosaic"])
    beam_deg = header["BMIN"]
    ratios = []
    for s in sources:
        fit = fit_point_source(outcome.files["mosaic"], s.ra_deg, s.dec_deg)
        offset = np.hypot(((fit.ra_deg - s.ra_deg + 180) % 360 - 180)
                          * np.cos(np.radians(s.dec_deg)), fit.dec_deg - s.dec_deg)
        assert offset < 0.1 * beam_deg, (s, fit, offset / beam_deg)
        assert abs(fit.peak / s.flux_jy - 1) < 0.02, (s, fit)
        ratios.append(fit.peak / s.flux_jy)
    return ratios


def test_sources_in_overlaps_keep_flux_and_position(tmp_path: Path) -> None:
    sources = _overlap_sources(30.0, 4)
    strip(tmp_path / "images", 4, 30.0, DEC, sources=sources, noise_jy=0.005, seed=21)
    outcome = _mosaic(tmp_path / "images", tmp_path / "out")
    coverage = _coverage(outcome)
    wcs = WCS(fits.getheader(outcome.files["mosaic"]))
    for s in sources:  # every source is where two blocks overlap
        x, y = wcs.wcs_world2pix(s.ra_deg, s.dec_deg, 0)
        assert coverage[round(float(y)), round(float(x))] >= 2
    _check_sources(outcome, sources)


def test_strip_across_ra_zero_equals_strip_across_ra_180(tmp_path: Path) -> None:
    results = {}
    for ra0 in (360.0 - 1.5 * STEP_DEG, 180.0 - 1.5 * STEP_DEG):  # centres 358.1..1.9, 178..182
        sources = _overlap_sources(ra0, 4)
        strip(tmp_path / f"images{ra0:.0f}", 4, ra0, DEC, sources=sources, noise_jy=0.005,
              seed=31)
        outcome = _mosaic(tmp_path / f"images{ra0:.0f}", tmp_path / f"out{ra0:.0f}")
        results[ra0] = (outcome, _check_sources(outcome, sources))
    (a, flux_a), (b, flux_b) = results.values()
    header_a, header_b = (fits.getheader(o.files["mosaic"]) for o in (a, b))
    assert (header_a["NAXIS1"], header_a["NAXIS2"]) == (header_b["NAXIS1"], header_b["NAXIS2"])
    assert np.isclose((header_b["CRVAL1"] - header_a["CRVAL1"]) % 360, 180.0, atol=1e-9)
    assert header_a["CRVAL1"] < 1.0 or header_a["CRVAL1"] > 359.0  # centred on RA 0, not 180
    image_a, image_b = (fits.getdata(o.files["mosaic"]) for o in (a, b))
    assert np.array_equal(np.isfinite(image_a), np.isfinite(image_b))
    np.testing.assert_allclose(image_a, image_b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(flux_a, flux_b, rtol=1e-4)


def _free_gaussian_covariance(path: Path, source: Source) -> np.ndarray:
    """The covariance (east, north; deg²) of a Gaussian with free shape fitted to the source."""
    data = fits.getdata(path)
    header = fits.getheader(path)
    wcs, cell = WCS(header), abs(header["CDELT2"])
    x0, y0 = (float(v) for v in wcs.wcs_world2pix(source.ra_deg, source.dec_deg, 0))
    half = int(2 * header["BMAJ"] / cell)
    ys, xs = np.mgrid[int(y0) - half:int(y0) + half + 1, int(x0) - half:int(x0) + half + 1]
    values = data[ys, xs]

    def model(p: np.ndarray) -> np.ndarray:
        inverse = np.linalg.inv(np.array([[p[3], p[4]], [p[4], p[5]]]))
        d = np.stack([xs - p[1], ys - p[2]])
        return p[0] * np.exp(-0.5 * np.einsum("iab,ij,jab->ab", d, inverse, d))

    sigma_px = header["BMIN"] / cell / 2.3548
    fit = least_squares(lambda p: (model(p) - values).ravel(),
                        [values.max(), x0, y0, sigma_px ** 2, 0.0, sigma_px ** 2])
    flip = np.diag([-1.0, 1.0]) * cell
    return flip @ np.array([[fit.x[3], fit.x[4]], [fit.x[4], fit.x[5]]]) @ flip


def test_different_restoring_beams_are_convolved_to_a_common_beam(tmp_path: Path) -> None:
    source = Source(30.0 + 0.5 * STEP_DEG, DEC + 0.3, 1.0)
    beams = (GaussianBeam(0.06, 0.04, 20.0), GaussianBeam(0.09, 0.05, -40.0))
    ids = block_ids(2)
    for i, beam in enumerate(beams):
        write_block_image(tmp_path / "images", ids[i], 30.0 + i * STEP_DEG, DEC, beam=beam,
                          noise_jy=0.005, sources=(source,), seed=41 + i)
    outcome = _mosaic(tmp_path / "images", tmp_path / "out")
    header = fits.getheader(outcome.files["mosaic"])
    common = GaussianBeam(header["BMAJ"], header["BMIN"], header["BPA"])
    assert all(contains(common, b) for b in beams)
    assert outcome.figures["convolved_inputs"] >= 1
    # The source has the header's beam in the mosaic (not a mixture), and its flux.
    fitted = _free_gaussian_covariance(outcome.files["mosaic"], source)
    np.testing.assert_allclose(fitted, common.covariance(), rtol=0.05,
                               atol=0.05 * np.trace(common.covariance()))
    _check_sources(outcome, (source,))
    # Noise still normalised away from the source (the convolved noise re-measured).
    mosaic, noise = fits.getdata(outcome.files["mosaic"]), fits.getdata(outcome.files["noise"])
    wcs = WCS(header)
    y, x = np.mgrid[:mosaic.shape[0], :mosaic.shape[1]]
    sx, sy = wcs.wcs_world2pix(source.ra_deg, source.dec_deg, 0)
    far = np.hypot(x - sx, y - sy) * abs(header["CDELT2"]) > 10 * common.major_deg
    assert abs(np.nanstd((mosaic / noise)[far]) - 1.0) < 0.03


@pytest.mark.parametrize("ra0", [30.0, 359.0])
def test_selection_by_ra_range_and_time(tmp_path: Path, ra0: float) -> None:
    strip(tmp_path / "images", 4, ra0, DEC, imsize=64, cell_deg=0.0625)
    ids = block_ids(4)
    centres = [(ra0 + i * STEP_DEG) % 360 for i in range(4)]
    chosen = select_inputs([tmp_path / "images"], Selection(
        ra_min=(centres[1] - 0.1) % 360, ra_max=(centres[2] + 0.1) % 360))
    assert [i.block_id for i in chosen] == ids[1:3]
    from contimg_dask.imaging.mosaic_inputs import block_time_unix

    chosen = select_inputs([tmp_path / "images"], Selection(
        start_unix=block_time_unix(ids[2]), dec_min=DEC - 0.5, dec_max=DEC + 0.5))
    assert [i.block_id for i in chosen] == ids[2:]


def test_reproject_interp_on_every_pixel_gives_the_same_mosaic(tmp_path: Path) -> None:
    """``regrid_step_px: 0`` (reproject_interp's exact transform of every pixel) and the
    spline coordinate map agree: 99.5 % of pixels within 1e-3 of the noise (the rest near
    the inputs' borders, which the PB cutoff circle almost touches, where the two
    interpolations' boundary conditions differ, or where an input's PB interpolates to
    either side of the cutoff)."""
    strip(tmp_path / "images", 2, 30.0, DEC, imsize=200, cell_deg=0.02,
          beam=GaussianBeam(0.12, 0.08, 20.0), seed=51)
    spline = _mosaic(tmp_path / "images", tmp_path / "spline")
    exact = _mosaic(tmp_path / "images", tmp_path / "exact",
                    dataclasses.replace(SETTINGS, regrid_step_px=0))
    a, b = (fits.getdata(o.files["mosaic"]) for o in (spline, exact))
    noise = fits.getdata(spline.files["noise"])
    both = np.isfinite(a) & np.isfinite(b)
    assert np.count_nonzero(np.isfinite(a) != np.isfinite(b)) < 0.002 * both.sum()
    difference = np.abs(a - b)[both] / noise[both]
    assert np.percentile(difference, 99.5) < 1e-3
    assert np.count_nonzero(difference > 1e-2) < 0.001 * both.sum()
