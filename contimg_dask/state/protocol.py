"""The StateStore protocol: one contract, two implementations (SQLite, Redis).

Semantics every implementation keeps (tests/state/test_contract.py runs the same suite
against both):

- Registration is idempotent: registering a file, a block's stage or solutions twice
  changes nothing the second time.
- ``claim`` hands each pending (block, stage) to exactly one worker, oldest first, with a
  fencing token larger than any handed out before. ``heartbeat``, ``complete`` and ``fail``
  succeed only with the current token; otherwise they raise LeaseLostError and the attempt
  is recorded as a failure and a ``lease_rejected`` event. ``reap`` returns expired leases
  to the queue (or fails the stage once it has used ``max_attempts``).
- Events are delivered at least once to each consumer group: an event read but not
  acknowledged is delivered again (to the same consumer at once, to another after
  ``event_redelivery_s``).
- Metrics are kept as raw samples, 1-minute aggregates and per-block aggregates, each
  pruned after its retention.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from contimg_dask.stages.contract import StageResult
from contimg_dask.state.records import (
    BlockRecord,
    Event,
    FailureRecord,
    FileRecord,
    Lease,
    MetricPoint,
    MetricRate,
    MetricSample,
    ProductRecord,
    Solutions,
    StageStatus,
)


@runtime_checkable
class StateStore(Protocol):
    """Durable pipeline state (see the module docstring)."""

    #: ``sqlite`` or ``redis``.
    backend: str
    #: The database file or the Redis URL (password removed): what errors name.
    location: str

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    # files and blocks
    def register_file(self, block_id: str, path: str, subband: int | None) -> bool:
        """Record a raw file of a block (creating the block, ``open``); True if new. A file
        recorded already stays in its block (False)."""

    def register_file_near(self, block_ids: Sequence[str], path: str, subband: int | None
                           ) -> tuple[str, bool]:
        """Record a raw file in the first of ``block_ids`` that is a block already, else in
        a new block ``block_ids[0]``, in one atomic step (several watchers on one incoming
        directory agree on the block); the block and whether the file is new. A file
        recorded already stays in its block: its block and False."""

    def seal_block(self, block_id: str, expected_files: int, deadline_s: float,
                   now: float | None = None) -> str:
        """Seal the block ``complete`` once it has ``expected_files`` files, or ``partial``
        once ``deadline_s`` have passed since its first file; return its status (``open``
        if neither). A sealed block stays sealed."""

    def rename_block(self, block_id: str, new_id: str) -> bool:
        """Give the open block ``block_id`` the id ``new_id`` (its files and record move;
        the watcher names a block after its earliest file, which may arrive after others).
        False, and nothing changed, once the block is sealed or has stages, or when
        ``new_id`` is a block already; StateError when there is no block ``block_id``."""

    def block(self, block_id: str) -> BlockRecord | None: ...

    def blocks(self, status: str | None = None) -> list[BlockRecord]: ...

    def files(self, block_id: str) -> list[FileRecord]:
        """The block's files in subband order (files without a subband number last), then
        by path."""

    # stages and leases
    def enqueue(self, block_id: str, stage: str, *, retry_failed: bool = False,
                redo: bool = False) -> bool:
        """Queue ``stage`` of ``block_id`` (``pending``); True if queued now. A stage
        already known is left alone, except a ``failed`` one with ``retry_failed`` and a
        ``done`` or ``failed`` one with ``redo`` (its product went missing: run it again;
        the products recorded before stay recorded)."""

    def claim(self, worker: str, lease_s: float,
              stages: Iterable[str] | None = None) -> Lease | None:
        """Lease a pending stage (of ``stages`` if given) to ``worker``: the oldest block's
        (the least block id) first, in queue order within a block (a stage requeued after
        a failure or an expired lease keeps its block's place ahead of later blocks)."""

    def heartbeat(self, lease: Lease, lease_s: float) -> Lease: ...

    def complete(self, lease: Lease, result: StageResult) -> None:
        """Record ``result`` (its ``to_dict()``) and its products (each with the run's
        provenance, or its own inputs: ``contract.product_provenance``; its collection), and
        the run's configuration once per hash; the stage is ``done``."""

    def fail(self, lease: Lease, exc: BaseException, input: str | None = None) -> str:
        """Record the classified failure; the stage goes back to ``pending`` if the error
        is transient and attempts remain, else ``failed``. Returns the new status."""

    def reap(self, now: float | None = None) -> list[Lease]:
        """Return expired leases to the queue; the leases reaped."""

    def stage_status(self, block_id: str, stage: str) -> StageStatus | None: ...

    def stages(self, block_id: str | None = None,
               status: str | None = None) -> list[StageStatus]: ...

    def products(self, block_id: str | None = None,
                 kind: str | None = None) -> list[ProductRecord]: ...

    def configuration(self, config_hash: str) -> dict[str, Any] | None:
        """The configuration (``config.resolved_config``) that products recorded with this
        hash were made with, kept once per hash by ``complete`` from the result's
        ``provenance.config``; None if none was recorded."""

    def configurations(self) -> dict[str, dict[str, Any]]:
        """Every recorded configuration by hash (for ``contimg state export``)."""

    # calibration registry
    def register_solutions(self, solutions: Solutions) -> bool: ...

    def set_solutions_status(self, solutions_id: str, status: str) -> None: ...

    def solutions_for(self, dec_deg: float, at: float,
                      dec_tolerance_deg: float) -> Solutions | None:
        """The newest ``valid`` solutions of the strip within ``dec_tolerance_deg`` whose
        window contains ``at``; None if there are none."""

    def record_solutions_use(self, block_id: str, solutions_id: str) -> None: ...

    def solutions_users(self, solutions_id: str) -> list[str]: ...

    # failures
    def record_failure(self, failure: FailureRecord) -> None: ...

    def failures(self, limit: int = 100, block_id: str | None = None
                 ) -> list[FailureRecord]:
        """The most recent failures, newest last."""

    # events
    def emit(self, kind: str, data: dict[str, Any]) -> str: ...

    def events(self, after: str | None = None, count: int = 100) -> list[Event]:
        """Events after id ``after`` (from the oldest kept if None), oldest first."""

    def read_group(self, group: str, consumer: str, count: int = 100) -> list[Event]:
        """At-least-once delivery: this consumer's unacknowledged events, then other
        consumers' idle ones, then new ones."""

    def ack(self, group: str, ids: Iterable[str]) -> int: ...

    # metrics
    def record_metrics(self, samples: Iterable[MetricSample]) -> None: ...

    def metric_series(self, name: str, rate: MetricRate, since: float | None = None,
                      until: float | None = None) -> list[MetricPoint]: ...

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Drop metrics and events older than their retention; counts removed."""

    # whole store
    def status(self) -> dict[str, Any]:
        """Blocks by status, stages by stage and status, leases, backlog, failures."""

    def export(self) -> dict[str, Any]: ...

    def import_dump(self, dump: dict[str, Any]) -> None:
        """Seed an empty store from ``export()`` of either backend."""
