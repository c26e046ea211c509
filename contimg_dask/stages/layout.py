"""Where stages put the products that do not live in the block store.

A stage is run by name on a :class:`~contimg_dask.stages.contract.BlockRef` and the
configuration alone, so the paths of its other products follow one convention, under
``paths.products`` (resolved against ``paths.root``):

    <products>/<block-slug>.ms                the block's Measurement Set (stage ``export``)
    <products>/solutions/<block-slug>.zarr    solutions solved on the block (``calibrate_solve``)
    <products>/images/<block id without :>/   the block's images (``image``)
    <products>/mosaics/<mosaic name>/         a mosaic and its accumulators (``mosaic``)

``<block-slug>`` is the block id with ``:`` replaced by ``-`` (``2026-01-15T12-00-00``), the
same name the block store and its MSv4 node carry.
"""

from __future__ import annotations

from pathlib import Path

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.stages.contract import BlockRef

SOLUTIONS_DIR = "solutions"
IMAGES_DIR = "images"
MOSAICS_DIR = "mosaics"


def block_slug(block_id: str) -> str:
    """The block id as a file name (no ``:``)."""
    return block_id.replace(":", "-")


def products_dir(config: PipelineConfig) -> Path:
    """The products directory (``paths.products`` resolved against ``paths.root``)."""
    return config.paths.resolved().products


def solutions_dir(config: PipelineConfig) -> Path:
    """Where solve writes solutions stores and apply looks for them."""
    return products_dir(config) / SOLUTIONS_DIR


def solutions_path(block_id: str, config: PipelineConfig) -> Path:
    """The solutions store solved on block ``block_id``."""
    return solutions_dir(config) / f"{block_slug(block_id)}.zarr"


def ms_path(block_id: str, config: PipelineConfig) -> Path:
    """The Measurement Set exported from block ``block_id``."""
    return products_dir(config) / f"{block_slug(block_id)}.ms"


def images_dir(config: PipelineConfig) -> Path:
    """Where the image stage puts each block's products directory (its default root)."""
    return products_dir(config) / IMAGES_DIR


def mosaics_dir(config: PipelineConfig) -> Path:
    """Where the mosaic stage and ``contimg mosaic`` put mosaics by default."""
    return products_dir(config) / MOSAICS_DIR


def output_path(path: Path) -> Path:
    """``path``, a product path of this layout, with its directory created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def stored_block(store: Path) -> BlockRef:
    """The block of an existing block store, named by the block id its provenance records.

    Raises
    ------
    InputError
        ``store`` is not a block store ingested by us.
    """
    return BlockRef(open_block_view(store).provenance["block_id"], store)
