"""The archive index kept in step with the products the orchestrator records: once the
last stage of a block's recipe is recorded, that block's products are indexed
(:func:`contimg_dask.archive.catalogue.sync_index` restricted to the block), so
``contimg archive search`` finds them without a manual ``contimg archive sync``. Indexing
at the block's end, not after each stage, checksums each product once
(``archive.checksum_on_index``) rather than each time a stage records it again.

Indexing never fails a stage: a product that cannot be indexed is logged and left to the
next sync (``contimg archive sync`` indexes whatever the store holds and the index does
not).
"""

from __future__ import annotations

from contimg_dask.archive.catalogue import sync_index
from contimg_dask.archive.index import ArchiveIndex, open_archive_index
from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError
from contimg_dask.logs import get_logger
from contimg_dask.state.protocol import StateStore

log = get_logger(__name__)


class ProductIndexer:
    """Indexes a block's recorded products in the archive index beside ``state``
    (opened at the first use, closed by :meth:`close`)."""

    def __init__(self, config: PipelineConfig, state: StateStore) -> None:
        self.config, self.state = config, state
        self._index: ArchiveIndex | None = None

    def update(self, block_id: str) -> int:
        """Index ``block_id``'s products new to the index; how many were indexed (0 when
        the index could not be updated: logged, left to ``contimg archive sync``)."""
        try:
            if self._index is None:
                self._index = open_archive_index(self.config)
            report = sync_index(self.state, self._index, self.config, block_id=block_id)
        except (ContimgError, OSError) as exc:
            log.warning("block %s: archive index not updated (`contimg archive sync` "
                        "catches up): %s", block_id, exc)
            return 0
        for skipped in report["skipped"]:
            log.warning("block %s: %s not indexed: %s", block_id, skipped["product_id"],
                        skipped["reason"])
        return report["indexed"]

    def close(self) -> None:
        """Close the index, if it was opened."""
        if self._index is not None:
            self._index.close()
            self._index = None
