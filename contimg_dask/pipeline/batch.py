"""``contimg run``: every block of a directory (optionally a time range), in observation
order, then exit.

Discovery (:func:`contimg_dask.io.uvh5.discovery.discover_blocks`) finds the blocks and the
files it cannot use; those are recorded as failures (:mod:`contimg_dask.pipeline.quality`)
and every usable block is submitted to the :class:`~contimg_dask.pipeline.Pipeline` and
worked until each is done or dead-lettered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from contimg_dask.io.uvh5.discovery import TIMESTAMP_FORMAT, Block, discover_blocks
from contimg_dask.pipeline.orchestrator import Pipeline
from contimg_dask.pipeline.outcome import BlockOutcome
from contimg_dask.pipeline.quality import discovery_failures
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.layout import block_slug

#: Called after every step with (blocks settled, blocks in all, the stage running or None).
Progress = Callable[[int, int, str | None], None]


def _in_range(block: Block, start: dt.datetime | None, end: dt.datetime | None) -> bool:
    when = dt.datetime.strptime(block.block_id, TIMESTAMP_FORMAT)
    return (start is None or when >= start) and (end is None or when < end)


def _unusable(block: Block) -> BlockOutcome:
    return BlockOutcome(block.block_id, "failed", None, {}, errors=[
        {"error": "IncompleteBlockError" if block.files else "InputError",
         "message": f"block misses subbands {block.missing_subbands}: not processed",
         "stage": "discover"}])


def run_directory(pipeline: Pipeline, incoming: Path, start: dt.datetime | None = None,
                  end: dt.datetime | None = None, progress: Progress | None = None
                  ) -> list[BlockOutcome]:
    """Process every block in ``incoming`` observed in ``[start, end)``; one outcome per
    block, in observation order (unusable blocks ``failed`` with their cause)."""
    config = pipeline.config
    discovery = discover_blocks(incoming, config.blocks)
    blocks = [b for b in discovery.blocks if _in_range(b, start, end)]
    known = {(f.input, f.message) for f in pipeline.state.failures(limit=10_000)}
    for failure in discovery_failures(discovery, config.blocks.max_missing_subbands,
                                      pipeline.worker):
        in_range = failure.block_id is None or any(b.block_id == failure.block_id
                                                   for b in blocks)
        if in_range and (failure.input, failure.message) not in known:
            pipeline.state.record_failure(failure)
    stores = config.paths.resolved().stores
    usable = [b for b in blocks if b.usable]
    for block in usable:
        files = tuple(Path(f.path) for _, f in sorted(block.files.items()))
        pipeline.submit(BlockRef(block.block_id,
                                 stores / f"{block_slug(block.block_id)}.zarr", files))
    ids = [b.block_id for b in usable]
    current: list[str | None] = [None]

    def on_stage(lease: object) -> None:
        current[0] = f"{getattr(lease, 'stage', '')} {getattr(lease, 'block_id', '')}"
        if progress is not None:
            progress(_settled(pipeline, ids), len(ids), current[0])

    def finished() -> bool:
        settled = _settled(pipeline, ids)
        if progress is not None:
            progress(settled, len(ids), current[0] if settled < len(ids) else None)
        return settled == len(ids)

    pipeline.on_stage = on_stage
    try:
        pipeline.work(until=finished)
    finally:
        pipeline.on_stage = None
    outcomes = {b.block_id: _unusable(b) for b in blocks if not b.usable}
    outcomes.update({block_id: pipeline.outcome(block_id) for block_id in ids})
    return [outcomes[b.block_id] for b in blocks]


def _settled(pipeline: Pipeline, ids: list[str]) -> int:
    return sum(pipeline.settled(block_id) for block_id in ids)
