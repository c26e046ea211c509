"""Streaming (``contimg watch``): the watcher and the pipeline's work loop in one process.

The watcher runs in a thread of its own, with its own state store connection; it hands each
sealed block to :meth:`Pipeline.submit`. The calling thread works the pipeline's queue
(:meth:`Pipeline.work`) until :meth:`Streaming.stop` is called: the stage in hand is
finished and recorded, then both loops end. A state store that stays unreachable longer than
the pipeline's own retries (``state.lease_s``) pauses the work loop, which resumes once the
store answers again (``watcher.state_outage_limit_s``: how long before giving up).

Nothing is kept only in memory: a process killed at any moment leaves its files registered,
its blocks sealed or open, its stages leased (the lease expires and the stage is run again by
the next worker) and its products either renamed into place and recorded, or not yet
recorded (the stage runs again and replaces them atomically), or left as temporaries that the
next write to that name removes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pybreaker

from contimg_dask.errors import ContimgError, StateError
from contimg_dask.logs import get_logger
from contimg_dask.monitoring.alerts import AlertEvaluator
from contimg_dask.pipeline.monitor import dask_samples
from contimg_dask.pipeline.orchestrator import Pipeline
from contimg_dask.pipeline.watcher import SealedBlock, Watcher
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.layout import block_slug
from contimg_dask.state import MetricSample, open_state_store

log = get_logger(__name__)


class Streaming:
    """Watch ``incoming`` and process its blocks with ``pipeline`` until :meth:`stop`."""

    def __init__(self, pipeline: Pipeline, incoming: Path) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self.incoming = incoming
        self._stop = threading.Event()
        self._watcher_state = open_state_store(self.config)
        self.watcher = Watcher(incoming, self.config, self._watcher_state, self._submit)
        self._watcher_error: BaseException | None = None
        self._thread = threading.Thread(target=self._watch, name="watcher", daemon=True)
        self._monitor_thread = threading.Thread(target=self._monitor, name="monitor",
                                                daemon=True)

    def _submit(self, sealed: SealedBlock) -> None:
        store = self.config.paths.resolved().stores / f"{block_slug(sealed.block_id)}.zarr"
        queued = self.pipeline.submit(BlockRef(sealed.block_id, store, sealed.files))
        log.info("block %s (%s, %d files) %s", sealed.block_id, sealed.status,
                 len(sealed.files), "queued" if queued else "was already queued")

    def _watch(self) -> None:
        try:
            self.watcher.run(self._stop)
        except BaseException as exc:  # handed to the main thread, which raises it
            self._watcher_error = exc
            self.stop()

    def _monitor(self) -> None:
        """Every ``monitoring.evaluate_interval_s``: a ``heartbeat.watcher`` sample while the
        watcher thread lives, a ``heartbeat.pipeline`` sample, the Dask cluster's samples
        (:func:`~contimg_dask.pipeline.monitor.dask_samples`), and the alert rules evaluated
        (the dashboard's health lines and alerts read them). A state store that is down is
        logged and retried at the next interval."""
        store = open_state_store(self.config)
        evaluator = AlertEvaluator(store, self.config)
        try:
            while not self._stop.is_set():
                now = time.time()
                alive = ["pipeline"] + (["watcher"] if self._thread.is_alive() else [])
                try:
                    store.record_metrics([*(MetricSample(f"heartbeat.{name}", 1.0, now)
                                            for name in alive), *self._dask_samples(now)])
                    evaluator.evaluate(now)
                except StateError as exc:
                    log.warning("heartbeats and alert evaluation skipped: %s", exc)
                self._stop.wait(self.config.monitoring.evaluate_interval_s)
        finally:
            store.close()

    def _dask_samples(self, now: float) -> list[MetricSample]:
        if self.pipeline.client is None:
            return []
        try:
            return dask_samples(self.pipeline.client, now)
        except (OSError, TimeoutError) as exc:
            log.warning("the Dask scheduler did not answer: %s", exc)
            return []

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """End both loops after the stage in hand (safe from a signal handler)."""
        self._stop.set()
        self.pipeline.stop()
        self.watcher.stop_waiting()

    def run(self) -> None:
        """Watch and work until :meth:`stop`; raises what ended the watcher, if anything
        did (a permanent error, or a state store unreachable past the outage limit)."""
        self.watcher.start()
        self._thread.start()
        self._monitor_thread.start()
        try:
            self._work()
        finally:
            self.stop()
            self._thread.join(timeout=60)
            self._monitor_thread.join(timeout=60)
            self.watcher.close()
            self._watcher_state.close()
        if self._watcher_error is not None:
            raise self._watcher_error

    def _work(self) -> None:
        limit = self.config.watcher.state_outage_limit_s
        pause = self.config.watcher.rescan_interval_s
        outage_since: float | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.pipeline.work(until_idle=False, until=self._stop.is_set)
                return
            except (ContimgError, pybreaker.CircuitBreakerError) as exc:
                if isinstance(exc, ContimgError) and not exc.transient:
                    raise
                now = time.monotonic()
                new_outage = outage_since is None or now - started > 2 * pause
                if new_outage:  # work went on for a while since the last one
                    outage_since = now
                    log.warning("work paused, retrying every %.0f s (%s): %s", pause,
                                type(exc).__name__, exc)
                if limit is not None and now - outage_since > limit:
                    raise
                self._stop.wait(pause)
