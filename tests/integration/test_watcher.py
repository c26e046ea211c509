"""The watcher against a real state store (SQLite; Redis for the outage) and real
file-system events: files registered once, blocks sealed once and handed over once, oldest
first; files being written, dotfiles and foreign names left alone; partial blocks sealed at
the deadline; a hand-over interrupted by a crash done again after the restart.

The watcher reads names and sizes only (ingest reads the headers), so most files here are
small placeholders with correlator names: what matters is their names, their timing and
how they appear (written in place, renamed from ``*_incomplete.hdf5``)."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from contimg_dask.errors import StateUnavailableError
from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline.watcher import HANDOVER_GROUP, SealedBlock, Watcher
from contimg_dask.state import StateStore, open_state_store
from tests.helpers import make_config
from tests.state.conftest import backend_overrides, redis_server  # noqa: F401 (fixture)

T0 = dt.datetime(2026, 3, 1, 12, 0, 0)
BLOCK_S = 309


def stamp(block: int, jitter_s: int = 0) -> str:
    return (T0 + dt.timedelta(seconds=BLOCK_S * block + jitter_s)).strftime("%Y-%m-%dT%H:%M:%S")


def write_subband(incoming: Path, block: int, sb: int, *, jitter_s: int | None = None,
                  via_incomplete: bool = True) -> Path:
    """A placeholder subband file; like the correlator, written as *_incomplete then renamed.
    Subbands of one block carry timestamps up to 15 s apart (sb % 4 * 5 s)."""
    jitter = sb % 4 * 5 if jitter_s is None else jitter_s
    final = incoming / f"{stamp(block, jitter)}_sb{sb:02d}.hdf5"
    tmp = final.with_name(final.stem + "_incomplete.hdf5") if via_incomplete else final
    tmp.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
    if via_incomplete:
        tmp.rename(final)
    return final


def write_block(incoming: Path, block: int, subbands: Iterable[int] = range(16)) -> None:
    for sb in subbands:
        write_subband(incoming, block, sb)


class Recorder:
    """The hand-over target: remembers what it was given (``fail_next`` raises once)."""

    def __init__(self) -> None:
        self.blocks: list[SealedBlock] = []
        self.fail_next: BaseException | None = None

    def __call__(self, block: SealedBlock) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.blocks.append(block)


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    path = tmp_path / "incoming"
    path.mkdir()
    return path


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state_store(make_config(tmp_path))
    yield store
    store.close()


def watcher(incoming: Path, state: StateStore, recorder: Recorder, **overrides: object
            ) -> Watcher:
    config = make_config(incoming.parent, **{"watcher.file_events": False,
                                             "watcher.rescan_interval_s": 0.1, **overrides})
    return Watcher(incoming, config, state, recorder, consumer="test")


def settle_passes(w: Watcher, n: int = 2) -> list[SealedBlock]:
    """Run passes until files looked at have had time to settle."""
    handed = []
    for _ in range(n):
        handed += w.step()
        time.sleep(w.config.watcher.settle_s + 0.05)
    return handed + w.step()


def test_backlog_handed_over_once_oldest_first(incoming: Path, state: StateStore) -> None:
    for block in (2, 0, 1):  # written out of order: the hand-over must still be in order
        write_block(incoming, block)
    (incoming / f"{stamp(3)}_sb00_incomplete.hdf5").write_bytes(b"partial")
    (incoming / f".{stamp(3)}_sb01.hdf5.XYZ123").write_bytes(b"rsync temporary")
    (incoming / f"{stamp(0)}_truth.h5").write_bytes(b"not ours")
    foreign = incoming / "calibration_notes.hdf5"
    foreign.write_bytes(b"someone else's file")
    recorder = Recorder()
    w = watcher(incoming, state, recorder)

    handed = settle_passes(w)

    assert [b.block_id for b in handed] == [stamp(0), stamp(1), stamp(2)]
    assert recorder.blocks == handed
    for block in handed:
        assert block.status == "complete"
        assert [p.name[-9:-5] for p in block.files] == [f"sb{sb:02d}" for sb in range(16)]
    assert {b.block_id: (b.status, b.n_files) for b in state.blocks()} == {
        stamp(i): ("complete", 16) for i in range(3)}
    registered = {f.path for i in range(3) for f in state.files(stamp(i))}
    assert len(registered) == 48 and all("_incomplete" not in p and "/." not in p
                                         for p in registered)
    failures = state.failures()
    assert [(f.stage, f.error, f.input) for f in failures] == [
        ("watch", "ForeignFileError", str(foreign))]
    sealed = [e.data for e in state.events() if e.kind == "block_sealed"]
    assert [(e["block_id"], e["status"]) for e in sealed] == [
        (stamp(i), "complete") for i in range(3)]

    # A restart (a new watcher on the same store) hands nothing over again and seals
    # nothing again; it reports the foreign file once more (once per watcher process).
    again = Recorder()
    assert settle_passes(watcher(incoming, state, again)) == []
    assert again.blocks == []
    assert len([e for e in state.events() if e.kind == "block_sealed"]) == 3
    assert len(state.failures()) == 2


def test_growing_file_waits_until_its_size_holds(incoming: Path, state: StateStore) -> None:
    write_block(incoming, 0, range(15))
    growing = write_subband(incoming, 0, 15, via_incomplete=False)
    recorder = Recorder()
    w = watcher(incoming, state, recorder, **{"watcher.settle_s": 0.5})
    w.step()
    for _ in range(4):  # keeps growing for 4 settle periods: never taken
        time.sleep(0.3)
        with growing.open("ab") as handle:
            handle.write(bytes(100))
        w.step()
        assert growing.name not in {Path(f.path).name for f in state.files(stamp(0))}
    assert recorder.blocks == []
    assert len(state.files(stamp(0))) == 15
    handed = settle_passes(w)
    assert [(b.block_id, len(b.files)) for b in handed] == [(stamp(0), 16)]


def test_partial_block_sealed_at_the_deadline(incoming: Path, state: StateStore) -> None:
    write_block(incoming, 0, range(10))
    recorder = Recorder()
    w = watcher(incoming, state, recorder, **{"watcher.seal_deadline_s": 1.5})
    assert settle_passes(w) == []
    assert state.block(stamp(0)).status == "open"
    time.sleep(1.5)
    handed = w.step()
    assert [(b.block_id, b.status, len(b.files)) for b in handed] == [(stamp(0), "partial", 10)]
    # A subband arriving after the seal is registered (seen, once) but not handed over.
    write_subband(incoming, 0, 12)
    assert settle_passes(w) == []
    assert [e.data["path"][-9:] for e in state.events() if e.kind == "late_file"] == [
        "sb12.hdf5"]
    assert state.block(stamp(0)).status == "partial"


def test_subband_stamped_before_the_first_seen_joins_its_block(incoming: Path,
                                                                state: StateStore) -> None:
    """Subbands arrive in any order; their stamps differ by tens of seconds. The block is
    named after its earliest file (renamed while open), as `contimg run` names it."""
    recorder = Recorder()
    w = watcher(incoming, state, recorder)
    write_subband(incoming, 0, 5, jitter_s=40)
    settle_passes(w)
    for sb in range(16):
        if sb != 5:
            write_subband(incoming, 0, sb, jitter_s=sb * 3)
    write_subband(incoming, 1, 0)  # the next block (309 s later) starts a block of its own
    settle_passes(w)
    assert [(b.block_id, len(b.files)) for b in recorder.blocks] == [(stamp(0), 16)]
    assert [b.block_id for b in state.blocks()] == [stamp(0), stamp(1)]


def test_watch_and_run_name_blocks_alike_whatever_the_arrival_order(
        small_blocks: Path, incoming: Path, state: StateStore) -> None:
    """The two simulated blocks' files (stamps up to 2 s apart within a block) land in a
    shuffled order, each block's earliest-stamped files last, one file a pass: the blocks
    the watcher seals carry the ids `contimg run`'s discovery gives the same files, with
    the same files each."""
    files = sorted(small_blocks.glob("*_sb??.hdf5"))
    order = random.Random(16).sample(files, len(files))
    order.sort(key=lambda f: f.name[:19] == min(g.name[:19] for g in files
                                               if abs(_seconds(g) - _seconds(f)) < 60))
    assert order[0].name[:19] > files[0].name[:19]  # the first to land is not the earliest
    recorder = Recorder()
    w = watcher(incoming, state, recorder, **{"watcher.settle_s": 0.05})
    for path in order:  # files settle (and are registered) one by one
        shutil.copy(path, incoming / path.name)
        settle_passes(w, 1)
    settle_passes(w)
    watched = {b.block_id: sorted(p.name for p in b.files) for b in recorder.blocks}
    found = discover_blocks(incoming, w.config.blocks).blocks
    assert watched == {b.block_id: sorted(Path(f.path).name for f in b.files.values())
                       for b in found}
    assert sorted(watched) == sorted({min(g.name[:19] for g in files
                                          if abs(_seconds(g) - _seconds(f)) < 60)
                                      for f in files})
    assert len(watched) == 2 and all(len(names) == 16 for names in watched.values())


def _seconds(path: Path) -> float:
    return dt.datetime.fromisoformat(path.name[:19]).timestamp()


def test_interrupted_hand_over_is_done_again_after_a_restart(incoming: Path,
                                                             state: StateStore) -> None:
    write_block(incoming, 0)
    crashing = Recorder()
    crashing.fail_next = StateUnavailableError("state backend went away mid-submit")
    with pytest.raises(StateUnavailableError):
        settle_passes(watcher(incoming, state, crashing))
    assert state.block(stamp(0)).status == "complete"
    # The block was sealed, its event not acknowledged: the next watcher hands it over.
    recorder = Recorder()
    assert [b.block_id for b in watcher(incoming, state, recorder).step()] == [stamp(0)]
    assert state.read_group(HANDOVER_GROUP, "test") == []


def test_a_permanent_hand_over_error_is_recorded_and_not_retried(incoming: Path,
                                                                 state: StateStore) -> None:
    write_block(incoming, 0)
    recorder = Recorder()
    recorder.fail_next = ValueError("recipe has no stage 'imaeg'")
    w = watcher(incoming, state, recorder)
    assert settle_passes(w) == []
    assert [(f.block_id, f.stage, f.error) for f in state.failures()] == [
        (stamp(0), "watch", "ValueError")]
    assert settle_passes(w) == [] and recorder.blocks == []


@contextmanager
def running(w: Watcher) -> Iterator[None]:
    """``w.run`` in a thread (events on if configured) for the ``with`` block."""
    stop = threading.Event()
    w.start()
    thread = threading.Thread(target=w.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        w.stop_waiting()
        thread.join(timeout=30)
        w.close()
    assert not thread.is_alive()


def wait_until(condition: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_file_events_take_a_file_before_the_next_rescan(incoming: Path) -> None:
    """inotify (watchdog): with rescans a minute apart, a block renamed into place is
    handed over within seconds."""
    config = make_config(incoming.parent, **{"watcher.rescan_interval_s": 60.0})
    recorder = Recorder()
    store = open_state_store(config)
    with running(Watcher(incoming, config, store, recorder, consumer="events")):
        time.sleep(0.5)  # the first pass (a rescan of the empty directory) is done
        write_block(incoming, 0)
        wait_until(lambda: recorder.blocks, 20)
    store.close()
    assert [b.block_id for b in recorder.blocks] == [stamp(0)]


def test_watcher_rides_out_a_redis_outage(incoming: Path, request: pytest.FixtureRequest
                                          ) -> None:
    """Redis stopped while files arrive, restarted 3 s later: the watcher keeps retrying,
    then registers and hands over the block, once."""
    overrides = backend_overrides("redis", request)
    server = request.getfixturevalue("redis_server")
    config = make_config(incoming.parent, **overrides, **{"watcher.file_events": False})
    store = open_state_store(config)
    recorder = Recorder()
    try:
        with running(Watcher(incoming, config, store, recorder, consumer="outage")):
            time.sleep(0.5)
            server.stop()
            write_block(incoming, 0)
            time.sleep(3)
            assert recorder.blocks == []
            server.start()
            wait_until(lambda: recorder.blocks, 30)
    finally:
        if server.process is None:
            server.start()
        store.close()
    assert [(b.block_id, len(b.files)) for b in recorder.blocks] == [(stamp(0), 16)]


def test_two_watchers_on_one_directory_agree_on_the_block(incoming: Path,
                                                          state: StateStore) -> None:
    """Two watchers (two hosts) on one directory and one store. Watcher A sees sb01 (stamped
    5 s after sb00) first and starts the block with it; watcher B, whose cache was built
    before, sees sb00 and the rest: every file joins A's block, each once, one hand-over,
    and the block is renamed after its earliest file (sb00), as ``contimg run`` names it.
    (Each watcher grouping by its own cache put sb00.. in a second block.)"""
    a_got, b_got = Recorder(), Recorder()
    a, b = watcher(incoming, state, a_got), watcher(incoming, state, b_got)
    a.step(), b.step()  # both caches built on the empty store
    write_subband(incoming, 0, 1)
    settle_passes(a)
    assert [x.block_id for x in state.blocks()] == [stamp(0, 5)]
    write_block(incoming, 0, [sb for sb in range(16) if sb != 1])
    handed = settle_passes(b) + settle_passes(a)
    assert [(x.block_id, x.status, x.n_files) for x in state.blocks()] == [
        (stamp(0, 0), "complete", 16)]
    assert [(x.block_id, len(x.files)) for x in handed] == [(stamp(0, 0), 16)]
