"""What every stage does around its work: time it, run it on the given Dask client, and
assemble the :class:`StageResult` (provenance with the configuration and its hash)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from contimg_dask.config import PipelineConfig
from contimg_dask.stages.contract import (
    BlockRef,
    Figure,
    Product,
    StageResult,
    provenance_of,
)

if TYPE_CHECKING:
    from dask.distributed import Client


@contextlib.contextmanager
def on_client(client: Client | None) -> Iterator[None]:
    """Run Dask computations inside on ``client`` (None: the current default scheduler)."""
    if client is None:
        yield
    else:
        with client.as_current():
            yield


def stage_result(stage: str, block: BlockRef, config: PipelineConfig,
                 products: list[tuple[str, Path]], inputs: list[str | Path],
                 figures: dict[str, Figure], started: float,
                 command: str | None = None) -> StageResult:
    """The result of a stage run that began at ``started`` (``time.perf_counter()``)."""
    return StageResult(
        stage=stage, block_id=block.block_id,
        products=tuple(Product(kind, Path(path)) for kind, path in products),
        provenance=provenance_of(config, inputs, command),
        figures=figures, seconds=time.perf_counter() - started)
