"""The ``mosaic`` stage: add a block's image to the mosaic of its period.

Blocks whose start falls in the same period (``mosaic.period_s``, hourly by default, counted
from 00:00 UTC) share one mosaic, ``<products>/mosaics/mosaic-<period start>/``. The first
block of a period fixes the grid: its footprint swept in RA across the whole period at the
sidereal rate (so every later block of the strip falls on it). Each run, under a file lock
on the mosaic:

- the block is new to the mosaic: its contribution is added in place, to the output tiles
  it reaches only (accumulators and mosaic and noise FITS), through a journal: a killed add
  is undone or finished by the next run (imaging/mosaic_update.py);
- the block is already in with the same image (same SHA-256): nothing to do (idempotent);
- its image changed, or its restoring beam does not fit the mosaic's beam: the mosaic is
  rebuilt from all its inputs on the same grid.

A rebuilt mosaic is a new directory that replaces the old one in one atomic step
(io/system/atomic.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from filelock import FileLock

from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.errors import ContimgError
from contimg_dask.imaging.mosaic_build import (
    FOOTPRINT_STEP,
    Footprint,
    MosaicSettings,
    read_accumulator_attrs,
)
from contimg_dask.imaging.mosaic_inputs import (
    MosaicInput,
    block_time_unix,
    read_input,
)
from contimg_dask.imaging.mosaic_update import add_in_place, recover
from contimg_dask.imaging.mosaic_writer import (
    MOSAIC_JSON_SUFFIX,
    MosaicOutcome,
    existing_inputs,
    mosaic_files,
    new_mosaic,
)
from contimg_dask.io.system.atomic import atomic_directory, register_product_kind
from contimg_dask.io.system.checksum import file_sha256
from contimg_dask.logs import get_logger
from contimg_dask.ops.mosaic import MosaicGrid, grid_covering
from contimg_dask.stages.contract import (
    BlockRef,
    Product,
    Provenance,
    StageResult,
    provenance_of,
)
from contimg_dask.stages.image import product_directory
from contimg_dask.stages.layout import images_dir, mosaics_dir

if TYPE_CHECKING:
    from dask.distributed import Client

log = get_logger(__name__)

#: A mosaic's directory, recognised by its ``.mosaic.json``: only such a directory is ever
#: replaced by a new mosaic (io/system/atomic.py).
MOSAIC_PRODUCTS = "mosaic_products"
register_product_kind(MOSAIC_PRODUCTS,
                      lambda p: p.is_dir() and any(p.glob(f"*{MOSAIC_JSON_SUFFIX}")))
#: Sidereal rate: degrees of RA per second of time.
SIDEREAL_DEG_PER_S = 360.0 / 86164.0905
#: Kinds of a mosaic's files as products (the accumulators and the JSON are products too).
PRODUCT_KINDS = ("mosaic", "noise", "png", "accumulators", "provenance")


def period_of(block_id: str, period_s: float) -> tuple[float, float]:
    """The period (Unix s, [start, end)) holding the block's start."""
    t = block_time_unix(block_id)
    start = np.floor(t / period_s) * period_s
    return float(start), float(start + period_s)


def period_name(start_unix: float) -> str:
    """``mosaic-YYYY-MM-DDTHHMMSS`` of a period's start."""
    return "mosaic-" + time.strftime("%Y-%m-%dT%H%M%S", time.gmtime(start_unix))


def period_grid(item: MosaicInput, footprint: Footprint, period: tuple[float, float],
                settings: MosaicSettings) -> MosaicGrid:
    """The grid of ``item``'s period: its footprint swept in RA from the period's start to
    its end (blocks of a drift scan at the same declination follow the sky)."""
    t = item.time_unix
    shifts = np.linspace(period[0] - t, period[1] - t, 9) * SIDEREAL_DEG_PER_S
    ra = np.concatenate([footprint.ra_deg + s for s in shifts]) % 360.0
    dec = np.tile(footprint.dec_deg, len(shifts))
    cell = settings.cell_arcsec / 3600.0 if settings.cell_arcsec is not None else item.cell_deg
    return grid_covering(ra, dec, cell, settings.projection, margin_px=FOOTPRINT_STEP + 2)


def mosaic_products(files: dict[str, Path], collection: str | None = None
                    ) -> tuple[Product, ...]:
    """The products of a mosaic's files (checksums of the FITS files), of ``collection``
    (the mosaic's name) when given."""
    return tuple(Product(kind, path, file_sha256(path) if kind in ("mosaic", "noise") else None,
                         collection=collection)
                 for kind, path in files.items() if kind in PRODUCT_KINDS and path.exists())


class MosaicStage:
    """The ``mosaic`` stage under the stage contract (see the module docstring).
    ``images``: the image products root (default ``<products>/images``); ``out``: the
    mosaics root (default ``<products>/mosaics``)."""

    name: ClassVar[str] = "mosaic"
    needs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, images: Path | None = None, out: Path | None = None) -> None:
        self.images, self.out = images, out

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        """Add ``block``'s image to its period's mosaic (Dask tasks on ``client`` if given,
        else local threads)."""
        try:
            return self._run(block, config, client)
        except ContimgError as exc:
            if exc.block is None:
                exc.block = block.block_id
                exc.args = (exc._render(),)
            raise

    def _run(self, block: BlockRef, config: PipelineConfig, client: Client | None
             ) -> StageResult:
        t0 = time.perf_counter()
        settings = MosaicSettings.from_config(config.mosaic, workers=config.dask.n_workers)
        images = self.images or images_dir(config)
        item = read_input(product_directory(images, block.block_id))
        period = period_of(block.block_id, config.mosaic.period_s)
        name = period_name(period[0])
        root = self.out or mosaics_dir(config)
        root.mkdir(parents=True, exist_ok=True)
        final = root / name
        with FileLock(str(root / f".{name}.lock")):
            if final.exists():
                recover(final, name, settings, client)
            existing = existing_inputs(final, name) if final.exists() else []
            previous = {i.block_id: i for i in existing}
            if previous.get(item.block_id) and previous[item.block_id].checksum == item.checksum:
                log.info("block %s is already in mosaic %s: nothing to do", block.block_id, name)
                return self._result(block, config, name, mosaic_files(final, name), existing,
                                    {"unchanged": True, "n_inputs": len(existing)}, t0)
            inputs = [i for i in existing if i.block_id != item.block_id]
            provenance = Provenance(inputs=tuple(str(i.image) for i in [*inputs, item]),
                                    config_hash=config_hash(config)).to_dict()
            outcome = None
            if existing and len(inputs) == len(existing):
                outcome = add_in_place(final, [item], settings, name, provenance=provenance,
                                       client=client, warn=log.warning)
                if outcome is None:
                    log.info("block %s's beam does not fit mosaic %s: rebuilding it",
                             item.block_id, name)
            if outcome is None:
                with atomic_directory(final, MOSAIC_PRODUCTS) as tmp:
                    tmp.mkdir()
                    outcome = self._rebuild(item, inputs, period, settings, tmp, final, name,
                                            provenance, client, config.mosaic.quicklook)
        files = {kind: final / path.name for kind, path in outcome.files.items()}
        log.info("mosaic %s: %d blocks (block %s added%s) -> %s", name, len(outcome.inputs),
                 block.block_id, ", incremental" if outcome.figures["incremental"] else "",
                 final)
        return self._result(block, config, name, files, outcome.inputs,
                            {"unchanged": False, **outcome.figures}, t0)

    @staticmethod
    def _rebuild(item: MosaicInput, inputs: list[MosaicInput], period: tuple[float, float],
                 settings: MosaicSettings, tmp: Path, final: Path, name: str,
                 provenance: dict, client: Client | None, quicklook: bool) -> MosaicOutcome:
        """The mosaic from scratch: on the existing grid if there is one, else on the
        period's grid fixed by ``item``."""
        grid = None
        if final.exists():
            attrs = read_accumulator_attrs(mosaic_files(final, name)["accumulators"])
            grid = MosaicGrid.from_dict(attrs["grid"])
        refreshed = [read_input(i.image) for i in inputs] + [item]
        return new_mosaic(refreshed, settings, tmp, name, provenance=provenance, grid=grid,
                          grid_from_footprints=None if grid is not None else (
                              lambda footprints: period_grid(
                                  item, footprints[-1], period, settings)),
                          client=client, quicklook=quicklook, warn=log.warning)

    @staticmethod
    def _result(block: BlockRef, config: PipelineConfig, name: str, files: dict[str, Path],
                inputs: list[MosaicInput], figures: dict, t0: float) -> StageResult:
        """The run's result: the mosaic's products, of the collection ``name``, with every
        image in the mosaic as their inputs."""
        provenance = provenance_of(config, [i.image for i in inputs])
        flat = {k: v for k, v in figures.items()
                if isinstance(v, float | int | str | bool) or v is None}
        return StageResult(stage="mosaic", block_id=block.block_id,
                           products=mosaic_products(files, name), provenance=provenance,
                           figures=flat, seconds=time.perf_counter() - t0)
