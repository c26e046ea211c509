"""Forced photometry of one FITS image at the catalogue's positions: one row per catalogue
source on the image, with flux density, error, local noise, primary-beam value, distance from
the image centre and upper limits (ops/forced_photometry.py does the fit).

Needs in the header: the restoring beam (BMAJ, BMIN, BPA) and the observation time
(DATE-OBS or MJD-OBS); the epoch is the image's block (CT_BLOCK) or, for other images, the
file's stem. The primary beam is read from the image's ``.pb.fits`` sibling (the image
stage's products) where there is one, else reported as NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time

from contimg_dask.config.schema import PhotometryConfig
from contimg_dask.errors import InputError
from contimg_dask.imaging.products import celestial_wcs, read_plane
from contimg_dask.ops.background_mesh import background_meshes, mesh_values
from contimg_dask.ops.forced_photometry import (
    FWHM_TO_SIGMA,
    beam_covariance_pixels,
    forced_fluxes,
)
from contimg_dask.science.photometry_catalog import PhotometryCatalog


@dataclass(frozen=True)
class ImageEpoch:
    """What a measured image is: its file, epoch, time and beam."""

    path: Path
    epoch: str  # the block id (CT_BLOCK) or the file's stem
    mjd: float  # observation time, MJD (UTC)
    beam_fwhm_arcsec: float  # geometric mean of BMAJ and BMIN
    noise_jy: float  # the image's noise: CT_NOISE, else the median local rms (Jy/beam)

    @property
    def stem(self) -> str:
        """The file name without ``.fits``: names the image's measurement table."""
        return image_stem(self.path)


def image_stem(path: Path) -> str:
    """An image's file name without ``.fits`` (or ``.fit``)."""
    return re.sub(r"\.fits?$", "", path.name, flags=re.IGNORECASE)


def _observation_mjd(header: fits.Header, path: Path) -> float:
    if "MJD-OBS" in header:
        return float(header["MJD-OBS"])
    if "DATE-OBS" in header:
        try:
            return float(Time(str(header["DATE-OBS"]), scale="utc").mjd)
        except ValueError:
            raise InputError(f"image header DATE-OBS {header['DATE-OBS']!r} is not a time",
                             file=path) from None
    raise InputError("image header has no observation time (DATE-OBS or MJD-OBS)", file=path)


def _beam(header: fits.Header, path: Path) -> tuple[float, float, float]:
    try:
        bmaj, bmin = float(header["BMAJ"]), float(header["BMIN"])
        bpa = float(header.get("BPA", 0.0))
    except (KeyError, ValueError, TypeError):
        raise InputError("image header has no restoring beam (BMAJ, BMIN): forced photometry "
                         "fits the restoring beam", file=path) from None
    if not (np.isfinite(bmaj) and np.isfinite(bmin) and bmaj > 0 and bmin > 0):
        raise InputError(f"image header's restoring beam is not usable (BMAJ={bmaj}, "
                         f"BMIN={bmin})", file=path)
    return bmaj, bmin, bpa


def primary_beam_path(image: Path) -> Path:
    """The image stage's PB file beside ``image`` (``STEM.pb.fits``)."""
    stem = re.sub(r"\.image(\.pbcor)?\.fits?$", "", image.name, flags=re.IGNORECASE)
    return image.with_name(f"{stem}.pb.fits")


def measure_image(path: Path, catalog: PhotometryCatalog, config: PhotometryConfig
                  ) -> tuple[pd.DataFrame, ImageEpoch]:
    """Forced photometry of the image at ``path`` (see the module docstring). Raises
    InputError when the image lacks a beam or time, no noise can be measured on it, or no
    catalogue position falls on it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("image file does not exist", file=path)
    try:
        image, header = read_plane(path)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"image is not a readable FITS image: {exc}", file=path) from None
    bmaj, bmin, bpa = _beam(header, path)
    mjd = _observation_mjd(header, path)
    wcs = celestial_wcs(header)
    scale = wcs.pixel_scale_matrix.copy()
    cov = beam_covariance_pixels(bmaj, bmin, bpa, scale)
    fwhm_pixels = float(np.sqrt(np.linalg.eigvalsh(cov).max())) / FWHM_TO_SIGMA
    box = max(8, round(config.noise_box_beams * fwhm_pixels))
    try:
        bkg_mesh, rms_mesh = background_meshes(image, box, config.noise_subsample)
    except ValueError as exc:
        raise InputError(f"no local noise can be measured on the image: {exc}",
                         file=path) from None
    if not np.any(np.isfinite(rms_mesh) & (rms_mesh > 0)):
        raise InputError("no local noise can be measured on the image (no unblanked "
                         "pixels with noise)", file=path)
    table = catalog.table
    x, y = wcs.all_world2pix(table["ra_deg"].to_numpy(), table["dec_deg"].to_numpy(), 0)
    ny, nx = image.shape
    on = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (y > -0.5) & (x < nx - 0.5) & (
        y < ny - 0.5)
    ix, iy = np.rint(np.where(on, x, 0)).astype(int), np.rint(np.where(on, y, 0)).astype(int)
    on &= np.isfinite(image[iy, ix])
    if not on.any():
        raise InputError(f"no position of catalogue {catalog.path.name} falls on the "
                         "image's unblanked pixels", file=path)
    x, y, ix, iy = x[on], y[on], ix[on], iy[on]
    fit = forced_fluxes(image, bkg_mesh, rms_mesh, box, x, y, cov, config.cluster_beams)
    pb = np.full(len(x), np.nan)
    pb_file = primary_beam_path(path)
    if pb_file.is_file() and pb_file != path:
        pb_plane, _ = read_plane(pb_file)
        if pb_plane.shape == image.shape:
            pb = pb_plane[iy, ix]
    ra0, dec0 = np.radians(wcs.wcs.crval)
    ra, dec = np.radians(table["ra_deg"].to_numpy()[on]), np.radians(
        table["dec_deg"].to_numpy()[on])
    cos_d = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    rms = mesh_values(rms_mesh, box, x, y)
    flux, err = fit["flux_jy"], fit["flux_err_jy"]
    snr = flux / err
    upper = ~(snr >= config.detection_sigma)
    epoch = str(header.get("CT_BLOCK", "")).strip() or image_stem(path)
    beam_arcsec = float(np.sqrt(bmaj * bmin)) * 3600
    noise = float(header["CT_NOISE"]) if "CT_NOISE" in header else float(
        np.nanmedian(rms_mesh))
    info = ImageEpoch(path, epoch, mjd, beam_arcsec, noise)
    out = pd.DataFrame({
        "name": table["name"].to_numpy()[on],
        "epoch": epoch, "mjd": mjd, "image": str(path),
        "catalog_version": catalog.version,
        "ra_deg": table["ra_deg"].to_numpy()[on], "dec_deg": table["dec_deg"].to_numpy()[on],
        "x_pix": x, "y_pix": y,
        "flux_jy": flux, "flux_err_jy": err, "local_rms_jy": rms, "snr": snr,
        "upper_limit": upper,
        "upper_limit_jy": np.where(upper, np.maximum(flux, 0.0) + config.detection_sigma
                                   * err, np.nan),
        "pb": pb, "distance_deg": np.degrees(np.arccos(np.clip(cos_d, -1, 1))),
        "cluster_size": fit["cluster_size"], "measured": fit["valid"],
        "catalog_flux_jy": table["flux_jy"].to_numpy()[on],
    })
    return out, info
