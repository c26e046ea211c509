"""The simulation engine of benchmarks/scaling_model.py (see its docstring): a real
``distributed`` scheduler with in-process workers running sleeping tasks, pipeline drivers,
and shared resources served first come, first served in virtual time. Its own module so
that the tasks are pickled by reference (the resources live in this module's globals).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil

#: Blocks per mosaic period (``mosaic.period_s`` 3600 s / 309 s per block).
MOSAIC_PERIOD_BLOCKS = 3600 / 309
#: Dask tasks per Dask stage: the scheduler's transitions counted in the real 1-worker run
#: of benchmarks/scaling.py (scaling_small.json: 76.4 tasks per block of 3 stages).
TASKS_PER_STAGE = 25
#: Assumed aggregate bandwidth (reads + writes, bytes/s) of the shared file system: one NFS
#: server on 10 GbE (1.25 GB/s line rate, ~1 GB/s sustained), what a small observatory
#: cluster starts with; a parallel file system (Lustre, CephFS) gives several times more.
SHARED_FS_BYTES_PER_S = 1.0e9


@dataclasses.dataclass(frozen=True)
class StageCost:
    """One stage of the recipe: ``wall_s`` seconds on one worker (the measured figure),
    ``tasks`` Dask tasks (1 for an engine stage holding ``CASA``), ``io_bytes`` read and
    written on the shared file system, ``lock`` ``"mosaic"`` when the stage's work runs
    under its period's mosaic lock; ``source``: where the figure comes from."""

    name: str
    wall_s: float
    source: str
    tasks: int = TASKS_PER_STAGE
    io_bytes: float = 0.0
    casa: bool = False
    lock: str | None = None
    #: Run on calibrator blocks only (calibrate_solve).
    calibrator_only: bool = False
    #: On a target block, wait before this stage (calibrate_apply) as the orchestrator does
    #: (contimg_dask/pipeline/calibration.py ``ready_to_apply``): until no calibrator block
    #: known (its ingest done) has its solve still to do and every earlier block's ingest is
    #: done. One declination strip: every calibrator counts.
    waits_for_solve: bool = False


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """Everything the simulation is fed (real seconds; ``redis_*`` per stage)."""

    stages: tuple[StageCost, ...]
    redis_stage_service_s: float
    redis_stage_latency_s: float
    pipeline_overhead_s: float
    fs_bytes_per_s: float = SHARED_FS_BYTES_PER_S
    threads_per_worker: int = 2
    mosaic_period_blocks: float = MOSAIC_PERIOD_BLOCKS
    #: Coefficient of variation of each stage's compute (and lock-held) seconds per block,
    #: drawn lognormal with mean 1 (:func:`duration_factors`); 0: every block the same.
    duration_cv: float = 0.0
    seed: int = 0
    #: Fraction of blocks that are calibrator transits (:func:`calibrator_blocks`).
    calibrator_fraction: float = 0.0


def duration_factors(n_blocks: int, n_stages: int, cv: float, seed: int) -> np.ndarray:
    """Multipliers of each block's (row) stage (column) compute seconds: lognormal with
    mean 1 and coefficient of variation ``cv`` (sigma^2 = ln(1 + cv^2), mu = -sigma^2 / 2),
    from a generator seeded with ``seed``; all ones when ``cv`` is 0."""
    if cv <= 0:
        return np.ones((n_blocks, n_stages))
    sigma = np.sqrt(np.log1p(cv * cv))
    rng = np.random.default_rng(seed)
    return rng.lognormal(-0.5 * sigma * sigma, sigma, size=(n_blocks, n_stages))


def calibrator_blocks(n_blocks: int, fraction: float) -> frozenset[int]:
    """The blocks (0-based, in time order) that are calibrator transits, spread evenly:
    those where ``floor(fraction x i)`` steps up, block 0 first (a campaign starting on a
    calibrator: the targets after it wait for its solve)."""
    if fraction <= 0:
        return frozenset()
    return frozenset(i for i in range(n_blocks)
                     if math.floor(fraction * i) > math.floor(fraction * (i - 1)))


def drawn_block_seconds(inputs: ModelInputs, n_blocks: int) -> float:
    """Mean over ``n_blocks`` blocks of the compute seconds their stages were drawn
    (:func:`duration_factors` with ``inputs``' CV and seed; calibrate_solve on calibrator
    blocks only): what one worker would take per block with no waits and no I/O."""
    factors = duration_factors(n_blocks, len(inputs.stages), inputs.duration_cv, inputs.seed)
    calibrators = calibrator_blocks(n_blocks, inputs.calibrator_fraction)
    runs = np.array([[not s.calibrator_only or b in calibrators for s in inputs.stages]
                     for b in range(n_blocks)])
    walls = np.array([s.wall_s for s in inputs.stages])
    return float((factors * runs * walls).sum(axis=1).mean())


def steady_state(taken: list[float], done: list[float], n_workers: int
                 ) -> tuple[float, float] | None:
    """Blocks completed per second between the end of the first round (the
    ``n_workers``-th completion, ``t1``) and the start of the drain (the last block taken,
    ``t2``): completions in (t1, t2] / (t2 - t1), and t2 - t1 (seconds); None when that
    window holds no completion (fewer than about 3 blocks per worker). Times are any one clock's."""
    ends = sorted(done)
    if len(ends) < n_workers:
        return None
    t1, t2 = ends[n_workers - 1], max(taken)
    completed = sum(t1 < t <= t2 for t in ends)
    if t2 <= t1 or completed == 0:
        return None
    return completed / (t2 - t1), t2 - t1


class FifoServer:
    """A shared resource serving one request at a time in arrival order, in virtual time:
    :meth:`reserve` books ``cost_s`` after the requests already queued and returns when
    (``time.monotonic()``) this one is done. ``busy_s``: the service time booked;
    ``intervals``: each booking's (start, end)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0
        self.busy_s = 0.0
        self.intervals: list[tuple[float, float]] = []

    def reserve(self, cost_s: float) -> float:
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + cost_s
            self.busy_s += cost_s
            self.intervals.append((start, self._free_at))
            return self._free_at


def sleep_until(t: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``t``."""
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


#: The shared resources of the runs in progress, by name: the tasks run in this process
#: (in-process workers) and find them here.
_RESOURCES: dict[str, FifoServer] = {}
_RESOURCES_LOCK = threading.Lock()


def _resource(name: str) -> FifoServer:
    with _RESOURCES_LOCK:
        return _RESOURCES.setdefault(name, FifoServer())


def _task(compute_s: float, io_s: float, fs: str) -> None:
    """One sleeping task: ``compute_s``, then its share of the shared file system's time."""
    time.sleep(compute_s)
    if io_s > 0:
        sleep_until(_resource(fs).reserve(io_s))


#: Distributed's periodic housekeeping that real workers do in their own processes: in one
#: process, 64 workers' 20 ms ticks, 10 ms profile samples and 0.5 s system monitors share
#: the scheduler's event loop and swamp it (heartbeats time out past 32 workers on 2
#: cores). Slowed or off here; what the scheduler does per task is untouched.
IN_PROCESS_QUIET = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.worker-ttl": None,
}


@dataclasses.dataclass
class RunResult:
    """One simulated cluster: real-time rates, each resource's busy fraction and how long
    each stage took (against its ``wall_s``: the waits for threads, slots and locks)."""

    workers: int
    blocks: int
    time_factor: float
    makespan_s: float
    blocks_per_hour: float
    utilisation: dict[str, float]
    scheduler_cpu_s: float
    tasks: int
    process_cpu_s: float
    #: Mean real seconds per block from a stage's submission to its last task's end (over
    #: the blocks that run the stage).
    stage_seconds: dict[str, float]
    #: Blocks/hour (real time) over the steady part (:func:`steady_state`); None: no such
    #: part (too few blocks per worker).
    steady_blocks_per_hour: float | None = None
    #: The steady window, real seconds, and each resource's busy fraction within it.
    steady_window_s: float | None = None
    steady_utilisation: dict[str, float] | None = None
    calibrator_blocks: int = 0
    #: Mean real seconds a target waited before calibrate_apply (the solve gate).
    mean_solve_wait_s: float = 0.0


def _loop_thread_cpu(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


class SolveGate:
    """The targets' wait before calibrate_apply (:attr:`StageCost.waits_for_solve`), in real
    time: blocks taken whose ingest is not done, calibrators ingested whose solve is not."""

    def __init__(self, calibrators: frozenset[int], has_solve: bool) -> None:
        self._changed = threading.Condition()
        self._calibrators = calibrators if has_solve else frozenset()
        self._ingesting: set[int] = set()
        self._unsolved: set[int] = set()
        self.waited_s = 0.0

    def taken(self, block: int) -> None:
        with self._changed:
            self._ingesting.add(block)

    def ingested(self, block: int) -> None:
        with self._changed:
            self._ingesting.discard(block)
            if block in self._calibrators:
                self._unsolved.add(block)
            self._changed.notify_all()

    def solved(self, block: int) -> None:
        with self._changed:
            self._unsolved.discard(block)
            self._changed.notify_all()

    def wait(self, block: int) -> None:
        started = time.monotonic()
        with self._changed:
            self._changed.wait_for(lambda: not self._unsolved and not any(
                b < block for b in self._ingesting))
        self.waited_s += time.monotonic() - started


def busy_within(intervals: list[tuple[float, float]], t1: float, t2: float) -> float:
    """Seconds of ``intervals`` (start, end) inside [t1, t2]."""
    return sum(max(0.0, min(end, t2) - max(start, t1)) for start, end in intervals)


def simulate(inputs: ModelInputs, n_workers: int, n_blocks: int, time_factor: float,
             drivers: int | None = None) -> RunResult:
    """Run ``n_blocks`` through ``inputs.stages`` on ``n_workers`` simulated workers with
    ``drivers`` pipeline drivers (default: one per worker); see benchmarks/scaling_model.py.
    """
    import dask
    from distributed import Client, LocalCluster, wait

    run = f"run{next(_RUNS)}"
    f = time_factor
    redis, fs = _resource(f"{run}:redis"), f"{run}:fs"
    blocks = iter(range(n_blocks))
    blocks_lock = threading.Lock()
    casa_intervals: list[tuple[float, float]] = []
    stage_s = {stage.name: 0.0 for stage in inputs.stages}
    stage_runs = {stage.name: 0 for stage in inputs.stages}
    factors = duration_factors(n_blocks, len(inputs.stages), inputs.duration_cv, inputs.seed)
    calibrators = calibrator_blocks(n_blocks, inputs.calibrator_fraction)
    gate = SolveGate(calibrators, any(s.calibrator_only for s in inputs.stages))
    taken: list[float] = []
    done: list[float] = []
    loop_cpu_at: dict[str, float] = {}
    n_drivers = drivers or n_workers

    def next_block() -> int | None:
        with blocks_lock:
            block = next(blocks, None)
            if block is not None:
                gate.taken(block)
                taken.append(time.monotonic())
                if block == n_blocks - 1:  # the drain starts
                    loop_cpu_at["t2"] = _loop_thread_cpu(loop_id)
            return block

    def block_done() -> None:
        with blocks_lock:
            done.append(time.monotonic())
            if len(done) == n_workers:  # the first round ends
                loop_cpu_at["t1"] = _loop_thread_cpu(loop_id)

    with dask.config.set(IN_PROCESS_QUIET), LocalCluster(
            n_workers=n_workers, threads_per_worker=inputs.threads_per_worker,
            processes=False, resources={"CASA": 1}, memory_limit=0, dashboard_address=None,
            worker_dashboard_address=None) as cluster, Client(cluster) as client:
        loop_id = client.run_on_scheduler(threading.get_native_id)
        client.gather([client.submit(time.sleep, 0, key=f"warm-{w}", workers=[w])
                       for w in client.scheduler_info()["workers"]])  # before the clock
        loop_cpu0, process_cpu0 = _loop_thread_cpu(loop_id), time.process_time()
        tasks = itertools.count()

        def drive(driver: int) -> None:
            while (block := next_block()) is not None:
                for index, stage in enumerate(inputs.stages):
                    if stage.calibrator_only and block not in calibrators:
                        continue
                    if stage.waits_for_solve and block not in calibrators:
                        gate.wait(block)
                    done_at = redis.reserve(inputs.redis_stage_service_s * f)
                    sleep_until(max(done_at,
                                    time.monotonic() + inputs.redis_stage_latency_s * f))
                    # The stage's tasks share the worker's threads (one: an engine).
                    threads = 1 if stage.casa else min(inputs.threads_per_worker, stage.tasks)
                    wall_s = stage.wall_s * factors[block, index]
                    compute_s = wall_s * threads / stage.tasks * f
                    io_s = stage.io_bytes / inputs.fs_bytes_per_s / stage.tasks * f
                    submitted = time.monotonic()
                    if stage.lock:  # the pipeline process waits for its turn, not a worker
                        lock = _resource(
                            f"{run}:mosaic{int(block // inputs.mosaic_period_blocks)}")
                        held_s = wall_s * f
                        sleep_until(lock.reserve(held_s) - held_s)
                    futures = [client.submit(
                        _task, compute_s, io_s, fs, key=f"{stage.name}-{block}-{i}",
                        pure=False, resources={"CASA": 1} if stage.casa else None)
                        for i in range(stage.tasks)]
                    for _ in futures:
                        next(tasks)
                    wait(futures)
                    for future in futures:
                        future.result()
                    ended = time.monotonic()
                    stage_s[stage.name] += ended - submitted
                    stage_runs[stage.name] += 1
                    if stage.casa:
                        casa_intervals.append((ended - io_s - compute_s, ended - io_s))
                    if index == 0:
                        gate.ingested(block)
                    if stage.calibrator_only:
                        gate.solved(block)
                    time.sleep(inputs.pipeline_overhead_s * f)
                block_done()

        started = time.monotonic()
        with ThreadPoolExecutor(n_drivers) as pool:
            list(pool.map(drive, range(n_drivers)))
        makespan = time.monotonic() - started
        loop_cpu = _loop_thread_cpu(loop_id) - loop_cpu0
        process_cpu = time.process_time() - process_cpu0
    mosaics = [r for name, r in _RESOURCES.items() if name.startswith(f"{run}:mosaic")]
    fs_server = _resource(fs)

    def utilisation(t1: float, t2: float, loop_cpu_s: float) -> dict[str, float]:
        span = t2 - t1
        return {"casa_slots": busy_within(casa_intervals, t1, t2) / (n_workers * span),
                "redis": busy_within(redis.intervals, t1, t2) / span,
                "shared_fs": busy_within(fs_server.intervals, t1, t2) / span,
                "busiest_mosaic_lock": max((busy_within(r.intervals, t1, t2)
                                            for r in mosaics), default=0.0) / span,
                "scheduler_loop_cpu": loop_cpu_s / span}

    steady = steady_state(taken, done, n_workers)
    steady_util = None
    if steady is not None:
        t1, t2 = sorted(done)[n_workers - 1], max(taken)
        steady_util = utilisation(t1, t2, loop_cpu_at["t2"] - loop_cpu_at["t1"])
    with _RESOURCES_LOCK:
        for name in [n for n in _RESOURCES if n.startswith(f"{run}:")]:
            del _RESOURCES[name]
    targets = n_blocks - len(calibrators)
    return RunResult(
        workers=n_workers, blocks=n_blocks, time_factor=f, makespan_s=makespan,
        blocks_per_hour=n_blocks / (makespan / f) * 3600,
        utilisation=utilisation(started, started + makespan, loop_cpu),
        scheduler_cpu_s=loop_cpu, tasks=next(tasks), process_cpu_s=process_cpu,
        stage_seconds={k: v / f / stage_runs[k] for k, v in stage_s.items()
                       if stage_runs[k]},
        steady_blocks_per_hour=None if steady is None else steady[0] * f * 3600,
        steady_window_s=None if steady is None else steady[1] / f,
        steady_utilisation=steady_util, calibrator_blocks=len(calibrators),
        mean_solve_wait_s=gate.waited_s / f / max(targets, 1))


_RUNS = itertools.count()
