"""Failure analysis and requeueing (``contimg failures``, ``contimg retry``).

A stage that failed for good (a permanent cause, or a transient one out of
``state.max_attempts``) is dead-lettered: its status is ``failed`` and its last classified
failure is kept with it. Every failure, retried or not, is also in the failure log
(:meth:`StateStore.failures`), with bad input found by discovery and ingest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import FAILED


def dead_letters(store: StateStore) -> list[dict[str, Any]]:
    """The dead-lettered stages with their classified cause, oldest block first."""
    out = []
    for status in sorted(store.stages(status=FAILED), key=lambda s: (s.block_id, s.stage)):
        error = status.error or {}
        out.append({"block_id": status.block_id, "stage": status.stage,
                    "attempts": status.attempts, "error": error.get("error"),
                    "message": error.get("message"), "transient": error.get("transient"),
                    "input": error.get("input")})
    return out


def summarise(store: StateStore, limit: int = 10_000) -> dict[str, Any]:
    """Failures by stage, by cause (error class) and by file, and the dead letters."""
    failures = store.failures(limit=limit)
    by_file: dict[str, list[str]] = {}
    for f in failures:
        if f.input:
            messages = by_file.setdefault(f.input, [])
            if f.message not in messages:
                messages.append(f.message)
    return {
        "failures": len(failures),
        "by_stage": dict(Counter(f.stage or "-" for f in failures).most_common()),
        "by_cause": dict(Counter(
            f"{f.error} ({'transient' if f.transient else 'permanent'})"
            for f in failures).most_common()),
        "by_file": by_file,
        "dead_letters": dead_letters(store),
    }


def requeue(store: StateStore, block_id: str | None = None,
            transient_only: bool = False) -> list[tuple[str, str]]:
    """Queue dead-lettered stages again (of ``block_id``, or of every block when
    ``transient_only``: those whose last failure was transient). Returns (block, stage)."""
    done = []
    for status in store.stages(block_id=block_id, status=FAILED):
        if transient_only and not (status.error or {}).get("transient"):
            continue
        if store.enqueue(status.block_id, status.stage, retry_failed=True):
            done.append((status.block_id, status.stage))
    return done
