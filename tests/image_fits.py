"""Measuring point sources in FITS images for the imaging tests: a least-squares fit of the
restoring beam (shape fixed from BMAJ/BMIN/BPA) for position and peak, independently of the
engines' own fitting tools."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.optimize import least_squares


@dataclass(frozen=True)
class PointFit:
    ra_deg: float
    dec_deg: float
    peak: float  # image units (Jy/beam)


def read_image(path: Path) -> tuple[np.ndarray, fits.Header, WCS]:
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data, float)
        header = hdul[0].header.copy()
    while data.ndim > 2:
        data = data[0]
    return data, header, WCS(header).celestial


def fit_point_source(path: Path, ra_deg: float, dec_deg: float) -> PointFit:
    """Fit the restoring beam to the image within 1.5 beams of (ra, dec) (ICRS, deg)."""
    data, header, wcs = read_image(path)
    cell = abs(header["CDELT2"])
    x0, y0 = wcs.all_world2pix(ra_deg, dec_deg, 0)
    half = int(np.ceil(1.5 * header["BMAJ"] / cell))
    ys, xs = np.mgrid[int(y0) - half:int(y0) + half + 1, int(x0) - half:int(x0) + half + 1]
    values = data[ys, xs]
    # Beam in pixel units: major axis at BPA east of north; RA increases to -x.
    sig_maj = header["BMAJ"] / cell / np.sqrt(8 * np.log(2))
    sig_min = header["BMIN"] / cell / np.sqrt(8 * np.log(2))
    pa = np.radians(header["BPA"])

    def model(p: np.ndarray) -> np.ndarray:
        dx, dy = xs - p[1], ys - p[2]
        along = -dx * np.sin(pa) + dy * np.cos(pa)  # along the major axis
        across = dx * np.cos(pa) + dy * np.sin(pa)
        return p[0] * np.exp(-0.5 * ((along / sig_maj) ** 2 + (across / sig_min) ** 2))

    iy, ix = np.unravel_index(np.nanargmax(values), values.shape)
    start = np.array([values[iy, ix], xs[iy, ix], ys[iy, ix]], float)
    fit = least_squares(lambda p: (model(p) - values).ravel(), start)
    ra, dec = wcs.all_pix2world(fit.x[1], fit.x[2], 0)
    return PointFit(float(ra), float(dec), float(fit.x[0]))
