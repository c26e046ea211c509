"""What both backends build the same way: the ``status`` summary and the failure record of a
refused stale lease."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from contimg_dask.errors import LeaseLostError
from contimg_dask.state.records import PENDING, RUNNING, FailureRecord, Lease, StageStatus


def lease_rejected_failure(lease: Lease, exc: LeaseLostError, at: float) -> FailureRecord:
    """The failure recorded when a stale holder's heartbeat/complete/fail is refused."""
    return FailureRecord(block_id=lease.block_id, stage=lease.stage, worker=lease.worker,
                         error=type(exc).__name__, message=exc.message, transient=False,
                         input=None, traceback_digest=None, at=at)


#: Stages counted by stage and status, and the running ones (in the stages' order).
StageTally = tuple[dict[str, dict[str, int]], list[StageStatus]]


def tally_stages(stages: Iterable[StageStatus]) -> StageTally:
    """``stages`` counted by stage and status, and the running ones."""
    by_stage: dict[str, Counter] = {}
    running = []
    for s in stages:
        by_stage.setdefault(s.stage, Counter())[s.status] += 1
        if s.status == RUNNING:
            running.append(s)
    return {stage: dict(c) for stage, c in by_stage.items()}, running


def status_summary(store: Any, now: float, stages: Iterable[StageStatus] | None = None,
                   tally: StageTally | None = None) -> dict[str, Any]:
    """Blocks by status, stages by stage and status, the leases held (seconds left; negative:
    expired, waiting for the reaper), the backlog (pending stages) and the failures kept.
    ``tally``: the stages counted by the backend (:func:`tally_stages` of ``stages`` unless
    given; ``stages``: every stage, ``store.stages()`` unless given; their results and
    errors are not used, so a backend may give them without)."""
    blocks = Counter(b.status for b in store.blocks())
    if tally is None:
        tally = tally_stages(store.stages() if stages is None else stages)
    by_stage, running = tally
    leases = [{"block_id": s.block_id, "stage": s.stage, "worker": s.worker,
               "token": s.token, "attempt": s.attempts,
               "expires_in_s": round(s.expires_at - now, 3)} for s in running]
    return {
        "backend": store.backend,
        "location": store.location,
        "schema": store.schema_version(),
        "blocks": dict(sorted(blocks.items())),
        "stages": {stage: dict(sorted(c.items())) for stage, c in sorted(by_stage.items())},
        "backlog": sum(c.get(PENDING, 0) for c in by_stage.values()),
        "leases": leases,
        "expired_leases": sum(1 for lease in leases if lease["expires_in_s"] < 0),
        "recent_failures": len(store.failures(limit=1000)),
    }
