"""Drivers for the streaming trials (tests/e2e/test_watch_reliability.py,
benchmarks/streaming.py): a feeder that lands simulated blocks on an incoming directory as
the correlator does, a ``contimg watch`` child process, and the checks that a run lost,
duplicated and half-wrote nothing."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from contimg_dask.io.uvh5.discovery import TIMESTAMP_FORMAT
from contimg_dask.io.uvh5.header import parse_subband_name
from contimg_dask.pipeline import Pipeline
from contimg_dask.state import StateStore
from contimg_dask.utc import parse_utc_unix

#: Leftovers of an interrupted atomic write (io/system/atomic.py names them so).
LEFTOVER_MARKERS = (".tmp.", ".old.")


@dataclass
class Feeder:
    """Copies the subband files of ``staging`` (simulated blocks) into ``incoming`` in a
    thread: block after block, ``block_interval_s`` apart, each block's subbands in a random
    order ``subband_gap_s`` apart, each written as ``*_incomplete.hdf5`` and renamed, as
    the correlator does. ``cycles`` > 1 feeds the staged blocks again, their names moved
    on by the staged blocks' span each time (the contents keep their own times: for soak
    runs of recipes without calibration). ``arrivals`` maps a block's first file name
    timestamp to the wall time (Unix s) its last subband was renamed into place, ``landed``
    each file name to the wall time it was."""

    staging: Path
    incoming: Path
    block_interval_s: float
    subband_gap_s: float = 0.05
    seed: int = 0
    cycles: int = 1
    arrivals: dict[str, float] = field(default_factory=dict)
    landed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._feed, name="feeder", daemon=True)

    def blocks(self) -> dict[str, list[Path]]:
        """The staged blocks' files by the timestamp of their earliest file."""
        by_stamp: dict[str, list[Path]] = {}
        for path in sorted(self.staging.glob("*_sb??.hdf5")):
            named = parse_subband_name(path)
            if named:
                by_stamp.setdefault(named.timestamp, []).append(path)
        blocks: dict[str, list[Path]] = {}
        for stamp in sorted(by_stamp):  # subbands of one block carry stamps seconds apart
            near = [b for b in blocks if abs(_seconds(stamp) - _seconds(b)) < 120]
            blocks.setdefault(near[0] if near else stamp, []).extend(by_stamp[stamp])
        return blocks

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _feed(self) -> None:
        rng = random.Random(self.seed)
        blocks = self.blocks()
        span = dt.timedelta(seconds=BLOCK_CADENCE_S * len(blocks))
        for i in range(self.cycles * len(blocks)):
            block_id, files = list(blocks.items())[i % len(blocks)]
            shift = span * (i // len(blocks))
            if i:
                time.sleep(self.block_interval_s)
            for path in rng.sample(files, len(files)):
                final = self.incoming / _moved(path.name, shift)
                partial = final.with_name(final.stem + "_incomplete.hdf5")
                shutil.copyfile(path, partial)
                partial.rename(final)
                self.landed[final.name] = time.time()
                time.sleep(self.subband_gap_s)
            self.arrivals[_moved(block_id, shift)] = time.time()


#: The simulator's (and the telescope's) block cadence, seconds.
BLOCK_CADENCE_S = 309


def _moved(name: str, shift: dt.timedelta) -> str:
    """``name`` (starting with a timestamp) with its timestamp moved on by ``shift``."""
    if not shift:
        return name
    stamp = dt.datetime.strptime(name[:19], TIMESTAMP_FORMAT) + shift
    return stamp.strftime(TIMESTAMP_FORMAT) + name[19:]


def _seconds(stamp: str) -> float:
    return parse_utc_unix(stamp)


def start_watch(incoming: Path, root: Path, overrides: dict[str, object], log: Path
                ) -> subprocess.Popen:
    """``contimg --env testing watch INCOMING`` in a child process, paths under ``root``,
    its output appended to ``log``."""
    sets = [arg for key, value in {"paths.root": str(root), **overrides}.items()
            for arg in ("--set", f"{key}={value}")]
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "contimg_dask.cli.main", "--env", "testing", *sets,
             "watch", str(incoming)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=_child_environment())


def _child_environment() -> dict[str, str]:
    """This environment without the trials' own ``CONTIMG_KILL_*`` settings (the
    configuration loader refuses ``CONTIMG_*`` variables it does not know), with Python's
    fault handler on (:func:`dump_stacks`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTIMG_KILL_")}
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}


def dump_stacks(proc: subprocess.Popen) -> None:
    """Make a ``contimg watch`` child (started by :func:`start_watch`) write the Python
    stack of each of its threads to its log and end (SIGABRT to its fault handler): what a
    process that hangs was doing."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGABRT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def stop_watch(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    """Stop the watch process; return its exit code. SIGKILL goes to its whole session
    (its Dask workers, CASA and MS-writer children die with it, as when a service manager
    kills the service); any other signal to the watch process alone, as an operator sends
    it, and whatever it leaves behind is then killed."""
    with contextlib.suppress(ProcessLookupError):
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    code = proc.wait(timeout=180)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return code


def block_outcomes(pipeline: Pipeline) -> dict[str, str]:
    """Each block's outcome as the pipeline judges it against its recipe: ``done``,
    ``failed`` (dead-lettered) or ``pending``."""
    return {b.block_id: pipeline.outcome(b.block_id).outcome
            for b in pipeline.state.blocks()}


def integrity_problems(state: StateStore, roots: list[Path]) -> list[str]:
    """What is wrong with the products: a stage's product recorded twice, recorded but
    absent, a leftover of an interrupted write or an unrecorded file (an orphan) under
    ``roots``, a failed stage without a recorded error. Empty when all is well."""
    problems = []
    records = state.products()
    for key, n in Counter((p.block_id, p.stage, p.kind, p.path) for p in records).items():
        if n > 1:
            problems.append(f"product recorded {n} times: {key}")
    for p in records:
        if not Path(p.path).exists():
            problems.append(f"product recorded but absent: {p.path}")
    recorded = {Path(p.path) for p in records}
    for root in roots:
        for path in root.rglob("*"):
            if any(marker in path.name for marker in LEFTOVER_MARKERS):
                problems.append(f"leftover of an interrupted write: {path}")
            elif not _accounted_for(path, recorded):
                problems.append(f"on disk but not recorded (an orphan): {path}")
    for stage in state.stages(status="failed"):
        if not stage.error or not stage.error.get("message"):
            problems.append(f"{stage.block_id} {stage.stage} failed without a cause")
    return problems


def _accounted_for(path: Path, recorded: set[Path]) -> bool:
    """``path`` is a recorded product, inside one, the lock file beside one (filelock's
    ``<product>.lock``), or a directory holding one."""
    if path in recorded or any(parent in recorded for parent in path.parents):
        return True
    if path.suffix == ".lock" and path.with_suffix("") in recorded:
        return True
    return path.is_dir() and any(path in r.parents for r in recorded)
