"""Reliability of ``contimg watch`` with real processes: the command runs as a child process
(its LocalCluster's workers, the MS writer and CASA below it) on `small` simulated blocks that
a feeder lands on the incoming directory as the correlator does.

- Kill trials: SIGKILL to the whole process group at a random moment while blocks arrive and
  are processed, then a restart: no block lost, no product recorded twice, absent,
  half-written (``*.tmp.*``/``*.old.*`` left) or orphaned, every block done or dead-lettered
  with its cause. ``CONTIMG_KILL_TRIALS`` trials (1 by default, ~90 s, for CI time; the issue's 20
  were run by hand, see benchmarks/results/watch_reliability.md).
- Redis stopped for 30 s while a block is in work and restarted: the same checks, and the
  watch process never exited.

The recipes stop at ``export`` (a Measurement Set, written by its own child process): the
image stage's tclean (~65 s per small block on the shared CI machine) would make each trial
several minutes long and adds no new way of writing a product (it uses the same atomic
writer, tested in tests/integration/test_crash_safety.py).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from contimg_dask.config import PipelineConfig
from contimg_dask.pipeline import Pipeline
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.state import StateStore, open_state_store
from contimg_dask.testing.streaming import (
    Feeder,
    block_outcomes,
    dump_stacks,
    integrity_problems,
    start_watch,
    stop_watch,
)
from tests.helpers import make_config
from tests.state.redis_process import RedisProcess

pytestmark = pytest.mark.slow

RECIPES = ("{calibrator: [{stage: ingest}, {stage: flag}, {stage: calibrate_solve}, "
           "{stage: calibrate_apply}, {stage: export}], target: [{stage: ingest}, "
           "{stage: flag}, {stage: calibrate_apply}, {stage: export}]}")
# A target waits for an earlier block still unclassified (its ingest lease held by the
# killed process: free after state.lease_s = 30 s, then ingest, flag, solve) up to this.
# Leases of 10 s (heartbeats every 2 s): a killed worker's stage is free again sooner.
OVERRIDES = {"pipeline.recipes": RECIPES, "pipeline.solutions_wait_s": 240.0,
             "state.lease_s": 10.0, "logging.level": "INFO"}
N_BLOCKS = 2
SETTLE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def staged_blocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two consecutive small blocks; 3C138 transits the first (the calibrator block)."""
    root = tmp_path_factory.mktemp("staged")
    out = root / "blocks"
    simulate_blocks(make_config(root), out,
                    SimulationOptions(preset="small", n_blocks=N_BLOCKS, seed=7,
                                      transit="3C138"))
    return out


class Trial:
    """One run directory: the incoming directory, the pipeline's root, the watch log."""

    def __init__(self, path: Path, staged: Path, **overrides: object) -> None:
        self.root = path / "root"
        self.incoming = path / "incoming"
        self.incoming.mkdir(parents=True)
        self.log = path / "watch.log"
        self.overrides = {**OVERRIDES, **overrides}
        self.config: PipelineConfig = make_config(self.root, **{
            key: yaml.safe_load(value) if isinstance(value, str) else value
            for key, value in self.overrides.items()})
        self.feeder = Feeder(staged, self.incoming, block_interval_s=3.0, seed=len(str(path)))
        self.blocks = list(self.feeder.blocks())
        self.procs: list = []
        self.log_offsets: dict[int, int] = {}

    def start(self):
        # Where this start's output begins in the shared log: a process killed before it
        # said it was watching leaves no such line, so lines are not counted.
        offset = self.log.stat().st_size if self.log.exists() else 0
        proc = start_watch(self.incoming, self.root, self.overrides, self.log)
        self.procs.append(proc)
        self.log_offsets[proc.pid] = offset
        return proc

    def wait_ready(self, proc, timeout: float = 300.0) -> None:
        """Until this start of ``contimg watch`` says it is watching (a SIGTERM before that,
        while Python is still importing, ends it as interrupted: 130)."""
        deadline = time.monotonic() + timeout
        while b"contimg watch: watching" not in self.log.read_bytes()[
                self.log_offsets[proc.pid]:]:
            assert proc.poll() is None, self.log.read_text()[-5000:]
            if time.monotonic() > deadline:
                dump_stacks(proc)  # what it hangs in, into the log
                raise AssertionError(f"not up in {timeout} s: {self.log.read_text()[-8000:]}")
            time.sleep(0.2)

    def wait_settled(self, state: StateStore, proc, timeout: float = SETTLE_TIMEOUT_S
                     ) -> dict[str, str]:
        """Poll the state store (as the pipeline judges outcomes) until every fed block is
        done or dead-lettered."""
        pipeline = Pipeline(self.config, state=state)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes = block_outcomes(pipeline)
            if len(outcomes) == len(self.blocks) and set(outcomes.values()) <= {"done",
                                                                               "failed"}:
                return outcomes
            assert proc.poll() is None, f"contimg watch exited: {self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"not settled in {timeout} s: {block_outcomes(pipeline)}\n"
                             f"{self.log.read_text()[-3000:]}")

    def check(self, state: StateStore, outcomes: dict[str, str]) -> None:
        """No block lost, nothing duplicated, absent, half-written or orphaned; every block
        done or dead-lettered with its cause."""
        # Each fed block is one block of the store with all its files, named after its
        # earliest file as the feeder names it.
        fed = {path.name: block_id for block_id, files in self.feeder.blocks().items()
               for path in files}
        assert len(outcomes) == len(self.blocks)
        for block in state.blocks():
            assert (block.status, block.n_files) == ("complete", 16), block
            sources = {fed[Path(f.path).name] for f in state.files(block.block_id)}
            assert sources == {block.block_id}, (block.block_id, sources)
        paths = self.config.paths.resolved()
        assert integrity_problems(state, [paths.products, paths.stores]) == []
        for block_id, outcome in outcomes.items():
            if outcome == "failed":
                assert state.failures(block_id=block_id), block_id
        kinds = {(p.block_id, p.stage, p.kind) for p in state.products()}
        for block_id, outcome in outcomes.items():
            if outcome == "done":
                assert (block_id, "export", "ms") in kinds
        assert min(outcomes) in {b for b, stage, _ in kinds if stage == "calibrate_solve"}

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                stop_watch(proc)


@pytest.fixture
def trials(tmp_path: Path) -> Iterator[list[Trial]]:
    made: list[Trial] = []
    yield made
    for trial in made:
        trial.cleanup()


def kill_moment(state: StateStore, proc, stages_done: int, delay_s: float,
                timeout_s: float = SETTLE_TIMEOUT_S) -> list[str]:
    """Wait until ``stages_done`` stages are done, then ``delay_s`` more; the stages running
    then (what the kill interrupts)."""
    deadline = time.monotonic() + timeout_s
    while len(state.stages(status="done")) < stages_done:
        assert proc.poll() is None and time.monotonic() < deadline, "no progress to kill"
        time.sleep(0.1)
    time.sleep(delay_s)
    return [f"{s.stage}" for s in state.stages(status="running")]


def test_kill_trials(staged_blocks: Path, tmp_path: Path, trials: list[Trial]) -> None:
    """The kill comes after a random number of stages done (0 to all but the last: a kill
    during start-up, in any stage, or between stages) plus a random 0-3 s."""
    n_trials = int(os.environ.get("CONTIMG_KILL_TRIALS", "1"))
    rng = random.Random(int(os.environ.get("CONTIMG_KILL_SEED", "16")))
    n_stages = 9  # calibrator block: 5 stages, target block: 4
    for i in range(n_trials):
        trial = Trial(tmp_path / f"trial{i:02d}", staged_blocks)
        trials.append(trial)
        first = trial.start()
        trial.feeder.start()
        state = open_state_store(trial.config)
        stages_done, delay = rng.randrange(n_stages), rng.uniform(0.0, 3.0)
        interrupted = kill_moment(state, first, stages_done, delay)
        assert stop_watch(first, signal.SIGKILL) == -signal.SIGKILL
        second = trial.start()
        trial.wait_ready(second)
        outcomes = trial.wait_settled(state, second)
        trial.feeder.join()
        trial.check(state, outcomes)
        assert stop_watch(second, signal.SIGTERM) == 0
        attempts = sum(s.attempts for s in state.stages())
        print(f"\nkill trial {i}: after {stages_done} stages + {delay:.1f} s, running "
              f"{interrupted or 'none'}; outcomes {sorted(outcomes.values())}; "
              f"{attempts} attempts for {len(state.stages())} stages", flush=True)
        state.close()


def test_redis_outage_of_30_s(staged_blocks: Path, tmp_path: Path, trials: list[Trial]
                              ) -> None:
    base = make_config(tmp_path / "redis-settings")
    server = RedisProcess(tmp_path / "redis", base.state.redis).start()  # appendfsync always
    trial = Trial(tmp_path / "trial", staged_blocks, **{
        "state.backend": "redis", "state.url": server.url, "state.instance": "outage"})
    trials.append(trial)
    try:
        proc = trial.start()
        trial.feeder.start()
        state = open_state_store(trial.config)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not any(p.stage == "ingest" for p in state.products()):
            assert time.monotonic() < deadline and proc.poll() is None, trial.log.read_text()
            time.sleep(0.2)
        state.close()
        server.stop()
        time.sleep(30)
        assert proc.poll() is None, trial.log.read_text()[-3000:]
        server.start()
        restarted = time.time()
        state = open_state_store(trial.config)
        outcomes = trial.wait_settled(state, proc)
        trial.feeder.join()
        trial.check(state, outcomes)
        assert set(outcomes.values()) == {"done"}
        # The dashboard's liveness lines: both heartbeats resumed after the outage.
        for process in ("pipeline", "watcher"):
            beats = state.metric_series(f"heartbeat.{process}", "raw")
            assert beats and float(beats[-1].key) > restarted, process
        # ... and the Dask workers' line: the scheduler's worker count, as configured.
        workers = state.metric_series("heartbeat.dask_workers", "raw")
        assert workers and float(workers[-1].key) > restarted
        assert workers[-1].mean == trial.config.dask.n_workers
        assert stop_watch(proc, signal.SIGTERM) == 0
        log = trial.log.read_text()
        assert "work paused" in log or "state store unreachable" in log
        state.close()
    finally:
        if server.process is None:
            server.start()
        server.stop()
