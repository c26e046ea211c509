"""A mosaic's files, new or updated: ``<name>.fits`` (the mosaic, Jy/beam, PB-corrected),
``<name>.noise.fits`` (1/√Σw, Jy/beam), ``<name>.png`` (quick-look), ``<name>.acc.zarr``
(the accumulators Σ(w·I/PB) and Σw with the grid, beam and inputs) and ``<name>.mosaic.json``
(inputs, provenance, figures). A new mosaic is written into a directory the caller makes
atomic; adding to an existing one is imaging/mosaic_update.py.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astropy.io import fits

from contimg_dask.imaging.mosaic_build import (
    MosaicSettings,
    accumulate_all,
    allocate_fits,
    coverage_summary,
    create_accumulators,
    grid_for,
    mosaic_beam,
    prepare,
    read_accumulator_attrs,
    surveys,
    update_accumulator_attrs,
    write_fits,
    write_json,
)
from contimg_dask.imaging.mosaic_inputs import MosaicInput
from contimg_dask.logs import get_logger
from contimg_dask.ops.mosaic import GaussianBeam, MosaicGrid

if TYPE_CHECKING:
    from dask.distributed import Client

log = get_logger(__name__)

MOSAIC_JSON_SUFFIX = ".mosaic.json"


def mosaic_files(directory: Path, name: str) -> dict[str, Path]:
    """The files of mosaic ``name`` in ``directory``, by product kind."""
    return {"mosaic": directory / f"{name}.fits", "noise": directory / f"{name}.noise.fits",
            "png": directory / f"{name}.png", "accumulators": directory / f"{name}.acc.zarr",
            "provenance": directory / f"{name}{MOSAIC_JSON_SUFFIX}"}


@dataclass
class MosaicOutcome:
    """What was written: files by kind, the inputs now in the mosaic, and figures."""

    files: dict[str, Path]
    inputs: list[MosaicInput]
    grid: MosaicGrid
    beam: GaussianBeam
    figures: dict[str, Any] = field(default_factory=dict)


def fits_headers(grid: MosaicGrid, beam: GaussianBeam, n_inputs: int, generation: int,
                 settings: MosaicSettings, name: str) -> dict[str, fits.Header]:
    """The headers of the mosaic and noise FITS (the inputs are listed in the mosaic's JSON;
    the cards are the same from one generation to the next, so an incremental add rewrites
    the header in place)."""
    headers = {}
    for kind, comment in (("mosaic", "PB-corrected linear mosaic"),
                          ("noise", "mosaic noise 1/sqrt(sum of PB^2/sigma^2)")):
        header = grid.header()
        header["BUNIT"] = "Jy/beam"
        header["BMAJ"], header["BMIN"], header["BPA"] = (beam.major_deg, beam.minor_deg,
                                                         beam.pa_deg)
        header["CT_KIND"] = (kind, comment)
        header["CT_NAME"] = (name, "mosaic name")
        header["CT_NIN"] = (n_inputs, "number of input block images")
        header["CT_GEN"] = (generation, "mosaic generation (one more at every add)")
        header["CT_PBCUT"] = (settings.pb_cutoff, "inputs excluded where PB is below this")
        header["ORIGIN"] = "contimg-dask"
        headers[kind] = header
    return headers


def render_quicklook(mosaic: Path, png: Path, name: str, n_inputs: int,
                     noise_jy: float) -> None:
    """The mosaic's quick-look PNG."""
    from contimg_dask.imaging.quicklook import quicklook_png

    with warnings.catch_warnings():  # a mosaic's blank (NaN) corners are expected
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        quicklook_png(mosaic, png, f"mosaic {name}: {n_inputs} blocks, noise "
                                   f"{1e3 * noise_jy:.2f} mJy/beam", noise_jy)


def mosaic_document(name: str, grid: MosaicGrid, beam: GaussianBeam,
                    inputs: list[MosaicInput], settings: MosaicSettings,
                    provenance: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """The mosaic's ``.mosaic.json``: grid, beam, inputs, provenance and figures."""
    return {"type": "mosaic", "name": name, "grid": grid.to_dict(), "beam": beam.to_dict(),
            "pb_cutoff": settings.pb_cutoff, "interpolation": settings.interpolation,
            "inputs": [i.to_dict() for i in inputs], "provenance": provenance,
            "figures": figures}


def beam_figures(grid: MosaicGrid, beam: GaussianBeam, n_inputs: int) -> dict[str, Any]:
    return {"n_inputs": n_inputs, "nx": grid.nx, "ny": grid.ny,
            "beam_major_arcsec": beam.major_deg * 3600,
            "beam_minor_arcsec": beam.minor_deg * 3600, "beam_pa_deg": beam.pa_deg}


def _finish(work: Path, name: str, grid: MosaicGrid, beam: GaussianBeam,
            inputs: list[MosaicInput], settings: MosaicSettings, client: Client | None,
            provenance: dict[str, Any], quicklook: bool, figures: dict[str, Any]
            ) -> MosaicOutcome:
    files = mosaic_files(work, name)
    t0 = time.perf_counter()
    for kind, header in fits_headers(grid, beam, len(inputs), 1, settings, name).items():
        allocate_fits(files[kind], header)
    summary = write_fits(files["accumulators"], grid, files, settings, settings.tile_pixels,
                         client)
    update_accumulator_attrs(files["accumulators"], tile_summary=summary, generation=1)
    figures.update(coverage_summary(summary))
    figures["finalise_s"] = time.perf_counter() - t0
    if quicklook:
        render_quicklook(files["mosaic"], files["png"], name, len(inputs),
                         figures["mean_weight_noise_jy"])
    else:
        files.pop("png")
    figures.update(beam_figures(grid, beam, len(inputs)), generation=1)
    write_json(files["provenance"], mosaic_document(name, grid, beam, inputs, settings,
                                                    provenance, figures))
    scratch = work / "scratch"
    if scratch.exists():
        shutil.rmtree(scratch)
    return MosaicOutcome(files, inputs, grid, beam, figures)


def new_mosaic(inputs: list[MosaicInput], settings: MosaicSettings, work: Path, name: str,
               *, provenance: dict[str, Any], grid: MosaicGrid | None = None,
               grid_from_footprints: Callable[[list[Any]], MosaicGrid] | None = None,
               client: Client | None = None, quicklook: bool = True,
               warn: Callable[[str], None] = log.warning) -> MosaicOutcome:
    """Mosaic ``inputs`` from scratch into ``work`` (an existing, empty directory). The grid:
    ``grid``, else ``grid_from_footprints(footprints)``, else the one covering the inputs."""
    t0 = time.perf_counter()
    footprints = surveys(inputs, settings, client)
    if grid is None:
        cell = (settings.cell_arcsec / 3600.0 if settings.cell_arcsec is not None
                else min(i.cell_deg for i in inputs))
        grid = (grid_from_footprints(footprints) if grid_from_footprints is not None
                else grid_for(footprints, cell, settings.projection))
    beam = mosaic_beam(inputs)
    files = mosaic_files(work, name)
    create_accumulators(files["accumulators"], grid, settings.tile_pixels, {
        "beam": beam.to_dict(), "pb_cutoff": settings.pb_cutoff,
        "interpolation": settings.interpolation, "inputs": [i.to_dict() for i in inputs]})
    scratch = work / "scratch"
    scratch.mkdir()
    contributions = prepare(inputs, footprints, grid, beam, settings, scratch, client, warn)
    t1 = time.perf_counter()
    samples = accumulate_all(files["accumulators"], grid, contributions, settings,
                             settings.tile_pixels, client)
    figures = {"survey_s": t1 - t0, "accumulate_s": time.perf_counter() - t1,
               "samples_added": samples, "incremental": False,
               "convolved_inputs": sum(1 for c in contributions if "beam-convolved" in c.image)}
    return _finish(work, name, grid, beam, inputs, settings, client, provenance, quicklook,
                   figures)


def existing_inputs(directory: Path, name: str) -> list[MosaicInput]:
    """The inputs recorded in an existing mosaic's accumulators."""
    attrs = read_accumulator_attrs(mosaic_files(directory, name)["accumulators"])
    return [MosaicInput.from_dict(d) for d in attrs["inputs"]]
