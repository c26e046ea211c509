"""A restart reconciles the products on disk with the state store: leases of dead workers
given back, temporaries of dead writers removed, a product gone missing made again, an
orphan (written, never recorded) removed and made again. Real ingest on small blocks, a
real SQLite store, a dead process's pid."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline import Pipeline
from contimg_dask.stages import BlockRef
from contimg_dask.stages.layout import block_slug
from contimg_dask.stages.registry import get_stage
from tests.helpers import make_config

RECIPE = [{"stage": "ingest"}]


def _blocks(small_blocks: Path, config) -> list[BlockRef]:
    stores = config.paths.resolved().stores
    return [BlockRef(b.block_id, stores / f"{block_slug(b.block_id)}.zarr",
                     tuple(Path(f.path) for _, f in sorted(b.files.items())))
            for b in discover_blocks(small_blocks, config.blocks).blocks]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_restart_reconciles_products_and_leases(small_blocks: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"pipeline.recipes.target": RECIPE,
                                      "pipeline.recipes.calibrator": RECIPE})
    stores = config.paths.resolved().stores
    a, b = _blocks(small_blocks, config)
    assert len(a.files) == len(b.files) == 16

    with Pipeline(config) as first:
        assert asyncio.run(first.aprocess_block(a)).outcome == "done"
        status = first.state.stage_status(a.block_id, "ingest")
        token_a = status.token
        # Its monitor points: the stage's time as the stage measured it, the block's latency.
        seconds = first.state.metric_series("stage_seconds.ingest", "raw")
        assert [p.mean for p in seconds] == [pytest.approx(status.result["seconds"])]
        latency = first.state.metric_series("block_latency_s", "raw")
        record = first.state.block(a.block_id)
        assert [p.mean for p in latency] == [pytest.approx(status.updated_at
                                                           - record.first_seen)]
        with Pipeline(config) as other:  # another process sees the block done: no record
            other.advance()
            assert other.outcome(a.block_id).outcome == "done"
        assert len(first.state.metric_series("block_latency_s", "raw")) == 1
        # Block b: its store written by a run that died before recording it (an orphan),
        # and its stage leased to a worker of this host that has died since.
        get_stage("ingest").run(b, config)
        first.submit(b)
        dead = f"{socket.gethostname()}:{_dead_pid()}"
        lease = first.state.claim(dead, 3600.0)
        assert (lease.block_id, lease.stage) == (b.block_id, "ingest")
    orphan_inode = b.store.stat().st_ino
    # Block a: its recorded store lost, and a temporary of a dead writer beside it.
    leftover = stores / f"{a.store.name}.tmp.{_dead_pid()}@{socket.gethostname()}.0123456789ab"
    leftover.mkdir()
    (leftover / "zarr.json").write_text("{}")
    a_store_inode = a.store.stat().st_ino
    subprocess.run(["rm", "-rf", str(a.store)], check=True)

    with Pipeline(config) as second:
        done = second.reconcile()
        assert done.released == [(b.block_id, "ingest")]
        assert done.leftovers == [str(leftover)] and not leftover.exists()
        assert done.rerun == [(a.block_id, "ingest")]
        assert done.orphans == [str(b.store)]
        second.work()
        for block in (a, b):
            assert second.outcome(block.block_id).outcome == "done"
            assert block.store.is_dir()
        status_a = second.state.stage_status(a.block_id, "ingest")
        assert status_a.token > token_a and status_a.attempts == 1
        failures = {(f.block_id, f.error) for f in second.state.failures()}
        assert (a.block_id, "ProductMissing") in failures
        assert (b.block_id, "WorkerDiedError") in failures
        products_b = second.state.products(b.block_id)
        assert [p.path for p in products_b] == [str(b.store)]  # recorded once
    # Both stores were made again by the second run, not left over from before.
    assert a.store.stat().st_ino != a_store_inode
    assert b.store.stat().st_ino != orphan_inode


def test_a_block_submitted_again_reruns_stages_whose_configuration_changed(
        small_blocks: Path, tmp_path: Path) -> None:
    """Products are keyed by (block, stage, configuration): submitting a block again with
    a different time chunking re-ingests it, and the store has the new chunks; a change
    of how the pipeline runs (log level) re-runs nothing."""
    from contimg_dask.io.store.block_view import open_block_view

    base = {"pipeline.recipes.target": RECIPE, "pipeline.recipes.calibrator": RECIPE}
    config = make_config(tmp_path, **base)
    a, _ = _blocks(small_blocks, config)

    def time_chunk() -> int:
        return open_block_view(a.store).dataset.VISIBILITY.data.chunks[0][0]

    with Pipeline(config) as first:
        first.process_block(a)
        token = first.state.stage_status(a.block_id, "ingest").token
    assert time_chunk() == config.store.time_chunk_integrations == 6
    with Pipeline(make_config(tmp_path, **base, **{"logging.level": "ERROR"})) as same:
        assert same.submit(a) is False
        assert same.state.stage_status(a.block_id, "ingest").token == token
    with Pipeline(make_config(tmp_path, **base,
                              **{"store.time_chunk_integrations": 12})) as changed:
        assert changed.submit(a) is True
        changed.work()
        status = changed.state.stage_status(a.block_id, "ingest")
        assert status.status == "done" and status.token > token
    assert time_chunk() == 12


def test_a_redo_runs_the_later_stages_in_order(small_blocks: Path, tmp_path: Path) -> None:
    """A block done through ingest -> flag, submitted again with a new time chunking: only
    ingest is queued (a second worker asking for flag gets nothing while ingest has not run
    again: before, both were queued at once and two workers could flag the old store while
    it was being replaced); once ingest is done again, flag is queued, and the block is not
    done until flag has run on the new store."""
    recipe = [{"stage": "ingest"}, {"stage": "flag"}]
    base = {"pipeline.recipes.target": recipe, "pipeline.recipes.calibrator": recipe}
    a, _ = _blocks(small_blocks, make_config(tmp_path, **base))
    with Pipeline(make_config(tmp_path, **base)) as first:
        assert first.process_block(a).outcome == "done"
        before = {s.stage: s.token for s in first.state.stages(a.block_id)}
    config = make_config(tmp_path, **base, **{"store.time_chunk_integrations": 12})
    with Pipeline(config) as changed:
        assert changed.submit(a) is True
        changed.advance()
        assert [(s.stage, s.status) for s in changed.state.stages(status="pending")] == [
            ("ingest", "pending")]
        assert changed.state.claim("other-worker", 60.0, ["flag"]) is None
        assert changed.outcome(a.block_id).outcome == "pending"
        lease = changed.state.claim(changed.worker, 60.0)
        assert (lease.block_id, lease.stage) == (a.block_id, "ingest")
        assert changed.run_lease(lease) == "done"
        assert changed.outcome(a.block_id).outcome == "pending"  # flag is outdated
        changed.advance()
        assert [s.stage for s in changed.state.stages(status="pending")] == ["flag"]
        changed.work()
        assert changed.outcome(a.block_id).outcome == "done"
        after = {s.stage: s.token for s in changed.state.stages(a.block_id)}
    assert before["ingest"] < before["flag"] < after["ingest"] < after["flag"]
