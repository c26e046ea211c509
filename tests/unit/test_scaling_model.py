"""The scaling simulation's accounting (benchmarks/scaling_sim.py) on cases whose makespan is
known in closed form: sleeping tasks of known durations on a real in-process ``distributed``
cluster with shared resources served first come, first served. If the simulation lost a
resource's queueing, the CASA slot per worker, the mosaic lock or the time factor's
conversion, these makespans would be off by far more than the tolerance.

Tolerance: the analytic makespan plus 20 % + 0.1 s (each stage adds a submit and a wait on
the real scheduler: a few ms here, tens of ms on a loaded machine), and at most 0.03 s below
it (sleeps never end early)."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.scaling_sim import ModelInputs, StageCost, simulate

#: Every duration of the cases below (and their makespans) times this: long enough that a
#: loaded machine's hiccups (tens of ms) stay inside the tolerance.
SCALE = 2.0


def _inputs(*stages: StageCost, redis_s: float = 0.0, threads: int = 1,
            fs_bytes_per_s: float = 1e9) -> ModelInputs:
    stages = tuple(dataclasses.replace(s, wall_s=s.wall_s * SCALE, io_bytes=s.io_bytes * SCALE)
                   for s in stages)
    return ModelInputs(stages=stages, redis_stage_service_s=redis_s * SCALE,
                       redis_stage_latency_s=0.0, pipeline_overhead_s=0.0,
                       fs_bytes_per_s=fs_bytes_per_s, threads_per_worker=threads)


def _assert_makespan(real_makespan_s: float, blocks: int, blocks_per_hour: float) -> None:
    """``blocks_per_hour`` (real time) against ``blocks`` over the analytic makespan."""
    expected = blocks / real_makespan_s * 3600
    measured_makespan = blocks / blocks_per_hour * 3600
    assert real_makespan_s - 0.03 <= measured_makespan <= real_makespan_s * 1.2 + 0.1, (
        f"makespan {measured_makespan:.3f} s, analytic {real_makespan_s:.3f} s "
        f"({blocks_per_hour:.0f} vs {expected:.0f} blocks/h)")


STAGE = StageCost("work", 0.2, "test", tasks=1)


@pytest.mark.parametrize(("case", "inputs", "workers", "drivers", "blocks", "factor",
                          "makespan_s"), [
    # One worker, one driver: blocks one after the other, each the Redis call then the
    # task: k (r + d).
    ("serial", _inputs(STAGE, redis_s=0.1), 1, None, 3, 1.0, 3 * (0.1 + 0.2)),
    # Four drivers on one Redis (4 r > r + d: Redis saturates): it serves without a gap,
    # k r, and the last block's task follows: k r + d. Twice the durations at f = 0.5: the
    # same simulated times, twice the real ones.
    ("redis_bound", _inputs(dataclasses.replace(STAGE, wall_s=0.4), redis_s=0.2), 4, None,
     8, 0.5, 8 * 0.2 + 0.4),
    # Two drivers on one worker with two threads: their engine tasks take its one CASA slot
    # in turn (2 d), where the threads alone would let them overlap (d).
    ("casa_slot", _inputs(StageCost("image", 0.3, "test", tasks=1, casa=True), threads=2),
     1, 2, 2, 1.0, 2 * 0.3),
    # One single-task stage on a worker of two threads: it takes its wall time (a task
    # uses one thread), and then one of 25 tasks: 25 tasks of 2 d / 25 on two threads, d.
    ("one_task_two_threads", _inputs(StageCost("mosaic", 0.3, "test", tasks=1),
                                     StageCost("flag", 0.3, "test"), threads=2),
     1, None, 1, 1.0, 0.3 + 0.3),
    # Four blocks of one mosaic period on four workers: their adds queue on the lock (4 d).
    ("mosaic_lock", _inputs(StageCost("mosaic", 0.15, "test", tasks=1, lock="mosaic")),
     4, None, 4, 1.0, 4 * 0.15),
    # The shared file system: four blocks of 0.1 GB on 1 GB/s after a 0.1 s compute: the
    # transfers queue, 0.1 + 4 x 0.1 s.
    ("shared_fs", _inputs(StageCost("ingest", 0.1, "test", tasks=1, io_bytes=1e8)),
     4, None, 4, 1.0, 0.1 + 4 * 0.1),
])
def test_simulated_makespan_matches_the_analytic_one(
        case: str, inputs: ModelInputs, workers: int, drivers: int | None, blocks: int,
        factor: float, makespan_s: float) -> None:
    result = simulate(inputs, workers, blocks, factor, drivers=drivers)
    _assert_makespan(makespan_s * SCALE, blocks, result.blocks_per_hour)
    assert result.tasks == blocks * sum(stage.tasks for stage in inputs.stages)
