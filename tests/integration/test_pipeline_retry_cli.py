"""`contimg failures` and `contimg retry` (real processes) on a SQLite state store holding
dead-lettered stages: one permanent (a block no solutions apply to), one transient (CASA
out of attempts)."""

from __future__ import annotations

import json
from pathlib import Path

from contimg_dask.errors import CalibrationError, CasaError
from contimg_dask.state import open_state_store
from tests.helpers import make_config
from tests.integration.test_cli import contimg

A, B = "2026-03-01T12:00:00", "2026-03-01T12:05:09"


def _fail(store, block_id: str, stage: str, exc: Exception) -> str:
    try:
        raise exc
    except Exception as caught:
        return store.fail(store.claim("w", 60, [stage]), caught)


def test_failures_summary_and_retry(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"state.max_attempts": 1})
    store = open_state_store(config)
    store.enqueue(A, "calibrate_apply")
    store.enqueue(B, "image")
    assert _fail(store, A, "calibrate_apply", CalibrationError(
        "no solutions apply to this block", file="/s/a.zarr")) == "failed"
    assert _fail(store, B, "image", CasaError("tclean timed out after 600 s",
                                              file="/p/b.ms")) == "failed"
    store.close()
    sets = ["--set", f"paths.root={tmp_path}"]

    summary = json.loads(contimg(*sets, "failures", "--json", cwd=tmp_path).stdout)
    assert summary["by_stage"] == {"calibrate_apply": 1, "image": 1}
    assert summary["by_cause"] == {"CalibrationError (permanent)": 1,
                                   "CasaError (transient)": 1}
    assert summary["by_file"] == {"/s/a.zarr": ["no solutions apply to this block"],
                                  "/p/b.ms": ["tclean timed out after 600 s"]}
    assert [(d["block_id"], d["stage"], d["transient"]) for d in summary["dead_letters"]] == [
        (A, "calibrate_apply", False), (B, "image", True)]

    transient = contimg(*sets, "retry", "--all-transient", cwd=tmp_path)
    assert transient.returncode == 0 and f"requeued {B} image" in transient.stdout
    assert A not in transient.stdout
    by_block = contimg(*sets, "retry", A, cwd=tmp_path)
    assert f"requeued {A} calibrate_apply" in by_block.stdout
    neither = contimg(*sets, "retry", cwd=tmp_path)
    assert neither.returncode == 2 and "BLOCK or --all-transient" in neither.stderr
    store = open_state_store(config)
    try:
        assert {(s.block_id, s.stage): s.status for s in store.stages()} == {
            (A, "calibrate_apply"): "pending", (B, "image"): "pending"}
    finally:
        store.close()
