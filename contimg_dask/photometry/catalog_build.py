"""A reference catalogue built from a deep image or mosaic of the strip when no catalogue is
given: photutils segmentation (sources of ``finder.min_pixels`` connected pixels above
``finder.detection_sigma`` x the local rms, deblended), one row per source with its
centroid, flux density (Jy: the restoring beam fitted at the centroid, as forced photometry
does — the flux of a compact source) and deconvolved size. Written as a catalogue CSV named
by its content version, ``<root>/catalogs/<image stem>__<version>.csv``, atomically, and
readable by
:func:`~contimg_dask.science.photometry_catalog.read_photometry_catalog`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from contimg_dask.config.schema import PhotometryConfig
from contimg_dask.errors import InputError
from contimg_dask.imaging.products import celestial_wcs, read_plane
from contimg_dask.io.system.atomic import atomic_file, register_product_kind
from contimg_dask.ops.background_mesh import background_meshes, mesh_values
from contimg_dask.ops.forced_photometry import (
    FWHM_TO_SIGMA,
    beam_covariance_pixels,
    forced_fluxes,
)
from contimg_dask.photometry.measure import image_stem
from contimg_dask.science.photometry_catalog import (
    REQUIRED_COLUMNS,
    PhotometryCatalog,
    read_photometry_catalog,
    write_photometry_catalog,
)

#: Product kind of a built catalogue (a CSV whose header starts with the required columns).
PHOTOMETRY_CATALOG = "photometry_catalog"


def _is_catalog(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open() as handle:
        return handle.readline().startswith(",".join(REQUIRED_COLUMNS))


register_product_kind(PHOTOMETRY_CATALOG, _is_catalog)


def find_sources(image: Path, config: PhotometryConfig) -> pd.DataFrame:
    """The sources of ``image`` as catalogue rows (see the module docstring)."""
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    data, header = read_plane(image)
    try:
        bmaj, bmin = float(header["BMAJ"]) * 3600, float(header["BMIN"]) * 3600
    except KeyError:
        raise InputError("image header has no restoring beam (BMAJ, BMIN)",
                         file=image) from None
    wcs = celestial_wcs(header)
    cov = beam_covariance_pixels(bmaj / 3600, bmin / 3600, float(header.get("BPA", 0.0)),
                                 wcs.pixel_scale_matrix)
    cell = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600
    box = max(8, round(config.noise_box_beams * bmaj / cell))
    bkg_mesh, rms_mesh = background_meshes(data, box, config.noise_subsample)
    yy, xx = np.mgrid[0:data.shape[0], 0:data.shape[1]]
    bkg = mesh_values(bkg_mesh, box, xx.ravel(), yy.ravel()).reshape(data.shape)
    rms = mesh_values(rms_mesh, box, xx.ravel(), yy.ravel()).reshape(data.shape)
    blanked = ~np.isfinite(data)
    residual = np.where(blanked, 0.0, data - bkg)
    finder = config.finder
    segments = detect_sources(residual, finder.detection_sigma * rms, finder.min_pixels,
                              mask=blanked)
    if segments is None:
        raise InputError(f"no source above {finder.detection_sigma} σ on the image",
                         file=image)
    segments = deblend_sources(residual, segments, finder.min_pixels, progress_bar=False)
    found = SourceCatalog(residual, segments, wcs=wcs, mask=blanked)
    sky = found.sky_centroid_icrs
    fit = forced_fluxes(data, bkg_mesh, rms_mesh, box, np.asarray(found.x_centroid, float),
                        np.asarray(found.y_centroid, float), cov, config.cluster_beams)
    fwhm_major = np.asarray(found.semimajor_axis.value) / FWHM_TO_SIGMA * cell  # arcsec
    fwhm_minor = np.asarray(found.semiminor_axis.value) / FWHM_TO_SIGMA * cell
    ra, dec = np.asarray(sky.ra.deg) % 360, np.asarray(sky.dec.deg)
    names = pd.Series([f"J{r:09.5f}{d:+09.5f}" for r, d in zip(ra, dec, strict=True)])
    names = names + np.where(names.duplicated(), "_" + names.groupby(names).cumcount()
                             .astype(str), "")
    return pd.DataFrame({
        "name": names, "ra_deg": ra, "dec_deg": dec,
        "flux_jy": fit["flux_jy"],
        "major_arcsec": np.sqrt(np.maximum(fwhm_major**2 - bmaj**2, 0.0)),
        "minor_arcsec": np.sqrt(np.maximum(fwhm_minor**2 - bmin**2, 0.0)),
        "pa_deg": np.asarray(found.orientation.value, float),
    }).query("flux_jy > 0").reset_index(drop=True)


def build_catalog(image: Path, config: PhotometryConfig, root: Path) -> PhotometryCatalog:
    """Find the sources of ``image`` and write them as a versioned catalogue under
    ``root/catalogs/``; the catalogue read back."""
    table = find_sources(image, config)
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / "catalog.csv"
        write_photometry_catalog(draft, table)
        version = read_photometry_catalog(draft).version
    final = root / "catalogs" / f"{image_stem(image)}__{version}.csv"
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(final, PHOTOMETRY_CATALOG) as tmp_path:
        write_photometry_catalog(tmp_path, table)
    return read_photometry_catalog(final)
