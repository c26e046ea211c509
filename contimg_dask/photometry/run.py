"""Photometry of images, end to end: measure each image at the catalogue's positions,
normalise the epoch with its references, record the measurement table and update the
variability table, and announce what was made in the state store (``product`` and
``candidate`` events, ``flag_fraction``-style figures left to the stage result).

An epoch with too few references is recorded (raw fluxes kept, normalised fluxes NaN, flag
set) and reported in the result as ``flagged``: it never enters the light curves' metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.errors import ContimgError
from contimg_dask.logs import get_logger
from contimg_dask.photometry.measure import measure_image
from contimg_dask.photometry.normalise import normalise_epoch
from contimg_dask.photometry.record import record_epoch
from contimg_dask.photometry.tables import PhotometryTables
from contimg_dask.science.photometry_catalog import PhotometryCatalog
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import FailureRecord

log = get_logger(__name__)


@dataclass(frozen=True)
class ImagePhotometry:
    """The outcome of measuring one image."""

    image: str
    epoch: str
    mjd: float
    table: str
    catalog_version: str
    measured: int
    upper_limits: int
    references: int
    scale: float | None
    flagged: bool  # too few references: not normalised
    replaced: bool
    new_candidates: tuple[dict[str, Any], ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["new_candidates"] = list(self.new_candidates)
        return out


def excluded_references(tables: PhotometryTables, version: str, max_eta: float) -> set[str]:
    """Sources whose normalised light curve varies (η > ``max_eta`` over 3+ epochs): never
    used as references again."""
    var = tables.variability(version)
    if var is None:
        return set()
    varying = (var["n"] >= 3) & (var["eta"] > max_eta)
    return set(var.loc[varying, "name"].astype(str))


def photometer_image(image: Path, catalog: PhotometryCatalog, config: PipelineConfig,
                     tables: PhotometryTables, state: StateStore | None = None
                     ) -> ImagePhotometry:
    """Measure, normalise and record one image (see the module docstring)."""
    t0 = time.perf_counter()
    cfg = config.photometry
    rows, info = measure_image(image, catalog, cfg)
    excluded = excluded_references(tables, catalog.version, cfg.references.max_eta)
    rows = normalise_epoch(rows, catalog, info.beam_fwhm_arcsec, cfg, excluded)
    update = record_epoch(tables, rows, info.stem, catalog, cfg)
    scale = float(rows["scale"].iloc[0])
    flagged = bool(rows["scale"].isna().iloc[0])
    if flagged:
        log.warning("epoch %s (%s): only %d valid reference sources (need %d): recorded "
                    "unnormalised, left out of the light curves' metrics", info.epoch, image,
                    int(rows["n_references"].iloc[0]), cfg.references.min_count)
    if state is not None:
        state.emit("product", {"block_id": info.epoch, "kind": "photometry",
                               "path": update.table})
        for candidate in update.new_candidates:
            state.emit("candidate", candidate)
    return ImagePhotometry(
        image=str(image), epoch=info.epoch, mjd=info.mjd, table=update.table,
        catalog_version=catalog.version, measured=int(rows["measured"].sum()),
        upper_limits=int(rows["upper_limit"].sum()),
        references=int(rows["n_references"].iloc[0]),
        scale=None if flagged else scale, flagged=flagged, replaced=update.replaced,
        new_candidates=tuple(update.new_candidates), seconds=time.perf_counter() - t0)


def photometer_images(images: list[Path], catalog: PhotometryCatalog, config: PipelineConfig,
                      tables: PhotometryTables, state: StateStore | None = None
                      ) -> tuple[list[ImagePhotometry], list[ContimgError]]:
    """:func:`photometer_image` on each image; an image that fails (bad input) is recorded
    as a failure in the state store and skipped, and its error returned with the others'."""
    done, failed = [], []
    for image in images:
        try:
            done.append(photometer_image(image, catalog, config, tables, state))
        except ContimgError as exc:
            log.error("photometry of %s failed: %s", image, exc)
            failed.append(exc)
            if state is not None:
                state.record_failure(FailureRecord.from_exception(
                    exc, block_id=None, stage="photometry", worker=None, at=time.time(),
                    input=str(image)))
                state.emit("stage_failed", {"block_id": None, "stage": "photometry",
                                            "error": str(exc), "transient": exc.transient})
    return done, failed
