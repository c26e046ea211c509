"""The ``photometry`` stage: forced photometry of a block's PB-corrected image at the
configured catalogue (``photometry.catalog``), the epoch normalised with its reference
sources, its measurement table recorded and the variability table updated (the light-curve
table of the catalogue version: a product of the collection ``lightcurves-<version>``);
new candidates and the product are announced as state-store events
(contimg_dask/photometry/run.py).

Reads the image stage's products under ``<paths.products>/images/<block>/`` (the
``photometry.image_kind`` file); writes under ``<paths.products>/photometry/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ConfigError, ContimgError, InputError
from contimg_dask.photometry.run import photometer_image
from contimg_dask.photometry.tables import PhotometryTables, photometry_root
from contimg_dask.science.photometry_catalog import read_photometry_catalog
from contimg_dask.stages.contract import BlockRef, Product, StageResult, provenance_of
from contimg_dask.stages.image import FITS_KINDS, product_directory

if TYPE_CHECKING:
    from dask.distributed import Client


def block_image(block: BlockRef, config: PipelineConfig, images_root: Path | None = None
                ) -> Path:
    """The image of ``block`` the stage measures (``photometry.image_kind``)."""
    root = images_root if images_root is not None else config.paths.products / "images"
    directory = product_directory(root, block.block_id)
    return directory / f"{directory.name}.{FITS_KINDS[config.photometry.image_kind]}.fits"


def lightcurves_product(tables: PhotometryTables, version: str, catalog: Path,
                        added: Path) -> Product:
    """The light-curve table of catalogue ``version`` (the variability table: every source's
    light-curve sums, metrics and candidate flags) as a product of the collection
    ``lightcurves-<version>``, updated from the catalogue and the measurement table ``added``.

    Each update's record names only the table it added: the table is the sum over every
    measurement table of the version, and those are the union of its records' inputs (also
    every ``photometry`` product of the version). Listing them all in every record grew the
    state store by the whole history at each block (quadratic over a survey)."""
    return Product("lightcurves", tables.variability_path(version),
                   collection=f"lightcurves-{version}", inputs=(str(catalog), str(added)))


class PhotometryStage:
    """The ``photometry`` stage under the stage contract (see the module docstring)."""

    name: ClassVar[str] = "photometry"
    needs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, images_root: Path | None = None, out: Path | None = None) -> None:
        self.images_root, self.out = images_root, out

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        """Measure ``block``'s image (``client`` unused: one image is one core's work)."""
        t0 = time.perf_counter()
        catalog_path = config.photometry.catalog
        if catalog_path is None:
            raise ConfigError("the photometry stage needs a reference catalogue: set "
                              "photometry.catalog", key="photometry.catalog", stage=self.name,
                              block=block.block_id)
        image = block_image(block, config, self.images_root)
        if not image.is_file():
            raise InputError("the block has no image to measure (run the image stage)",
                             file=image, block=block.block_id, stage=self.name)
        from contimg_dask.state import open_state_store

        try:
            catalog = read_photometry_catalog(catalog_path)
            tables = PhotometryTables(self.out or photometry_root(config))
            state = open_state_store(config)
            try:
                outcome = photometer_image(image, catalog, config, tables, state)
            finally:
                state.close()
        except ContimgError as exc:
            exc.block, exc.stage = exc.block or block.block_id, self.name
            exc.args = (exc._render(),)
            raise
        figures = {k: v for k, v in outcome.to_dict().items()
                   if isinstance(v, int | float | str | bool) or v is None}
        figures["new_candidates"] = len(outcome.new_candidates)
        return StageResult(stage=self.name, block_id=block.block_id,
                           products=(Product("photometry", Path(outcome.table)),
                                     lightcurves_product(tables, catalog.version,
                                                         catalog_path, Path(outcome.table))),
                           provenance=provenance_of(config, [image, catalog_path]),
                           figures=figures, seconds=time.perf_counter() - t0)
