"""The archive index: one protocol, two backends kept beside the state store (a table in
the same SQLite file, or keys under the same Redis instance prefix). tests/archive/
test_index_contract.py runs one suite against both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from contimg_dask.archive.records import ArchiveEntry, SearchQuery, SearchResult
from contimg_dask.config.schema import PipelineConfig


@runtime_checkable
class ArchiveIndex(Protocol):
    """Products with their metadata, searchable by cone, time, strip, kind and noise.

    ``add`` replaces an entry with the same ``product_id`` (indexing is idempotent);
    ``search`` returns the matches oldest first (by ``time_start``, then ``product_id``) as
    rows of the entries' fields without their provenance (records.SearchResult: a result
    of thousands of products stays cheap; its items are entries with ``provenance == {}``),
    the page the query asks for and the number of all matches; ``get`` returns an entry
    whole."""

    backend: str
    location: str

    def add(self, entries: Iterable[ArchiveEntry]) -> int:
        """Index ``entries`` (replacing earlier entries of the same products); how many."""

    def get(self, product_id: str) -> ArchiveEntry | None: ...

    def remove(self, product_id: str) -> bool: ...

    def search(self, query: SearchQuery) -> SearchResult: ...

    def collections(self) -> dict[str, int]:
        """Products per collection path (records.collection_of)."""

    def count(self) -> int: ...

    def close(self) -> None: ...


def open_archive_index(config: PipelineConfig) -> ArchiveIndex:
    """The archive index beside the configured state store (opened first, so that its
    location and schema are checked as for any state access)."""
    from contimg_dask.state import open_state_store, sqlite_path

    open_state_store(config).close()
    if config.state.backend == "redis":
        from contimg_dask.archive.index_redis import RedisArchiveIndex

        return RedisArchiveIndex(config.state)
    from contimg_dask.archive.index_sqlite import SqliteArchiveIndex

    return SqliteArchiveIndex(sqlite_path(config), config.state.sqlite.busy_timeout_ms)
