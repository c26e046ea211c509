"""A mosaic's files, new or updated: ``<name>.fits`` (the mosaic, Jy/beam, PB-corrected),
``<name>.noise.fits`` (1/√Σw, Jy/beam), ``<name>.png`` (quick-look), ``<name>.acc.zarr``
(the accumulators Σ(w·I/PB) and Σw with the grid, beam and inputs) and ``<name>.mosaic.json``
(inputs, provenance, figures), all written into a directory the caller makes atomic.
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
    beam_fits,
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


def _headers(grid: MosaicGrid, beam: GaussianBeam, inputs: list[MosaicInput],
             settings: MosaicSettings, name: str) -> dict[str, fits.Header]:
    headers = {}
    for kind, comment in (("mosaic", "PB-corrected linear mosaic"),
                          ("noise", "mosaic noise 1/sqrt(sum of PB^2/sigma^2)")):
        header = grid.header()
        header["BUNIT"] = "Jy/beam"
        header["BMAJ"], header["BMIN"], header["BPA"] = (beam.major_deg, beam.minor_deg,
                                                         beam.pa_deg)
        header["CT_KIND"] = (kind, comment)
        header["CT_NAME"] = (name, "mosaic name")
        header["CT_NIN"] = (len(inputs), "number of input block images")
        header["CT_PBCUT"] = (settings.pb_cutoff, "inputs excluded where PB is below this")
        header["ORIGIN"] = "contimg-dask"
        for item in inputs:
            header.add_history(f"input {item.block_id} noise {item.noise_jy:.4g} Jy/beam")
        headers[kind] = header
    return headers


def _finish(work: Path, name: str, grid: MosaicGrid, beam: GaussianBeam,
            inputs: list[MosaicInput], settings: MosaicSettings, client: Client | None,
            provenance: dict[str, Any], quicklook: bool, figures: dict[str, Any]
            ) -> MosaicOutcome:
    files = mosaic_files(work, name)
    t0 = time.perf_counter()
    figures.update(write_fits(files["accumulators"], grid, _headers(grid, beam, inputs,
                                                                    settings, name),
                              files, settings, settings.tile_pixels, client))
    figures["finalise_s"] = time.perf_counter() - t0
    if quicklook:
        from contimg_dask.imaging.quicklook import quicklook_png

        with warnings.catch_warnings():  # a mosaic's blank (NaN) corners are expected
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            quicklook_png(files["mosaic"], files["png"],
                          f"mosaic {name}: {len(inputs)} blocks, noise "
                          f"{1e3 * figures['mean_weight_noise_jy']:.2f} mJy/beam",
                          figures["mean_weight_noise_jy"])
    else:
        files.pop("png")
    figures.update(n_inputs=len(inputs), nx=grid.nx, ny=grid.ny,
                   beam_major_arcsec=beam.major_deg * 3600,
                   beam_minor_arcsec=beam.minor_deg * 3600, beam_pa_deg=beam.pa_deg)
    write_json(files["provenance"], {
        "type": "mosaic", "name": name, "grid": grid.to_dict(), "beam": beam.to_dict(),
        "pb_cutoff": settings.pb_cutoff, "interpolation": settings.interpolation,
        "inputs": [i.to_dict() for i in inputs], "provenance": provenance,
        "figures": figures})
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


def add_to_mosaic(existing: Path, new: list[MosaicInput], settings: MosaicSettings,
                  work: Path, name: str, *, provenance: dict[str, Any],
                  client: Client | None = None, quicklook: bool = True,
                  warn: Callable[[str], None] = log.warning) -> MosaicOutcome | None:
    """Add ``new`` inputs to the mosaic ``name`` in ``existing`` by updating a copy of its
    accumulators in ``work``; None when an input's beam does not fit the mosaic's beam (the
    caller rebuilds from scratch with a new common beam)."""
    t0 = time.perf_counter()
    source = mosaic_files(existing, name)["accumulators"]
    attrs = read_accumulator_attrs(source)
    grid, beam = MosaicGrid.from_dict(attrs["grid"]), GaussianBeam(**attrs["beam"])
    if not all(beam_fits(i.beam, beam, settings.beam_tolerance) for i in new):
        return None
    files = mosaic_files(work, name)
    shutil.copytree(source, files["accumulators"])
    footprints = surveys(new, settings, client)
    scratch = work / "scratch"
    scratch.mkdir()
    contributions = prepare(new, footprints, grid, beam, settings, scratch, client, warn)
    t1 = time.perf_counter()
    samples = accumulate_all(files["accumulators"], grid, contributions, settings,
                             int(attrs["tile_pixels"]), client)
    inputs = [MosaicInput.from_dict(d) for d in attrs["inputs"]] + list(new)
    update_accumulator_attrs(files["accumulators"], inputs=[i.to_dict() for i in inputs])
    figures = {"survey_s": t1 - t0, "accumulate_s": time.perf_counter() - t1,
               "samples_added": samples, "incremental": True,
               "convolved_inputs": sum(1 for c in contributions if "beam-convolved" in c.image)}
    return _finish(work, name, grid, beam, inputs, settings, client, provenance, quicklook,
                   figures)
