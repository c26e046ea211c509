"""The streaming watcher: subband files on the incoming directory -> sealed blocks handed to
the pipeline, each exactly once, oldest first.

One pass (:meth:`Watcher.step`):

1. look at the candidate files: those named by file-system events (inotify through
   ``watchdog``) and, every ``watcher.rescan_interval_s``, every file of the directory
   (events are missed on network file systems and while the watcher is down);
2. register the files that have settled (``incoming.SettleTracker``) in the state store,
   grouped into blocks by their names' timestamps (a file joins the block whose first
   timestamp is nearest within ``blocks.timestamp_tolerance_s``, else starts one), oldest
   first; the state store chooses the block and records the file in one atomic step
   (``register_file_near``), so several watchers on one directory agree on the blocks; a
   block is named after its earliest file, as ``contimg run``'s discovery names it: an open
   block is renamed when an earlier file of it arrives (the ids do not depend on the order
   the files arrive in);
3. seal the open blocks that have all ``blocks.expected_subbands`` files (``complete``) or
   whose first file was registered ``watcher.seal_deadline_s`` ago (``partial``): the state
   store emits ``block_sealed`` in the same transaction;
4. hand the sealed blocks over (``on_sealed``), read as ``block_sealed`` events through the
   consumer group :data:`HANDOVER_GROUP` and acknowledged only after the hand-over
   returned: a crash in between hands the block over again after the restart, so the
   hand-over must be idempotent (``Pipeline.submit`` is: queuing a known stage is a no-op).

Everything the watcher knows is in the state store; its memory is a cache rebuilt at
start-up. A backlog found at start-up therefore goes through the same steps as new files.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.errors import ContimgError, ForeignFileError, InputError, StateError
from contimg_dask.io.uvh5.discovery import nearby_block_ids
from contimg_dask.io.uvh5.header import parse_subband_name
from contimg_dask.logs import get_logger, log_context
from contimg_dask.pipeline.incoming import FileKind, SettleTracker, classify
from contimg_dask.state import FailureRecord, StateStore
from contimg_dask.state.records import OPEN

log = get_logger(__name__)

#: The event consumer group through which sealed blocks are handed over.
HANDOVER_GROUP = "watcher.handover"
#: The stage name failures of the watcher itself are recorded under.
WATCH_STAGE = "watch"


@dataclass(frozen=True)
class SealedBlock:
    """A block the watcher sealed: ``status`` ``complete`` or ``partial``; its raw files in
    subband order."""

    block_id: str
    status: str
    files: tuple[Path, ...]


class Watcher:
    """Watches ``directory`` and hands sealed blocks to ``on_sealed`` (see the module
    docstring). Call :meth:`start` once, then :meth:`run` (a loop until ``stop`` is set) or
    :meth:`step` (one pass, for tests); :meth:`close` stops the event observer."""

    def __init__(self, directory: Path, config: PipelineConfig, state: StateStore,
                 on_sealed: Callable[[SealedBlock], None], *, consumer: str | None = None
                 ) -> None:
        if not directory.is_dir():
            raise InputError("the incoming directory does not exist", file=directory)
        self.directory = directory
        self.config = config
        self.state = state
        self.on_sealed = on_sealed
        self.consumer = consumer or f"{socket.gethostname()}:{directory}"
        settings = config.watcher
        self.tracker = SettleTracker(settings.settle_s)
        self._recovered = False
        self._open: set[str] = set()
        self._known: set[Path] = set()        # registered in the state store
        self._settled: list[Path] = []        # settled, not registered yet
        self._reported: set[Path] = set()     # foreign files recorded as failures
        self._hinted: set[Path] = set()       # named by file-system events
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next_rescan = 0.0
        self._observer = None
        self._outage_since: float | None = None

    # -- file-system events -------------------------------------------------------------

    def start(self) -> None:
        """Start listening for file-system events (if ``watcher.file_events``). Where the
        kernel refuses (inotify watch limit), the watcher relies on rescans alone."""
        if not self.config.watcher.file_events or self._observer is not None:
            return
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class _Hints(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                watcher.hint([Path(os.fsdecode(p)) for p in paths if p])

        observer = Observer()
        try:
            observer.schedule(_Hints(), str(self.directory), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning("no file-system events on %s (%s): rescanning every %.0f s only",
                        self.directory, exc, self.config.watcher.rescan_interval_s)
            return
        self._observer = observer

    def hint(self, paths: list[Path]) -> None:
        """Files that changed (from the event observer): look at them soon."""
        with self._lock:
            self._hinted.update(p for p in paths if p.parent == self.directory)
        self._wake.set()

    def close(self) -> None:
        """Stop the event observer."""
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set. A state store that is unreachable
        (a transient error) or an unreadable incoming directory (OSError) is retried at the
        next pass; past ``watcher.state_outage_limit_s`` the error is raised."""
        settings = self.config.watcher
        while not stop.is_set():
            try:
                self.step()
                if self._outage_since is not None:
                    log.warning("state store and incoming directory reachable again after "
                                "%.0f s: watching", time.monotonic() - self._outage_since)
                    self._outage_since = None
            except (ContimgError, OSError) as exc:
                # OSError: the incoming directory unreadable for now (an NFS server away).
                if isinstance(exc, ContimgError) and not exc.transient:
                    raise
                self._note_outage(exc)
                wait = settings.rescan_interval_s
            else:
                wait = self._seconds_to_next_pass()
            self._wake.wait(wait)
            self._wake.clear()

    def stop_waiting(self) -> None:
        """Wake :meth:`run` now (after its ``stop`` event was set)."""
        self._wake.set()

    def _note_outage(self, exc: ContimgError | OSError) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            log.warning("state store or incoming directory unreachable, retrying every "
                        "%.0f s: %s", self.config.watcher.rescan_interval_s, exc)
        limit = self.config.watcher.state_outage_limit_s
        if limit is not None and now - self._outage_since > limit:
            raise exc

    def _seconds_to_next_pass(self) -> float:
        to_rescan = max(self._next_rescan - time.monotonic(), 0.0)
        to_settle = self.tracker.seconds_to_next_look()
        return to_rescan if to_settle is None else min(to_rescan, to_settle)

    def step(self) -> list[SealedBlock]:
        """One pass (see the module docstring); returns the blocks handed over."""
        if not self._recovered:
            self._recover()
        self._settled.extend(self.tracker.look(self._candidates()))
        self._register()
        self._seal()
        return self._hand_over()

    def _recover(self) -> None:
        """Rebuild the cache from the state store: the blocks known, those still open."""
        blocks = self.state.blocks()
        self._recovered = True
        self._open = {b.block_id for b in blocks if b.status == OPEN}
        log.info("watching %s: %d blocks known, %d open", self.directory, len(blocks),
                 len(self._open))

    def _candidates(self) -> set[Path]:
        with self._lock:
            paths, self._hinted = self._hinted, set()
        now = time.monotonic()
        if now >= self._next_rescan:
            self._next_rescan = now + self.config.watcher.rescan_interval_s
            with os.scandir(self.directory) as entries:
                listed = {Path(e.path) for e in entries if e.is_file(follow_symlinks=False)}
            # Files cleaned off the directory are forgotten: memory follows the directory.
            self._known &= listed
            self._reported &= listed
            paths.update(listed)
        paths.update(self.tracker.pending())
        wanted = set()
        for path in paths - self._known:
            kind = classify(path.name)
            if kind is FileKind.SUBBAND:
                wanted.add(path)
            elif kind is FileKind.FOREIGN and path not in self._reported and path.exists():
                self._report_foreign(path)
        return wanted.difference(self._settled)

    def _report_foreign(self, path: Path) -> None:
        exc = ForeignFileError("an .hdf5 file whose name is not YYYY-MM-DDTHH:MM:SS_sbNN.hdf5:"
                               " not a subband file, left alone", file=path)
        log.warning("%s", exc)
        self.state.record_failure(FailureRecord.from_exception(
            exc, block_id=None, stage=WATCH_STAGE, worker=self.consumer, at=time.time()))
        self._reported.add(path)

    def _register(self) -> None:
        """Register the settled files, oldest name first; each leaves the list only once
        the state store has it."""
        named = sorted((parse_subband_name(p), p) for p in self._settled)
        tolerance = self.config.blocks.timestamp_tolerance_s
        for name, path in named:
            nearby = nearby_block_ids(name.timestamp, tolerance)
            block_id, new = self.state.register_file_near(nearby, str(path), name.subband)
            if new and name.timestamp < block_id:
                block_id = self._rename(block_id, name.timestamp, nearby, str(path))
            self._settled.remove(path)
            self._known.add(path)
            if not new or block_id in self._open:
                continue
            record = self.state.block(block_id)
            if record is not None and record.status == OPEN:
                self._open.add(block_id)
                log.info("block %s: first file %s", block_id, path.name)
            else:
                log.warning("late file %s: block %s was already sealed %s; not processed",
                            path.name, block_id, record.status if record else "?")
                self.state.emit("late_file", {"block_id": block_id, "path": str(path)})

    def _rename(self, block_id: str, earliest: str, nearby: list[str], path: str) -> str:
        """Name the open block ``block_id`` after its earlier file stamped ``earliest``; the
        block's id after that: unchanged if the store refused (sealed or started meanwhile),
        or the id another watcher gave it first (the store knows the file's block)."""
        try:
            renamed = self.state.rename_block(block_id, earliest)
        except StateError:
            if self.state.block(block_id) is not None:
                raise
            self._open.discard(block_id)
            return self.state.register_file_near(nearby, path, None)[0]
        if not renamed:
            return block_id
        if block_id in self._open:
            self._open.discard(block_id)
            self._open.add(earliest)
        log.info("block %s renamed %s after its earliest file", block_id, earliest)
        return earliest

    def _seal(self) -> None:
        expected = self.config.blocks.expected_subbands
        deadline = self.config.watcher.seal_deadline_s
        for block_id in sorted(self._open):
            try:
                status = self.state.seal_block(block_id, expected, deadline)
            except StateError:
                if self.state.block(block_id) is not None:
                    raise
                self._open.discard(block_id)  # renamed by another watcher
                continue
            if status != OPEN:
                self._open.discard(block_id)
                log.info("block %s sealed %s", block_id, status)

    def _hand_over(self) -> list[SealedBlock]:
        handed = []
        while True:
            events = self.state.read_group(HANDOVER_GROUP, self.consumer)
            if not events:
                return handed
            for event in events:
                if event.kind == "block_sealed":
                    block = self._sealed_block(event.data["block_id"], event.data["status"])
                    if self._hand_over_one(block):
                        handed.append(block)
                self.state.ack(HANDOVER_GROUP, [event.id])

    def _hand_over_one(self, block: SealedBlock) -> bool:
        """Hand ``block`` to ``on_sealed``. A transient error propagates (the event stays
        unacknowledged and comes again); any other is recorded as the block's failure
        (stage ``watch``) and the block is not handed over again."""
        with log_context(block=block.block_id):
            try:
                self.on_sealed(block)
            except Exception as exc:
                if isinstance(exc, ContimgError) and exc.transient:
                    raise
                log.error("block %s not handed over: %s", block.block_id, exc)
                self.state.record_failure(FailureRecord.from_exception(
                    exc, block_id=block.block_id, stage=WATCH_STAGE, worker=self.consumer,
                    at=time.time()))
                return False
        return True

    def _sealed_block(self, block_id: str, status: str) -> SealedBlock:
        files = sorted(self.state.files(block_id), key=lambda f: (f.subband is None,
                                                                  f.subband, f.path))
        return SealedBlock(block_id, status, tuple(Path(f.path) for f in files))
