"""Read-only access to the archive for the dashboard's search page
(contimg_dask/monitoring/archive_page.py): search and a product's recorded path."""

from __future__ import annotations

from typing import Any

from contimg_dask.archive.catalogue import search_page
from contimg_dask.archive.index import open_archive_index
from contimg_dask.config import PipelineConfig


class ArchiveReader:
    """The archive of ``config``, opened per request (the page is read rarely)."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def search_page(self, **criteria: Any) -> dict[str, Any]:
        """:func:`contimg_dask.archive.catalogue.search_page` with these criteria."""
        return search_page(self.config, **criteria)

    def path_of(self, product_id: str) -> str | None:
        """The recorded path of ``product_id``; None if the archive does not hold it."""
        index = open_archive_index(self.config)
        try:
            entry = index.get(product_id)
        finally:
            index.close()
        return None if entry is None else entry.path
