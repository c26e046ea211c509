"""Synthetic block images for the mosaic tests: what the ``image`` stage writes (apparent
image, PB, residual, ``.image.json`` sidecar with the measured noise), made directly with
known truth instead of by CASA.

The apparent image is PB x (point sources restored with the Gaussian beam) + noise; the noise
is white Gaussian noise convolved with the restoring beam (correlated on the beam's scale, as
in a real image) scaled to ``noise_jy``; the residual is that noise alone; the PB is the
static Airy beam of a 4.65 m dish at 1.4 GHz about the image centre.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from contimg_dask.imaging.products import robust_noise
from contimg_dask.ops.mosaic.beams import GaussianBeam
from contimg_dask.ops.primary_beam import angular_separation
from contimg_dask.telescope.beam import airy_power_beam

DISH_M = 4.65
FREQ_HZ = 1.4e9
#: Sidereal rate (deg of RA per second): consecutive 309 s blocks are 1.29 deg apart.
SIDEREAL_DEG_PER_S = 360.0 / 86164.0905
#: The synthetic restoring beam: 216" x 144" (6 x 4 pixels of 36").
BEAM = GaussianBeam(0.06, 0.04, 20.0)


@dataclass(frozen=True)
class Source:
    ra_deg: float
    dec_deg: float
    flux_jy: float


def header_for(ra_deg: float, dec_deg: float, imsize: int, cell_deg: float,
               beam: GaussianBeam) -> fits.Header:
    header = fits.Header()
    header["NAXIS"] = 2
    header["NAXIS1"] = header["NAXIS2"] = imsize
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CRVAL1"], header["CRVAL2"] = ra_deg % 360.0, dec_deg
    header["CRPIX1"] = header["CRPIX2"] = imsize / 2 + 1
    header["CDELT1"], header["CDELT2"] = -cell_deg, cell_deg
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    header["RADESYS"] = "ICRS"
    header["BUNIT"] = "Jy/beam"
    header["BMAJ"], header["BMIN"], header["BPA"] = beam.major_deg, beam.minor_deg, beam.pa_deg
    return header


def beam_image(header: fits.Header, beam: GaussianBeam, sources: list[Source]) -> np.ndarray:
    """Point sources restored with ``beam`` (peak = flux), evaluated at the pixel centres."""
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    wcs = WCS(header)
    cell = abs(header["CDELT2"])
    flip = np.diag([-1.0, 1.0]) / cell
    inverse = np.linalg.inv(flip @ beam.covariance() @ flip)
    out = np.zeros((ny, nx))
    half = int(4 * beam.major_deg / cell) + 2
    for s in sources:
        x0, y0 = wcs.wcs_world2pix(s.ra_deg, s.dec_deg, 0)
        if not (0 <= x0 < nx and 0 <= y0 < ny):
            continue
        ys, xs = np.mgrid[max(0, int(y0) - half):min(ny, int(y0) + half + 1),
                          max(0, int(x0) - half):min(nx, int(x0) + half + 1)]
        d = np.stack([xs - x0, ys - y0])
        out[ys, xs] += s.flux_jy * np.exp(-0.5 * np.einsum("iab,ij,jab->ab", d, inverse, d))
    return out


def correlated_noise(shape: tuple[int, int], beam: GaussianBeam, cell_deg: float,
                     noise_jy: float, rng: np.random.Generator) -> np.ndarray:
    """White noise convolved with the beam (sampled here, independently of ops/mosaic),
    scaled to standard deviation ``noise_jy``."""
    size = 2 * int(4 * beam.major_deg / cell_deg) + 1
    header = header_for(0.0, 0.0, size, cell_deg, beam)
    header["CRPIX1"] = header["CRPIX2"] = size // 2 + 1
    kernel = beam_image(header, beam, [Source(0.0, 0.0, 1.0)])
    smooth = fftconvolve(rng.standard_normal(shape), kernel, mode="same")
    return smooth * noise_jy / np.sqrt(np.sum(kernel ** 2))


def airy_pb(header: fits.Header) -> np.ndarray:
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    y, x = np.mgrid[0:ny, 0:nx]
    ra, dec = WCS(header).wcs_pix2world(x, y, 0)
    offset = angular_separation(np.radians(ra), np.radians(dec), np.radians(header["CRVAL1"]),
                                np.radians(header["CRVAL2"]))
    return airy_power_beam(offset, FREQ_HZ, DISH_M)


def write_block_image(root: Path, block_id: str, ra_deg: float, dec_deg: float, *,
                      imsize: int = 400, cell_deg: float = 0.01,
                      beam: GaussianBeam = BEAM,
                      noise_jy: float = 0.01, sources: tuple[Source, ...] = (),
                      seed: int = 0, sidecar: bool = True, pb: bool = True) -> Path:
    """A block's image products directory ``root/<block id without colons>/``."""
    stem = block_id.replace(":", "")
    directory = root / stem
    directory.mkdir(parents=True, exist_ok=True)
    header = header_for(ra_deg, dec_deg, imsize, cell_deg, beam)
    primary = airy_pb(header)
    noise = correlated_noise(primary.shape, beam, cell_deg, noise_jy,
                             np.random.default_rng(seed))
    # The sky seen through the beam: each source's apparent flux is its flux x PB there.
    apparent = []
    for s in sources:
        offset = angular_separation(*np.radians([s.ra_deg, s.dec_deg, ra_deg, dec_deg]))
        apparent.append(Source(s.ra_deg, s.dec_deg,
                               s.flux_jy * float(airy_power_beam(offset, FREQ_HZ, DISH_M))))
    image = beam_image(header, beam, apparent) + noise
    fits.PrimaryHDU(image.astype(np.float32), header).writeto(directory / f"{stem}.image.fits")
    fits.PrimaryHDU(noise.astype(np.float32), header).writeto(
        directory / f"{stem}.residual.fits")
    if pb:
        pb_header = header.copy()
        pb_header["BUNIT"] = ""
        fits.PrimaryHDU(primary.astype(np.float32), pb_header).writeto(
            directory / f"{stem}.pb.fits")
    if sidecar:
        measured = robust_noise(noise[primary >= 0.2])
        (directory / f"{stem}.image.json").write_text(json.dumps(
            {"block": {"block_id": block_id}, "figures": {"noise_jy": measured}}))
    return directory


def block_ids(n: int, start: str = "2026-03-21T08:00:00", interval_s: float = 309.237648
              ) -> list[str]:
    from datetime import datetime, timedelta

    t0 = datetime.fromisoformat(start)
    return [(t0 + timedelta(seconds=i * interval_s)).strftime("%Y-%m-%dT%H:%M:%S")
            for i in range(n)]


def strip(root: Path, n: int, ra0_deg: float, dec_deg: float = 16.1,
          sources: tuple[Source, ...] = (), seed: int = 0, **kwargs: object) -> list[Path]:
    """``n`` consecutive drift-scan block images, centres 1.29 deg apart in RA from
    ``ra0_deg``."""
    step = SIDEREAL_DEG_PER_S * 309.237648
    return [write_block_image(root, block_id, ra0_deg + i * step, dec_deg, sources=sources,
                              seed=seed + i, **kwargs)
            for i, block_id in enumerate(block_ids(n))]
