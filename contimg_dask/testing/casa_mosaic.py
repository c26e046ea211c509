"""CASA's linear mosaic (``casatools.linearmosaic``) of the same block images as ours, for
comparison (tests and benchmarks only): :func:`casa_linear_mosaic` runs
:func:`linear_mosaic_in_casa` in a CASA worker process (``contimg_dask.casa.run_casa``).

CASA's "optimal" linear mosaic is, per output pixel (its documentation, ``setlinmostype``),

    I = Σ_p A_p · (I_p A_p) · w_p / Σ_p A_p² · w_p,   with w_p = 1 for every input,

where I_p A_p is the apparent (PB-attenuated) image of input p and A_p its primary beam; its
weight image is Σ A_p². Ours (docs/mosaicking.md) is the same sum with w_p = 1/σ_p² (σ_p the
input's measured noise), and a PB cutoff below which an input is left out. The two agree
when every input has the same σ and CASA is given primary beams set to 0 below the cutoff
(done here), so that both leave out the same pixels. CASA regrids with its own (linear)
interpolation onto an output grid it defines about ``imagecenter`` (SIN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contimg_dask.config import PipelineConfig

#: The frequency and Stokes axes CASA's images need (our FITS are 2-D).
DEFAULT_AXES = ["", "", "1.4GHz", "I"]


def linear_mosaic_in_casa(images: list[str], pbs: list[str], pb_cutoff: float, nx: int,
                          ny: int, cell_arcsec: float, centre_deg: tuple[float, float],
                          workdir: str) -> dict[str, Any]:
    """Inside a CASA worker: ``linearmosaic`` of the apparent ``images`` with primary beams
    ``pbs`` (0 below ``pb_cutoff``) onto an ``nx`` x ``ny`` SIN grid of ``cell_arcsec``
    about ``centre_deg`` (ICRS RA, Dec). Returns the FITS of the mosaic and of its weight
    (Σ PB²) and CPU seconds (user + system) of the process."""
    import resource

    import casatasks
    import casatools
    import numpy as np

    work = Path(workdir)
    names, weights = [], []
    for i, (image, pb) in enumerate(zip(images, pbs, strict=True)):
        names.append(str(work / f"input{i}.im"))
        weights.append(str(work / f"pb{i}.im"))
        for fits_path, name in ((image, names[-1]), (pb, weights[-1])):
            casatasks.importfits(fitsimage=fits_path, imagename=name, overwrite=True,
                                 defaultaxes=True, defaultaxesvalues=DEFAULT_AXES)
        ia = casatools.image()
        ia.open(weights[-1])
        beam = ia.getchunk()
        ia.putchunk(np.where(beam >= pb_cutoff, beam, 0.0))
        ia.close()
    qa = casatools.quanta()
    centre = (f"ICRS {qa.formxxx(f'{centre_deg[0]}deg', format='hms', prec=6)} "
              f"{qa.formxxx(f'{centre_deg[1]}deg', format='dms', prec=6)}")
    mosaic, weight = str(work / "casa.linmos"), str(work / "casa.weight")
    lm = casatools.linearmosaic()
    lm.defineoutputimage(nx=nx, ny=ny, cellx=f"{cell_arcsec}arcsec",
                         celly=f"{cell_arcsec}arcsec", imagecenter=centre,
                         outputimage=mosaic, outputweight=weight)
    lm.makemosaic(images=names, weightimages=weights, imageweighttype=1, weighttype=1)
    out = {}
    for kind, name in (("mosaic", mosaic), ("weight", weight)):
        out[kind] = str(work / f"casa.{kind}.fits")
        casatasks.exportfits(imagename=name, fitsimage=out[kind], overwrite=True,
                             history=False, dropdeg=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    out["casa_version"] = casatools.version_string()
    return out


def casa_linear_mosaic(config: PipelineConfig, images: list[Path], pbs: list[Path],
                       pb_cutoff: float, nx: int, ny: int, cell_arcsec: float,
                       centre_deg: tuple[float, float], workdir: Path) -> dict[str, Any]:
    """:func:`linear_mosaic_in_casa` in a CASA worker process (its own process, time limit
    ``casa.task_timeout_s``)."""
    from contimg_dask.casa import run_casa

    workdir.mkdir(parents=True, exist_ok=True)
    return run_casa(config, linear_mosaic_in_casa, [str(p) for p in images],
                    [str(p) for p in pbs], pb_cutoff, nx, ny, cell_arcsec, centre_deg,
                    str(workdir), stage="casa-linearmosaic")
