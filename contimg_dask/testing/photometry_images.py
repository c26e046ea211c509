"""Synthetic radio images with known truth for the photometry tests and benchmarks:
Gaussian restoring-beam point sources on noise correlated like a cleaned map's (the noise's
autocorrelation has the restoring beam's shape), on a SIN grid with a FITS header the
pipeline's image products carry (BMAJ/BMIN/BPA, DATE-OBS, CT_NOISE, CT_BLOCK)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import NDArray

from contimg_dask.ops.forced_photometry import FWHM_TO_SIGMA


@dataclass(frozen=True)
class SyntheticGrid:
    """An image grid: ``size`` pixels square, ``cell_arcsec`` pixels, centred on
    (``ra_deg``, ``dec_deg``), restoring beam FWHM ``bmaj_arcsec`` x ``bmin_arcsec`` at
    ``bpa_deg`` east of north."""

    size: int = 512
    cell_arcsec: float = 5.0
    ra_deg: float = 150.0
    dec_deg: float = 40.0
    bmaj_arcsec: float = 20.0
    bmin_arcsec: float = 15.0
    bpa_deg: float = 30.0

    def header(self, block_id: str = "2026-01-15T12:00:00", noise_jy: float | None = None
               ) -> fits.Header:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
        w.wcs.crval = [self.ra_deg, self.dec_deg]
        w.wcs.crpix = [self.size / 2 + 1, self.size / 2 + 1]
        w.wcs.cdelt = [-self.cell_arcsec / 3600, self.cell_arcsec / 3600]
        h = w.to_header()
        h["BMAJ"], h["BMIN"], h["BPA"] = self.bmaj_arcsec / 3600, self.bmin_arcsec / 3600, \
            self.bpa_deg
        h["BUNIT"] = "JY/BEAM"
        h["DATE-OBS"] = block_id
        h["CT_BLOCK"] = block_id
        if noise_jy is not None:
            h["CT_NOISE"] = noise_jy
        return h

    def beam_cov_pixels(self) -> NDArray[np.float64]:
        """The beam's covariance in pixels² (north up, east left)."""
        theta = np.radians(self.bpa_deg)
        major = np.array([-np.sin(theta), np.cos(theta)])  # (x, y): east is -x
        minor = np.array([np.cos(theta), np.sin(theta)])
        s_maj = self.bmaj_arcsec * FWHM_TO_SIGMA / self.cell_arcsec
        s_min = self.bmin_arcsec * FWHM_TO_SIGMA / self.cell_arcsec
        return s_maj**2 * np.outer(major, major) + s_min**2 * np.outer(minor, minor)


def correlated_noise(shape: tuple[int, int], cov_pixels: NDArray, rms: float,
                     rng: np.random.Generator) -> NDArray[np.float64]:
    """Gaussian noise of standard deviation ``rms`` whose autocorrelation is the Gaussian of
    covariance ``cov_pixels`` (white noise convolved with the Gaussian of half that
    covariance, by FFT)."""
    ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None] * 2 * np.pi
    kx = np.fft.rfftfreq(nx)[None, :] * 2 * np.pi
    half = cov_pixels / 2
    transfer = np.exp(-0.5 * (half[0, 0] * kx**2 + 2 * half[0, 1] * kx * ky
                              + half[1, 1] * ky**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * transfer, s=shape)
    return field * (rms / field.std())


def point_sources(shape: tuple[int, int], cov_pixels: NDArray, x: NDArray, y: NDArray,
                  flux_jy: NDArray) -> NDArray[np.float64]:
    """The restoring-beam images (peak = flux, Jy/beam) of point sources at pixels (x, y),
    each drawn within 6 σ of its position."""
    out = np.zeros(shape)
    precision = np.linalg.inv(cov_pixels)
    half = int(np.ceil(6 * np.sqrt(np.linalg.eigvalsh(cov_pixels).max())))
    oy, ox = np.mgrid[-half:half + 1, -half:half + 1]
    for xi, yi, si in zip(x, y, flux_jy, strict=True):
        cx, cy = int(np.rint(xi)), int(np.rint(yi))
        dx, dy = ox + cx - xi, oy + cy - yi
        k = np.exp(-0.5 * (precision[0, 0] * dx**2 + 2 * precision[0, 1] * dx * dy
                           + precision[1, 1] * dy**2))
        y0, y1 = max(0, cy - half), min(shape[0], cy + half + 1)
        x0, x1 = max(0, cx - half), min(shape[1], cx + half + 1)
        out[y0:y1, x0:x1] += si * k[y0 - cy + half:y1 - cy + half, x0 - cx + half:x1 - cx + half]
    return out


def write_image(path: Path, grid: SyntheticGrid, plane: NDArray, block_id: str,
                noise_jy: float | None) -> Path:
    """``plane`` as a FITS image with ``grid``'s header."""
    fits.PrimaryHDU(plane.astype(np.float32), grid.header(block_id, noise_jy)).writeto(
        path, overwrite=True)
    return path


def sky_of(grid: SyntheticGrid, x: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
    """ICRS RA, Dec (deg) of pixels (x, y) of ``grid``."""
    ra, dec = WCS(grid.header()).all_pix2world(x, y, 0)
    return np.asarray(ra), np.asarray(dec)
