"""A target block waits for an earlier block not yet ingested (it may be the calibrator
transit of its strip): the case the kill trials of ``contimg watch`` found, where the
calibrator's ingest lease was held by a killed process while the target went on, applied
no solutions and was dead-lettered. Real SQLite state store; the blocks exist only there
(no block store is read: the check uses block ids and stage statuses)."""

from __future__ import annotations

from pathlib import Path

from contimg_dask.errors import InputError
from contimg_dask.pipeline.calibration import INGEST, CalibrationWorkflow
from contimg_dask.state import open_state_store
from tests.helpers import make_config

CALIBRATOR, TARGET, LATER, MONTH_BEFORE = (
    "2026-03-01T12:00:00", "2026-03-01T12:05:09", "2026-03-01T12:10:18",
    "2026-01-20T12:00:00")


def test_target_waits_for_an_earlier_block_not_yet_ingested(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = open_state_store(config)
    for block in (MONTH_BEFORE, CALIBRATOR, TARGET, LATER):
        store.register_file(block, f"/incoming/{block}_sb00.hdf5", 0)
        store.seal_block(block, 1, 0.0)
    workflow = CalibrationWorkflow(config, store)
    # Nothing ingested yet: the target waits for the earlier block of the validity window
    # (not the one 40 days before, beyond calibration.validity_days = 30, nor a later one).
    assert workflow.unclassified_before(TARGET) == CALIBRATOR
    assert workflow.unclassified_before(CALIBRATOR) is None
    store.enqueue(CALIBRATOR, INGEST)
    assert workflow.unclassified_before(TARGET) == CALIBRATOR  # pending: still waits
    lease = store.claim("dead-worker", 30.0)
    assert (lease.block_id, lease.stage) == (CALIBRATOR, INGEST)
    assert workflow.unclassified_before(TARGET) == CALIBRATOR  # running: still waits
    store.fail(lease, InputError("truncated file", file="/incoming/x_sb00.hdf5"))
    # Its ingest failed for good: it will never be a calibrator; no wait.
    assert workflow.unclassified_before(TARGET) is None
    store.close()
