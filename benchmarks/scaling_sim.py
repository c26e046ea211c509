"""The simulation engine of benchmarks/scaling_model.py (see its docstring): a real
``distributed`` scheduler with in-process workers running sleeping tasks, pipeline drivers,
and shared resources served first come, first served in virtual time. Its own module so
that the tasks are pickled by reference (the resources live in this module's globals).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


class FifoServer:
    """A shared resource serving one request at a time in arrival order, in virtual time:
    :meth:`reserve` books ``cost_s`` after the requests already queued and returns when
    (``time.monotonic()``) this one is done. ``busy_s``: the service time booked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0
        self.busy_s = 0.0

    def reserve(self, cost_s: float) -> float:
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + cost_s
            self.busy_s += cost_s
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
    #: Mean real seconds per block from a stage's submission to its last task's end.
    stage_seconds: dict[str, float]


def _loop_thread_cpu(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


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
    casa_busy = [0.0]
    stage_s = {stage.name: 0.0 for stage in inputs.stages}

    def next_block() -> int | None:
        with blocks_lock:
            return next(blocks, None)

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
                for stage in inputs.stages:
                    done = redis.reserve(inputs.redis_stage_service_s * f)
                    sleep_until(max(done, time.monotonic() + inputs.redis_stage_latency_s * f))
                    # The stage's tasks share the worker's threads (one: an engine).
                    threads = 1 if stage.casa else min(inputs.threads_per_worker, stage.tasks)
                    compute_s = stage.wall_s * threads / stage.tasks * f
                    io_s = stage.io_bytes / inputs.fs_bytes_per_s / stage.tasks * f
                    submitted = time.monotonic()
                    if stage.lock:  # the pipeline process waits for its turn, not a worker
                        lock = _resource(
                            f"{run}:mosaic{int(block // inputs.mosaic_period_blocks)}")
                        held_s = stage.wall_s * f
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
                    stage_s[stage.name] += time.monotonic() - submitted
                    if stage.casa:
                        casa_busy[0] += compute_s
                    time.sleep(inputs.pipeline_overhead_s * f)

        started = time.monotonic()
        n_drivers = drivers or n_workers
        with ThreadPoolExecutor(n_drivers) as pool:
            list(pool.map(drive, range(n_drivers)))
        makespan = time.monotonic() - started
        loop_cpu = _loop_thread_cpu(loop_id) - loop_cpu0
        process_cpu = time.process_time() - process_cpu0
    fs_busy = _resource(fs).busy_s
    mosaic_busy = max((r.busy_s for name, r in _RESOURCES.items()
                       if name.startswith(f"{run}:mosaic")), default=0.0)
    with _RESOURCES_LOCK:
        for name in [n for n in _RESOURCES if n.startswith(f"{run}:")]:
            del _RESOURCES[name]
    return RunResult(
        workers=n_workers, blocks=n_blocks, time_factor=f, makespan_s=makespan,
        blocks_per_hour=n_blocks / (makespan / f) * 3600,
        utilisation={"casa_slots": casa_busy[0] / (n_workers * makespan),
                     "redis": redis.busy_s / makespan, "shared_fs": fs_busy / makespan,
                     "busiest_mosaic_lock": mosaic_busy / makespan,
                     "scheduler_loop_cpu": loop_cpu / makespan},
        scheduler_cpu_s=loop_cpu, tasks=next(tasks), process_cpu_s=process_cpu,
        stage_seconds={k: v / f / n_blocks for k, v in stage_s.items()})


_RUNS = itertools.count()
