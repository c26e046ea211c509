"""``contimg state export`` / ``import``: the whole state as one JSON document that seeds
either backend (moving from one machine on SQLite to a cluster on Redis keeps the history).

What does not move: leases (a stage ``running`` at export is imported ``pending``, its
attempt counted, with the fencing counter carried over so tokens keep increasing) and
event consumer positions (consumers of the new store start from its first event).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from contimg_dask.errors import StateError
from contimg_dask.state.records import PENDING, RUNNING

DUMP_FORMAT = "contimg-state-dump"
DUMP_VERSION = 1


def dump_store(store: Any) -> dict[str, Any]:
    """Everything ``store`` holds, JSON-ready."""
    blocks = store.blocks()
    events, after = [], None
    while batch := store.events(after=after, count=10000):
        events += [e.to_dict() for e in batch]
        after = batch[-1].id
    return {
        "format": DUMP_FORMAT,
        "version": DUMP_VERSION,
        "exported_at": time.time(),
        "source": {"backend": store.backend, "location": store.location,
                   "schema": store.schema_version()},
        "fence": store.fence(),
        "blocks": [b.to_dict() for b in blocks],
        "files": [f.to_dict() for b in blocks for f in store.files(b.block_id)],
        "stages": [s.to_dict() for s in store.stages()],
        "products": [p.to_dict() for p in store.products()],
        "configurations": store.configurations(),
        "solutions": [s.to_dict() for s in store.all_solutions()],
        "solutions_uses": store.all_solutions_uses(),
        "failures": [f.to_dict() for f in store.failures(limit=10**9)],
        "events": events,
        "metrics": {"raw": [s.to_dict() for s in store.raw_samples()],
                    "minute": store.metric_aggregates("minute"),
                    "block": store.metric_aggregates("block")},
    }


def check_dump(dump: dict[str, Any], location: str) -> None:
    if dump.get("format") != DUMP_FORMAT or dump.get("version") != DUMP_VERSION:
        raise StateError(f"not a {DUMP_FORMAT} version {DUMP_VERSION} document "
                         f"(format {dump.get('format')!r}, version {dump.get('version')!r})",
                         file=location)


def stage_rows(dump: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The dump's stages with their queue position (export order); running ones become
    pending without a holder."""
    for seq, stage in enumerate(dump["stages"], start=1):
        if stage["status"] == RUNNING:
            stage = {**stage, "status": PENDING, "worker": None, "expires_at": None}
        yield seq, stage
