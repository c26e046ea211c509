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
from contimg_dask.archive.metadata import entry_for, latest_records, skip_reason
from contimg_dask.archive.records import ArchiveEntry, SearchQuery, product_id
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
    for record in latest_records(state, block_id):
        pid = product_id(record.block_id, record.kind)
        if _unchanged(index.get(pid), record.token, record.recorded_at, record.path):
            unchanged += 1
            continue
        try:
            entries.append(entry_for(record, state, checksum=config.archive.checksum_on_index,
                                     skies=skies))
        except ContimgError as exc:
            skipped.append({"product_id": pid, "reason": skip_reason(exc)})
            log.warning("not indexed: %s: %s", pid, skip_reason(exc))
    index.add(entries)
    return {"indexed": len(entries), "unchanged": unchanged, "skipped": skipped,
            "total": index.count()}


def search(config: PipelineConfig, *, cone: tuple[float, float, float] | None = None,
           time_from: float | None = None, time_to: float | None = None,
           strip_dec_deg: float | None = None, kind: str | None = None,
           max_noise_jy: float | None = None, limit: int | None = None
           ) -> list[dict[str, Any]]:
    """Search the archive (see :class:`~contimg_dask.archive.records.SearchQuery`: cone
    (RA, Dec, radius) in ICRS degrees, times Unix s, noise Jy/beam); the entries as
    JSON-ready dicts, oldest first. For the dashboard's search page and ``contimg archive
    search``."""
    query = SearchQuery(cone=cone, time_from=time_from, time_to=time_to,
                        strip_dec_deg=strip_dec_deg,
                        strip_tolerance_deg=config.archive.strip_tolerance_deg, kind=kind,
                        max_noise_jy=max_noise_jy, limit=limit)
    index = open_archive_index(config)
    try:
        return [entry.to_dict() for entry in index.search(query)]
    finally:
        index.close()
