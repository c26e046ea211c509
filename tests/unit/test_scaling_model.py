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

import numpy as np
import pytest

from benchmarks.scaling_sim import (
    ModelInputs,
    StageCost,
    drawn_block_seconds,
    duration_factors,
    simulate,
    steady_state,
)

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


def test_duration_factors_reproduce_and_have_the_stated_spread() -> None:
    """Lognormal multipliers of mean 1 and the asked coefficient of variation: the same seed
    gives the same draws, another seed others; over 200,000 draws the sample mean is 1 and
    the sample CV 0.15 within 1 % (their standard errors are ~0.03 % and ~0.03 points)."""
    first = duration_factors(50_000, 4, 0.15, seed=7)
    np.testing.assert_array_equal(first, duration_factors(50_000, 4, 0.15, seed=7))
    assert not np.array_equal(first, duration_factors(50_000, 4, 0.15, seed=8))
    assert abs(first.mean() - 1) < 0.01
    assert abs(first.std() / first.mean() - 0.15) < 0.0015
    np.testing.assert_array_equal(duration_factors(3, 2, 0.0, seed=7), np.ones((3, 2)))


def test_steady_state_throughput_is_workers_over_duration() -> None:
    """Twelve blocks of one 0.3 s stage (x SCALE) on two one-thread workers, simulated at
    time factor 0.5 (real rates: simulated ones x 0.5): after the first round and before
    the drain the cluster completes n / d blocks per second, the analytic rate, over a
    window of 4 rounds (the 3rd to 10th of 12 blocks done, rounds 2 to 5 of 6). Tolerance:
    15 % below (each block adds a submit and a wait on the real scheduler: tens of ms on a
    loaded machine), 3 % above (sleeps never end early)."""
    d = 0.3 * SCALE
    result = simulate(_inputs(StageCost("work", 0.3, "test", tasks=1)), 2, 12, 0.5)
    analytic = 2 / d * 3600
    assert result.steady_blocks_per_hour is not None
    assert analytic * 0.85 <= result.steady_blocks_per_hour <= analytic * 1.03, (
        result.steady_blocks_per_hour, analytic)
    assert result.steady_window_s == pytest.approx(4 * d, rel=0.15)


def test_steady_state_of_jittered_blocks_is_workers_over_the_mean_duration() -> None:
    """The same with durations of CV 0.3 (seed 3): the steady rate is n over the mean
    drawn duration of the blocks in the window, n / mean(d x factor), within 15 %; a second
    run with the same seed draws the same durations (same rate within the same 15 %)."""
    d, blocks = 0.15 * SCALE, 16
    inputs = dataclasses.replace(_inputs(StageCost("work", 0.15, "test", tasks=1)),
                                 duration_cv=0.3, seed=3)
    mean_d = d * duration_factors(blocks, 1, 0.3, seed=3).mean()
    analytic = 2 / mean_d * 3600
    rates = [simulate(inputs, 2, blocks, 1.0).steady_blocks_per_hour for _ in range(2)]
    for rate in rates:
        assert rate is not None and analytic * 0.85 <= rate <= analytic * 1.15, (
            rates, analytic)


def test_targets_wait_for_the_calibrator_solve() -> None:
    """Block 0 a calibrator (fraction 0.5: blocks 0 and 2 of 2 -> block 0), block 1 a
    target, on two workers: the target's ingest ends with the calibrator's (0.1 s), then it
    waits for the calibrator's solve (0.4 s) before its apply, as the orchestrator does:
    mean wait 0.4 s (x SCALE), makespan 0.1 + 0.4 + 0.05 s for both; without the wait it
    would finish at 0.15 s. Tolerances as above."""
    stages = (StageCost("ingest", 0.1, "test", tasks=1),
              StageCost("calibrate_solve", 0.4, "test", tasks=1, calibrator_only=True),
              StageCost("calibrate_apply", 0.05, "test", tasks=1, waits_for_solve=True))
    inputs = dataclasses.replace(_inputs(*stages), calibrator_fraction=0.5)
    result = simulate(inputs, 2, 2, 1.0)
    assert result.calibrator_blocks == 1
    assert 0.4 * SCALE * 0.85 <= result.mean_solve_wait_s <= 0.4 * SCALE * 1.1 + 0.1
    _assert_makespan(0.55 * SCALE, 2, result.blocks_per_hour)
    assert result.tasks == 5  # ingest, solve, apply; ingest, apply


def test_steady_state_window_by_hand() -> None:
    """Two workers, blocks taken at 0, 0, 1, 2, 3 and done at 1, 2, 3, 4, 5 (s): the first
    round ends at the 2nd completion (2), the drain starts at the last take (3); one block
    done in (2, 3]: 1 block/s over 1 s. One worker, two blocks (taken 0 and 1, done 1 and
    2): the window (1, 1] holds no completion, so no steady rate."""
    assert steady_state([0, 0, 1, 2, 3], [1, 2, 3, 4, 5], 2) == (1.0, 1.0)
    assert steady_state([0, 1], [1, 2], 1) is None


def test_drawn_block_seconds() -> None:
    """Nothing drawn (CV 0): the stages' sum, the solve on 1 block in 4 (fraction 0.25:
    blocks 0 and 4 of 8 -> 2 of 8): 1 + 2 x 4 / 8 = 2 s. Drawn (CV 0.15, seed 1): the sum
    of each block's factors x seconds, computed here from duration_factors directly."""
    stages = (StageCost("ingest", 1.0, "test"),
              StageCost("calibrate_solve", 4.0, "test", calibrator_only=True))
    inputs = dataclasses.replace(_inputs(*stages), calibrator_fraction=0.25)
    assert drawn_block_seconds(inputs, 8) == pytest.approx(SCALE * 2.0)
    drawn = dataclasses.replace(inputs, duration_cv=0.15, seed=1)
    factors = duration_factors(8, 2, 0.15, seed=1)
    expected = SCALE * (factors[:, 0].sum() + 4.0 * (factors[0, 1] + factors[4, 1])) / 8
    assert drawn_block_seconds(drawn, 8) == pytest.approx(expected)
