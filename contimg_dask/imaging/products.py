"""FITS products of a block image: primary beam, PB correction, measured figures and
provenance in the headers.

Images are 2-D Stokes I planes on a SIN projection (the engines write 4-D cubes with
length-1 frequency and Stokes axes; they are kept). Flux units: Jy/beam (model: Jy/pixel).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import NDArray

from contimg_dask.ops.primary_beam import drift_averaged_beam_on_grid

#: Header keywords copied from the restored image to every product.
BEAM_KEYS = ("BMAJ", "BMIN", "BPA")


def read_plane(path: Path) -> tuple[NDArray[np.float64], fits.Header]:
    """The 2-D image plane (first frequency and Stokes) of a FITS file and its header."""
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data, np.float64)
        header = hdul[0].header.copy()
    while data.ndim > 2:
        data = data[0]
    return data, header


def write_like(path: Path, plane: NDArray[np.float64], header: fits.Header) -> None:
    """Write ``plane`` with ``header`` (its cube shape restored), replacing ``path``."""
    shape = tuple(header[f"NAXIS{i}"] for i in range(header["NAXIS"], 0, -1))
    fits.PrimaryHDU(plane.astype(np.float32).reshape(shape), header).writeto(path,
                                                                             overwrite=True)


def celestial_wcs(header: fits.Header) -> WCS:
    """The celestial WCS of an engine's image header. astropy's notes that it filled in
    MJD-OBS and the observatory's geodetic position from keywords the engines write are
    silenced (they change nothing we use); every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FITSFixedWarning, module="astropy.wcs")
        return WCS(header).celestial


def pixel_directions(header: fits.Header) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ICRS right ascension and declination (rad) of every pixel, shaped like the plane."""
    wcs = celestial_wcs(header)
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    y, x = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.radians(ra), np.radians(dec)


def primary_beam_plane(header: fits.Header, track_ra_rad: NDArray, track_dec_rad: NDArray,
                       subband_freq_hz: NDArray, subband_weight: NDArray, diameter_m: float,
                       grid_step_deg: float, time_coefficients: NDArray | None = None
                       ) -> NDArray[np.float64]:
    """The drift-averaged Airy beam on the image grid: averaged over the integrations' pointing
    (ICRS, rad) and over the subbands' centre frequencies with their data weights;
    ``time_coefficients`` (time, subband): the integrations' weights of beam-tracked data
    (ops/primary_beam.py ``tracked_beam_coefficients``; default the plain mean)."""
    ra, dec = pixel_directions(header)
    cell_deg = abs(float(header["CDELT2"]))
    step = max(1, int(grid_step_deg / cell_deg))
    return drift_averaged_beam_on_grid(ra, dec, track_ra_rad, track_dec_rad, subband_freq_hz,
                                       diameter_m, subband_weight, step=step,
                                       time_coefficients=time_coefficients)


def robust_noise(values: NDArray[np.float64], clip_sigma: float = 4.0,
                 iterations: int = 5) -> float:
    """Standard deviation from the median absolute deviation (x 1.4826), iteratively
    excluding values beyond ``clip_sigma`` of the median (sources, artefacts)."""
    v = values[np.isfinite(values)]
    sigma = float("nan")
    for _ in range(iterations):
        median = np.median(v)
        sigma = 1.4826 * float(np.median(np.abs(v - median)))
        keep = np.abs(v - median) < clip_sigma * sigma
        if keep.all() or sigma == 0:
            break
        v = v[keep]
    return sigma


def image_figures(image: NDArray, residual: NDArray, pb: NDArray, pb_cutoff: float
                  ) -> dict[str, float]:
    """Measured figures within the beam's ``pb_cutoff`` level (Jy/beam): robust off-source
    noise of the residual, the image's peak and deepest negative, and dynamic range."""
    inside = pb >= pb_cutoff
    noise = robust_noise(residual[inside])
    peak = float(np.nanmax(image[inside]))
    minimum = float(np.nanmin(image[inside]))
    return {"noise_jy": noise, "peak_jy": peak, "min_jy": minimum,
            "dynamic_range": peak / noise if noise > 0 else float("inf"),
            "deepest_negative_sigma": -minimum / noise if noise > 0 else float("inf")}


def annotate(header: fits.Header, block_id: str, provenance: dict[str, Any],
             figures: dict[str, Any], kind: str, beam_from: fits.Header) -> fits.Header:
    """``header`` with the restoring beam, the measured figures and the provenance (short
    keywords here; everything, in full, in the JSON sidecar named by CT_SIDEC)."""
    out = header.copy()
    for key in BEAM_KEYS:
        if key in beam_from:
            out[key] = beam_from[key]
    out["CT_KIND"] = (kind, "contimg product kind")
    out["CT_BLOCK"] = (block_id, "observation block")
    out["CT_CFGH"] = (provenance["config_hash"][:16], "configuration hash (prefix)")
    out["CT_ENGIN"] = (figures["engine"], "imaging engine")
    out["CT_CALIB"] = (figures["calibrated"], "calibration applied before imaging")
    out["CT_PBCUT"] = (figures["pb_cutoff"], "PB level below which PBCOR is blanked")
    out["CT_RFREQ"] = (figures["reference_frequency_hz"], "[Hz] MFS reference frequency")
    for key, name in (("CT_NOISE", "noise_jy"), ("CT_PEAK", "peak_jy"),
                      ("CT_DR", "dynamic_range")):
        out[key] = (float(figures[name]), name.replace("_", " "))
    out["CT_SIDEC"] = (f"{block_id}.image.json", "provenance sidecar")
    versions = provenance["versions"]
    out["CT_VERS"] = (f"contimg-dask {versions.get('contimg-dask')}", "pipeline version")
    out["CT_ENGV"] = (str(figures["engine_version"])[:60], "engine version")
    out["ORIGIN"] = "contimg-dask"
    out.add_history(f"contimg image of block {block_id}: {provenance.get('command')}")
    if not figures["calibrated"]:
        out.add_history("UNCALIBRATED: imaged with imaging.require_calibration false")
    return out


def write_sidecar(path: Path, document: dict[str, Any]) -> None:
    """The JSON sidecar (provenance, figures, products) of a block's images."""
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
