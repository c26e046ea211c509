"""`run_directory` (what `contimg run` does) in observation order, with a time range, and
its progress display (rich) fed from the work loop."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from contimg_dask.cli.pipeline import _ProgressDisplay
from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.batch import run_directory
from tests.helpers import make_config

RECIPE = [{"stage": "ingest"}]


def test_blocks_in_observation_order_with_progress_and_range(small_blocks: Path,
                                                             tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"pipeline.recipes.target": RECIPE,
                                      "pipeline.recipes.calibrator": RECIPE})
    updates: list[tuple[int, int, str | None]] = []
    with Pipeline(config) as pipeline, _ProgressDisplay(enabled=True) as display:
        def progress(done: int, total: int, stage: str | None) -> None:
            updates.append((done, total, stage))
            display.update(done, total, stage)

        outcomes = run_directory(pipeline, small_blocks, progress=progress)
        task = display.progress.tasks[0]
    ids = [o.block_id for o in outcomes]
    assert ids == sorted(ids) and len(ids) == 2
    assert all(o.outcome == "done" for o in outcomes)
    # Observation order: the earlier block's ingest ran first.
    stages = [s for _, _, s in updates if s]
    assert stages[0] == f"ingest {ids[0]}" and f"ingest {ids[1]}" in stages
    done = [d for d, _, _ in updates]
    assert done == sorted(done) and updates[-1] == (2, 2, None)
    assert {t for _, t, _ in updates} == {2}
    assert (task.completed, task.total) == (2, 2) and "blocks/h" in task.fields["rate"]

    # --from: only the second block; it is done already, so nothing runs again.
    second = dt.datetime.fromisoformat(ids[1])
    with Pipeline(config) as pipeline:
        again = run_directory(pipeline, small_blocks, start=second)
        assert [o.block_id for o in again] == [ids[1]] and again[0].outcome == "done"
        assert pipeline.state.stage_status(ids[1], "ingest").attempts == 1
    with Pipeline(config) as pipeline:
        assert run_directory(pipeline, small_blocks, end=second - dt.timedelta(seconds=1)
                             )[0].block_id == ids[0]
