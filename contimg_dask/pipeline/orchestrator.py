"""The orchestrator: ``Pipeline`` runs blocks through their recipe's stages under the state
store's leases, from ``contimg run``, ``contimg watch`` or an interactive session.

The state store holds everything that must survive a restart; the next stage of a block is
derived from its stages' statuses (:meth:`Pipeline.advance`), so a crash between finishing
one stage and queueing the next loses nothing. A worker loop (:meth:`Pipeline.work`):

1. advance the sealed blocks whose stages changed since the last pass (every block at the
   first pass, see :mod:`contimg_dask.pipeline.changes`) and those waiting for a solve:
   queue the first stage of its recipe not yet queued (a target's ``calibrate_apply`` waits
   for a solve in flight on its strip, see :mod:`contimg_dask.pipeline.calibration`);
2. claim the oldest pending stage whose dependencies' circuit breakers let work through;
3. run it through the stage registry (``get_stage(name).run(block, config, client=...)``)
   with its lease renewed by a heartbeat, transient failures retried with backoff and jitter
   and counted by the dependency's breaker, free space checked first;
4. record the result (``complete``: products renamed into place by the stage, then recorded)
   or the classified failure (``fail``: requeued while transient and attempts remain, else
   dead-lettered); emit ``product``, ``breaker`` and ``alert_raised`` events and the monitor
   points; once a block's last stage is done, index its products in the archive
   (:mod:`contimg_dask.pipeline.indexing`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pybreaker
import tenacity

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import RecipeStep
from contimg_dask.errors import ContimgError, LeaseLostError, StateUnavailableError
from contimg_dask.io.uvh5.header import subband_number
from contimg_dask.logs import get_logger
from contimg_dask.monitoring.signals import pipeline_disk_free_fraction
from contimg_dask.pipeline.calibration import APPLY, SOLVE, CalibrationWorkflow
from contimg_dask.pipeline.changes import ChangedBlocks
from contimg_dask.pipeline.cluster import in_this_process, on_cluster
from contimg_dask.pipeline.heartbeat import Heartbeat
from contimg_dask.pipeline.indexing import ProductIndexer
from contimg_dask.pipeline.monitor import antenna_events, block_samples, stage_samples
from contimg_dask.pipeline.outcome import BlockOutcome
from contimg_dask.pipeline.quality import nonfinite_failures
from contimg_dask.pipeline.recipes import (
    CALIBRATOR,
    TARGET,
    config_key,
    log_skipped_stages,
    make_stage,
    outdated,
    recipe,
    with_overrides,
)
from contimg_dask.pipeline.reconcile import Reconciliation, reconcile
from contimg_dask.pipeline.recovery import (
    Breakers,
    check_free_space,
    retrying,
    wait_for,
)
from contimg_dask.stages.contract import BlockRef, StageResult
from contimg_dask.stages.layout import block_slug
from contimg_dask.stages.registry import STAGES
from contimg_dask.state import open_state_store
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.reaper import Reaper
from contimg_dask.state.records import (
    DONE,
    FAILED,
    OPEN,
    PENDING,
    RUNNING,
    FailureRecord,
    Lease,
    MetricSample,
)

if TYPE_CHECKING:
    from dask.distributed import Client

log = get_logger(__name__)
T = TypeVar("T")
INGEST = "ingest"
#: The figure under which each result records its configuration key.
CONFIG_KEY = "config_key"


def default_worker_name() -> str:
    """``host:pid``: names this process in leases and failures."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Pipeline:
    """Runs blocks through the configured recipes (see the module docstring).

    Parameters
    ----------
    config:
        The pipeline configuration (``pipeline`` section: recipes, recovery, guards).
    client:
        The Dask client stages compute on (None: Dask's current default scheduler).
    state:
        The state store (None: the configured one, opened here and closed by :meth:`close`).
    worker:
        This worker's name in leases (default ``host:pid``).
    """

    def __init__(self, config: PipelineConfig, client: Client | None = None,
                 state: StateStore | None = None, *, worker: str | None = None) -> None:
        self.config = config
        self.client = client
        self._owns_state = state is None
        self.state = state if state is not None else open_state_store(config)
        self.worker = worker or default_worker_name()
        self.breakers = Breakers(config.pipeline.breaker, self._breaker_changed)
        self.calibration = CalibrationWorkflow(config, self.state)
        self.skipped_stages = log_skipped_stages(config)
        self._refs: dict[str, BlockRef] = {}
        self._finished: set[str] = set()
        #: Each unfinished block's state at its last look: gated, working or failed.
        self._progress: dict[str, str] = {}
        self._changes = ChangedBlocks(
            lambda after, count: self._state(self.state.events, after, count))
        self.indexer = ProductIndexer(config, self.state)
        self._gated = 0
        self._backlog: int | None = None
        self._stop = threading.Event()
        self._reconciled = False
        #: Called with each lease before its stage runs (progress displays).
        self.on_stage: Callable[[Lease], None] | None = None

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the archive index, and the state store if this pipeline opened it."""
        self.indexer.close()
        if self._owns_state:
            self.state.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask :meth:`work` to return after the stage in hand (from another thread)."""
        self._stop.set()

    # -- blocks -------------------------------------------------------------------------------

    def block_ref(self, block_id: str) -> BlockRef:
        """The block as stages see it: its store under ``paths.stores`` (or where it was
        submitted) and its registered files."""
        if block_id in self._refs:
            return self._refs[block_id]
        files = tuple(Path(f.path) for f in self._state(self.state.files, block_id))
        store = self.config.paths.resolved().stores / f"{block_slug(block_id)}.zarr"
        return BlockRef(block_id, store, files)

    def submit(self, block: BlockRef) -> bool:
        """Register a block's files, seal it (a block the watcher sealed stays as sealed)
        and queue the first stage of its recipe. Idempotent; True if queued now."""
        self._refs[block.block_id] = block
        self._finished.discard(block.block_id)
        self._changes.mark(block.block_id)
        for path in block.files:
            self._state(self.state.register_file, block.block_id, str(path),
                        subband_number(path))
        self._state(self.state.seal_block, block.block_id, len(block.files), 0.0)
        first = recipe(self.config, TARGET)[0].stage
        queued = self._state(self.state.enqueue, block.block_id, first)
        return self._redo_if_configuration_changed(block.block_id) or queued

    def _redo_if_configuration_changed(self, block_id: str) -> bool:
        """Queue again the first done stage whose configuration key differs from the
        current one (the later ones follow in order: :func:`recipes.outdated`); True if
        any."""
        statuses = {s.stage: s for s in self._state(self.state.stages, block_id)}
        steps = self.steps(block_id)
        for step in steps:
            status = statuses.get(step.stage)
            if status is None or status.status != DONE:
                continue
            recorded = ((status.result or {}).get("figures") or {}).get(CONFIG_KEY)
            if recorded is None or recorded == config_key(with_overrides(self.config,
                                                                         step.set)):
                continue
            log.warning("block %s: configuration of %s changed since it ran: it and the "
                        "later stages run again", block_id, step.stage)
            self._state(self.state.enqueue, block_id, step.stage, redo=True)
            self._finished.discard(block_id)
            self._changes.mark(block_id)
            return True
        return False

    def kind(self, block_id: str) -> str | None:
        """``calibrator`` or ``target`` once the block store exists (its first stage done),
        else None. Decided once per block (a block's kind does not change after ingest: its
        store is read once) and kept, by the calibration workflow, until the block is
        finished."""
        known = self.calibration.known_kind(block_id)
        if known is not None:
            return CALIBRATOR if known else TARGET
        first = recipe(self.config, TARGET)[0].stage
        status = self._state(self.state.stage_status, block_id, first)
        if status is None or status.status != DONE:
            return None
        store = self.block_ref(block_id).store
        try:
            with in_this_process():
                calibrator = self.calibration.is_calibrator(block_id, store)
        except ContimgError as exc:
            log.warning("block %s: cannot look for calibrators (%s): treated as a target",
                        block_id, exc)
            return TARGET  # not kept: the next look reads the store again
        return CALIBRATOR if calibrator else TARGET

    def steps(self, block_id: str) -> list[RecipeStep]:
        """The block's recipe (only its first stage while its kind is unknown)."""
        kind = self.kind(block_id)
        steps = recipe(self.config, kind or TARGET)
        return steps if kind is not None else steps[:1]

    def _step(self, block_id: str, stage: str) -> RecipeStep:
        for step in self.steps(block_id):
            if step.stage == stage:
                return step
        return RecipeStep(stage=stage)

    # -- advancing blocks ---------------------------------------------------------------------

    def advance(self) -> int:
        """Queue the next stage of the sealed, unfinished blocks whose stages changed since
        the last pass (every block at the first pass) and of those waiting for a solve,
        oldest block first. Returns the number of blocks waiting for a solve in flight."""
        changed = self._changes.take()
        try:
            self._advance_blocks(changed)
        except BaseException:  # e.g. the state store went away mid-pass: look again
            self._changes.give_back(changed)
            raise
        gated = sum(p == "gated" for p in self._progress.values())
        backlog = sum(p in ("gated", "working") for p in self._progress.values())
        self._gated = gated
        if backlog != self._backlog:
            self._backlog = backlog
            self._record_metrics([_sample("backlog_blocks", backlog)])
        return gated

    def _advance_blocks(self, changed: set[str] | None) -> None:
        """Advance ``changed`` blocks (None: every block) and those waiting for a solve."""
        if changed is None:
            records = self._state(self.state.blocks)
        else:
            waiting = {b for b, progress in self._progress.items() if progress == "gated"}
            records = [r for r in (self._state(self.state.block, b)
                                   for b in changed | waiting) if r is not None]
        records = sorted((r for r in records
                          if r.status != OPEN and r.block_id not in self._finished),
                         key=lambda r: r.block_id)
        for record in records:  # every kind first: a target's wait looks at calibrators
            self.kind(record.block_id)
        for record in records:
            progress = self._advance_block(record.block_id)
            if progress == "done":
                self._progress.pop(record.block_id, None)
            else:
                self._progress[record.block_id] = progress

    def _advance_block(self, block_id: str) -> str:
        statuses = {s.stage: s for s in self._state(self.state.stages, block_id)}
        steps = self.steps(block_id)
        stale = outdated(steps, statuses)
        previous = None
        for step in steps:
            status = statuses.get(step.stage)
            if status is None:
                if not self._may_start(block_id, step.stage, previous):
                    return "gated"
                self._state(self.state.enqueue, block_id, step.stage)
                return "working"
            if status.status == FAILED:
                return "failed"
            if status.status != DONE:
                return "working"
            if step.stage == stale:
                log.info("block %s: %s runs again (the stage before it ran again)",
                         block_id, step.stage)
                self._state(self.state.enqueue, block_id, step.stage, redo=True)
                return "working"
            previous = status
        if self.kind(block_id) is None:
            return "working"
        self._finished.add(block_id)
        self.calibration.forget(block_id)
        return "done"

    def _may_start(self, block_id: str, stage: str, previous: Any) -> bool:
        if stage != APPLY or self.kind(block_id) == CALIBRATOR or previous is None:
            return True
        with in_this_process():
            ready, waiting_for = self.calibration.ready_to_apply(
                block_id, self.block_ref(block_id).store, previous.updated_at)
        if waiting_for is not None:
            log.log(20 if ready else 10, "block %s %s for the solve on calibrator block %s",
                    block_id, "stopped waiting" if ready else "waits", waiting_for)
        return ready

    def _block_done(self, lease: Lease) -> None:
        """Record the latency of a block whose last stage this process just completed
        (only here: every process sees the block done, one completed it)."""
        record = self._state(self.state.block, lease.block_id)
        status = self._state(self.state.stage_status, lease.block_id, lease.stage)
        if record is None or status is None:
            return
        block_id = lease.block_id
        latency = status.updated_at - record.first_seen
        budget = self.config.pipeline.latency_budget_s
        (log.warning if latency > budget else log.info)(
            "block %s done: latency %.0f s (budget %.0f s)", block_id, latency, budget)
        self._record_metrics(block_samples(block_id, latency, time.time()))

    # -- working ------------------------------------------------------------------------------

    def _claimable(self) -> list[str]:
        return sorted(n for n in STAGES if self.breakers.available(self._deps(n)))

    def _deps(self, stage: str) -> list[str]:
        return [d for d in self.config.pipeline.dependencies.get(stage, ["disk"])
                if d != "state"]

    def reconcile(self) -> Reconciliation:
        """Make the products on disk and the state store agree (done once, before the
        first :meth:`work`; see :mod:`contimg_dask.pipeline.reconcile`)."""
        order = [s.stage for s in recipe(self.config, CALIBRATOR)]
        order += [s.stage for s in recipe(self.config, TARGET) if s.stage not in order]
        self._reconciled = True
        return self._state(reconcile, self.state, self.config, order, self.worker)

    def idle(self) -> bool:
        """Nothing pending (of the stages this program has), running or waiting for a
        solve."""
        pending = [s for s in self._state(self.state.stages, status=PENDING)
                   if s.stage in STAGES]
        return (self._gated == 0 and not pending
                and not self._state(self.state.stages, status=RUNNING))

    def work(self, worker: str | None = None, *, until_idle: bool = True,
             until: Callable[[], bool] | None = None, max_stages: int | None = None) -> int:
        """Claim and run stages until idle (``until_idle``), ``until()`` holds,
        ``max_stages`` have run or :meth:`stop` is called. Returns the stages run.

        Expired leases (a worker that died) are returned to the queue meanwhile."""
        if worker is not None:
            self.worker = worker
        ran = 0
        if not self._reconciled:
            self.reconcile()
        reaper = Reaper(self.state, self.config.state.reaper_interval_s).start()
        try:
            while not self._stop.is_set():
                self.advance()
                if until is not None and until():
                    break
                if max_stages is not None and ran >= max_stages:
                    break
                lease = self._state(self.state.claim, self.worker, self.config.state.lease_s,
                                    self._claimable())
                if lease is None:
                    if until is None and until_idle and self.idle():
                        break
                    self._stop.wait(self.config.pipeline.poll_interval_s)
                    continue
                self.run_lease(lease)
                ran += 1
        finally:
            reaper.stop()
        return ran

    def run_lease(self, lease: Lease) -> str:
        """Run the leased stage and record how it ended; the stage's new status (``done``,
        ``pending`` to retry, ``failed``, or ``lost`` when the lease went elsewhere). The
        stage's Dask work runs on the cluster; the pipeline's own reads around it here."""
        if self.on_stage is not None:
            self.on_stage(lease)
        block = self.block_ref(lease.block_id)
        step = self._step(lease.block_id, lease.stage)
        config = with_overrides(self.config, step.set)
        extra: dict[str, object] = {}
        solutions = None
        if lease.stage == APPLY:
            with in_this_process():
                solutions = self.calibration.solutions_for(block.block_id, block.store)
            if solutions is not None:
                extra["solutions"] = Path(solutions.path)
        deps = self._deps(lease.stage)
        cfg = self.config
        with Heartbeat(self.state, lease, cfg.state.lease_s,
                       cfg.pipeline.heartbeat_interval_s) as beat:
            try:
                stage = make_stage(step, **extra)
                result = self._attempts(lease, deps,
                                        lambda: self._run_stage(stage, block, config, deps))
                result = dataclasses.replace(result, figures={
                    **result.figures, CONFIG_KEY: config_key(config)})
                if lease.stage == SOLVE:
                    with in_this_process():
                        self.calibration.register(result, block.store)
                if solutions is not None:
                    self._state(self.state.record_solutions_use, block.block_id,
                                solutions.solutions_id)
            except Exception as exc:
                return self._failed(beat, exc)
            return self._completed(beat, result)

    def _attempts(self, lease: Lease, deps: list[str], func: Callable[[], T]) -> T:
        def record(exc: BaseException) -> None:
            self._state(self.state.record_failure, FailureRecord.from_exception(
                exc, block_id=lease.block_id, stage=lease.stage, worker=self.worker,
                at=time.time()))

        describe = f"{lease.stage} of block {lease.block_id}"
        for attempt in retrying(self.config.pipeline.retry, describe, record):
            with attempt:
                wait_for(self.breakers.seconds_until_trial(deps), self._stop.is_set)
                return self.breakers.call(deps, func)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _run_stage(self, stage: Any, block: BlockRef, config: PipelineConfig,
                   deps: list[str]) -> StageResult:
        if "disk" in deps:
            # recorded before the check: a refused stage's low free fraction is what raises
            # the disk_low alert (the evaluator's rule, resolved once space is freed)
            paths = config.paths.resolved()
            self._record_metrics([_sample("disk_free_fraction",
                                          pipeline_disk_free_fraction(paths))])
            check_free_space([paths.stores, paths.products], config.pipeline.min_free_fraction)
        log.info("block %s: %s", block.block_id, stage.name)
        with on_cluster(self.client, config.dask, stage.name):
            return stage.run(block, config, client=self.client)

    def _completed(self, beat: Heartbeat, result: StageResult) -> str:
        lease = beat.stop()
        try:
            self._state(self.state.complete, lease, result)
        except LeaseLostError:
            log.error("%s of block %s finished after its lease was lost: result discarded "
                      "(its products are replaced atomically by the holder's run)",
                      lease.stage, lease.block_id)
            return "lost"
        for product in result.products:
            self._emit("product", {"block_id": lease.block_id, "kind": product.kind,
                                   "path": str(product.path)})
        finished = self._all_done(lease.block_id)
        if finished:  # its products, each indexed once as final
            with in_this_process():
                self.indexer.update(lease.block_id)
        self._record_metrics(stage_samples(result, time.time()))
        for kind, data in antenna_events(result):
            self._emit(kind, data)
        if lease.stage == INGEST:
            block = self.block_ref(lease.block_id)
            for failure in nonfinite_failures(block.block_id, block.store, block.files,
                                              self.config.pipeline.max_nonfinite_fraction,
                                              self.worker):
                log.warning("block %s: %s", block.block_id, failure.message)
                self._state(self.state.record_failure, failure)
        log.info("block %s: %s done in %.1f s", lease.block_id, lease.stage, result.seconds)
        if finished:
            self._block_done(lease)
        return DONE

    def _failed(self, beat: Heartbeat, exc: BaseException) -> str:
        lease = beat.stop()
        if beat.lost is not None:
            return "lost"
        try:
            status = self._state(self.state.fail, lease, exc)
        except LeaseLostError:
            return "lost"
        (log.error if status == FAILED else log.warning)(
            "block %s: %s %s: %s", lease.block_id, lease.stage,
            "failed (dead-lettered)" if status == FAILED else "failed, requeued", exc)
        return status

    # -- single blocks ------------------------------------------------------------------------

    def settled(self, block_id: str) -> bool:
        """Whether the block is done or dead-lettered."""
        if block_id in self._finished:
            return True
        return self._all_done(block_id, or_failed=True)

    def _all_done(self, block_id: str, *, or_failed: bool = False) -> bool:
        """Whether every stage of the block's recipe is done (``or_failed``: or one of its
        stages dead-lettered)."""
        records = {s.stage: s for s in self._state(self.state.stages, block_id)}
        if or_failed and any(r.status == FAILED for r in records.values()):
            return True
        kind = self.kind(block_id)
        if kind is None:
            return False
        steps = recipe(self.config, kind)
        return (all(s.stage in records and records[s.stage].status == DONE for s in steps)
                and outdated(steps, records) is None)

    def process_block(self, block: BlockRef) -> BlockOutcome:
        """Submit ``block`` and work until it is done or failed (stages of other queued
        blocks may run meanwhile, oldest first). Returns its outcome."""
        self.submit(block)
        self.work(until=lambda: self.settled(block.block_id))
        return self.outcome(block.block_id)

    async def aprocess_block(self, block: BlockRef) -> BlockOutcome:
        """:meth:`process_block` in a thread, for asyncio code (Jupyter, an asynchronous
        Dask client's event loop stays free)."""
        return await asyncio.to_thread(self.process_block, block)

    def outcome(self, block_id: str) -> BlockOutcome:
        """What became of ``block_id`` so far."""
        statuses = {s.stage: s for s in self._state(self.state.stages, block_id)}
        steps = self.steps(block_id)
        kind = self.kind(block_id)
        stages = {s.stage: statuses[s.stage].status if s.stage in statuses else "waiting"
                  for s in steps}
        failed = [s for s in statuses.values() if s.status == FAILED]
        if failed:
            result = "failed"
        elif (kind is not None and all(v == DONE for v in stages.values())
              and outdated(steps, statuses) is None):
            result = DONE
        else:
            result = PENDING
        latest: dict[str, dict[str, str]] = {}
        for product in self._state(self.state.products, block_id):
            latest[product.path] = {"stage": product.stage, "kind": product.kind,
                                    "path": product.path}
        latency = within = None
        record = self._state(self.state.block, block_id)
        if result == DONE and record is not None:
            latency = max(s.updated_at for s in statuses.values()) - record.first_seen
            within = latency <= self.config.pipeline.latency_budget_s
        return BlockOutcome(block_id, result, kind, stages, list(latest.values()),
                            [s.error for s in failed if s.error], latency, within)

    # -- state store access ---------------------------------------------------------------------

    def _state(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A state store call through the ``state`` breaker, retried while the store is
        unreachable (up to ``state.lease_s``: longer, and leases held are lost anyway)."""
        for attempt in tenacity.Retrying(
                stop=tenacity.stop_after_delay(self.config.state.lease_s),
                wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5),
                retry=tenacity.retry_if_exception_type(
                    (StateUnavailableError, pybreaker.CircuitBreakerError)),
                reraise=True):
            with attempt:
                return self.breakers.call(["state"], lambda: func(*args, **kwargs))
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.state.emit(kind, data)
        except StateUnavailableError as exc:
            log.warning("event %s not recorded (state store unavailable): %s", kind, exc)

    def _record_metrics(self, samples: list[MetricSample]) -> None:
        try:
            self.state.record_metrics(samples)
        except StateUnavailableError as exc:
            log.warning("monitor points not recorded (state store unavailable): %s", exc)

    def _breaker_changed(self, name: str, state: str) -> None:
        self._emit("breaker", {"name": name, "state": state})


def _sample(name: str, value: float) -> MetricSample:
    return MetricSample(name, float(value), time.time())
