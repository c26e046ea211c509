"""Imaging functions that run inside a CASA worker process (see ``process.py``).

``tclean_to_fits`` deconvolves down to a threshold tied to the
measured noise (tclean's ``nsigma``: a multiple of the residual's robust rms, re-measured at
every major cycle) and exports image, residual, model and PSF as FITS. CASA tools are
imported lazily, after ``configure_casa`` has run.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

#: FITS products exported, by kind, from CASA image suffixes (``.tt0`` appended for mtmfs).
EXPORTED = {"image": "image", "residual": "residual", "model": "model", "psf": "psf"}


def limit_threads(n: int) -> None:
    """Give CASA's OpenMP runtime ``n`` threads (the library is already loaded by now, so the
    environment variable alone would come too late)."""
    import casatools

    os.environ["OMP_NUM_THREADS"] = str(n)
    lib = Path(casatools.__file__).parent / "__casac__" / "lib" / "libgomp.so.1"
    if lib.exists():
        ctypes.CDLL(str(lib)).omp_set_num_threads(int(n))


def tclean_to_fits(vis: str, workdir: str, params: dict[str, Any], datacolumn: str,
                   threshold_sigma: float, niter: int, threads: int) -> dict[str, Any]:
    """Image ``vis`` with tclean into ``workdir`` and export FITS products.

    1. tclean with ``niter`` and ``nsigma=threshold_sigma``: cleaning stops once the peak
       residual is below that many times the residual's robust rms (measured by tclean at
       each major cycle, so a bright source's sidelobes do not set the threshold for good).
    2. ``exportfits`` of image, residual, model and PSF (Taylor term 0 for mtmfs).

    Returns the FITS paths by kind, the restoring beam (arcsec, deg) and CASA's version.
    """
    import casatasks
    import casatools

    limit_threads(threads)
    work = Path(workdir)
    imagename = str(work / "tclean")
    suffix = ".tt0" if params.get("deconvolver") == "mtmfs" else ""
    casatasks.tclean(**dict(params, vis=vis, imagename=imagename, datacolumn=datacolumn,
                            niter=niter, nsigma=threshold_sigma, threshold="0Jy",
                            savemodel="none", interactive=False, parallel=False))
    fits = {}
    for kind, name in EXPORTED.items():
        fits[kind] = str(work / f"{kind}.fits")
        casatasks.exportfits(imagename=f"{imagename}.{name}{suffix}", fitsimage=fits[kind],
                             overwrite=True, history=False)
    ia = casatools.image()
    ia.open(f"{imagename}.image{suffix}")
    beam = ia.restoringbeam()
    ia.close()
    qa = casatools.quanta()
    return {
        "fits": fits,
        "beam": {"major_arcsec": qa.convert(beam["major"], "arcsec")["value"],
                 "minor_arcsec": qa.convert(beam["minor"], "arcsec")["value"],
                 "pa_deg": qa.convert(beam["positionangle"], "deg")["value"]},
        "casa_version": casatools.version_string(),
    }
