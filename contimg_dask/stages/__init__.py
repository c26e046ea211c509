"""Pipeline stages: one module per stage, each behind the contract in :mod:`.contract`."""

from contimg_dask.stages.contract import (
    BlockRef,
    Product,
    Provenance,
    Stage,
    StageResult,
    package_versions,
)

__all__ = ["BlockRef", "Product", "Provenance", "Stage", "StageResult", "package_versions"]
