"""Keeping the archive index in step with the state store, and searching it.

:func:`sync_index` indexes every product the state store has recorded that the index does
not yet hold in that version (idempotent: the orchestrator runs it for each block whose
products it records, see :mod:`contimg_dask.pipeline.indexing`; ``contimg archive sync``
for everything). :func:`search` is the plain function the CLI and the dashboard's search
page call.
"""

from __future__ import annotations

from typing import Any

from contimg_dask.archive.index import ArchiveIndex, open_archive_index
from contimg_dask.archive.metadata import (
    entry_for,
    latest_records,
    record_product_id,
    skip_reason,
)
from contimg_dask.archive.records import ArchiveEntry, SearchQuery
from contimg_dask.config.schema import PipelineConfig
from contimg_dask.errors import ContimgError
from contimg_dask.logs import get_logger
from contimg_dask.state.protocol import StateStore

log = get_logger(__name__)


def _unchanged(old: ArchiveEntry | None, token: int, recorded_at: float, path: str) -> bool:
    return (old is not None and old.path == path and old.provenance.get("token") == token
            and old.provenance.get("recorded_at") == recorded_at)


def sync_index(state: StateStore, index: ArchiveIndex, config: PipelineConfig,
               block_id: str | None = None) -> dict[str, Any]:
    """Index the state store's products (of ``block_id`` only, if given: the orchestrator
    after recording a block's products) new to ``index``. Returns counts and the products
    skipped (each with the file and the reason), which are logged and left for the next
    sync."""
    entries, unchanged, skipped = [], 0, []
    skies: dict[str, dict[str, Any]] = {}
    known: dict[str, ArchiveEntry] = {}  # entries by path: the inputs of later products
    for record in latest_records(state, block_id):
        pid = record_product_id(record)
        old = index.get(pid)
        if _unchanged(old, record.token, record.recorded_at, record.path):
            unchanged += 1
            known[record.path] = old
            continue
        try:
            entries.append(entry_for(record, state, checksum=config.archive.checksum_on_index,
                                     skies=skies, known=known))
            known[record.path] = entries[-1]
        except ContimgError as exc:
            skipped.append({"product_id": pid, "reason": skip_reason(exc)})
            log.warning("not indexed: %s: %s", pid, skip_reason(exc))
    index.add(entries)
    return {"indexed": len(entries), "unchanged": unchanged, "skipped": skipped,
            "total": index.count()}


def search_page(config: PipelineConfig, *,
                cone: tuple[float, float, float] | None = None,
                time_from: float | None = None, time_to: float | None = None,
                strip_dec_deg: float | None = None, kind: str | None = None,
                max_noise_jy: float | None = None, limit: int | None = None, offset: int = 0
                ) -> dict[str, Any]:
    """Search the archive (see :class:`~contimg_dask.archive.records.SearchQuery`: cone
    (RA, Dec, radius) in ICRS degrees, times Unix s, noise Jy/beam): ``{"total": matches,
    "offset": offset, "products": [...]}``, the page's entries as JSON-ready dicts (without
    provenance), oldest first. For the dashboard's search page and ``contimg archive
    search``."""
    query = SearchQuery(cone=cone, time_from=time_from, time_to=time_to,
                        strip_dec_deg=strip_dec_deg,
                        strip_tolerance_deg=config.archive.strip_tolerance_deg, kind=kind,
                        max_noise_jy=max_noise_jy, limit=limit, offset=offset)
    index = open_archive_index(config)
    try:
        found = index.search(query)
    finally:
        index.close()
    return {"total": found.total, "offset": offset, "products": found.dicts()}


def search(config: PipelineConfig, **criteria: Any) -> list[dict[str, Any]]:
    """The products of :func:`search_page` (same criteria), without the count."""
    return search_page(config, **criteria)["products"]
