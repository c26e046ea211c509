"""The work loop's passes: a pass looks only at the blocks whose stages changed (whichever
process changed them), and a block's products are in the archive index once its last stage
is recorded, so ``contimg archive search`` finds them without ``contimg archive sync``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pybreaker
import pytest

from contimg_dask.cli.main import main
from contimg_dask.errors import ContimgError, StateUnavailableError
from contimg_dask.pipeline import Pipeline
from contimg_dask.stages.contract import BlockRef, Provenance, StageResult
from contimg_dask.state import open_state_store
from tests.helpers import make_config
from tests.integration.test_block_store import block_files
from tests.state.conftest import backend_overrides, redis_server  # noqa: F401 (fixture)

N_BLOCKS = 200


def _stamp(i: int) -> str:
    """Block ``i``'s id: 2026-03-01 from 00:00:00, one block every 309 s."""
    seconds = 309 * i
    return f"2026-03-{1 + seconds // 86400:02d}T{seconds % 86400 // 3600:02d}:" \
           f"{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _looked_at(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The blocks each later pass advances (a spy on the real method: it still runs)."""
    seen: list[str] = []
    real = pipeline._advance_block

    def spy(block_id: str) -> str:
        seen.append(block_id)
        return real(block_id)

    monkeypatch.setattr(pipeline, "_advance_block", spy)
    return seen


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_pass_looks_only_at_blocks_that_changed(backend: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  request: pytest.FixtureRequest) -> None:
    """200 sealed blocks, each with its first stage queued: the first pass looks at all of
    them, an idle pass at none; a stage that another process fails (a transient error:
    requeued) and a block sealed meanwhile are looked at in the next pass, and nothing
    else. Both state backends (the events are the backend's)."""
    config = make_config(tmp_path, **backend_overrides(backend, request))
    state = open_state_store(config)
    for i in range(N_BLOCKS):
        state.register_file(_stamp(i), str(tmp_path / f"{_stamp(i)}_sb00.hdf5"), 0)
        state.seal_block(_stamp(i), 1, 0.0)
    with Pipeline(config, state=state) as pipeline:
        seen = _looked_at(pipeline, monkeypatch)
        pipeline.advance()
        assert seen == [_stamp(i) for i in range(N_BLOCKS)]  # oldest first
        assert len(state.stages(status="pending")) == N_BLOCKS
        seen.clear()
        pipeline.advance()
        assert seen == []
        # Another process (its own connection) takes the oldest block's ingest and fails
        # it transiently; a new block is sealed.
        other = open_state_store(config)
        lease = other.claim("elsewhere", 30.0, ["ingest"])
        assert lease is not None and lease.block_id == _stamp(0)
        assert other.fail(lease, ContimgError("disk away", transient=True)) == "pending"
        other.register_file(_stamp(N_BLOCKS), str(tmp_path / "new_sb00.hdf5"), 0)
        other.seal_block(_stamp(N_BLOCKS), 1, 0.0)
        other.close()
        pipeline.advance()
        assert sorted(seen) == [_stamp(0), _stamp(N_BLOCKS)]
        assert state.stage_status(_stamp(N_BLOCKS), "ingest").status == "pending"
        seen.clear()
        pipeline.advance()
        assert seen == []
    state.close()


def test_a_pass_cut_short_by_an_outage_is_looked_at_again(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The state store goes away in the middle of a pass, after the pass read which blocks
    changed (here: another process finished the oldest block's ingest): the pass fails, and
    the next one still queues that block's next stage. (A pass that forgot them left a
    calibrator block pending for ever after a 30 s Redis outage, found by the streaming
    outage test.)"""
    config = make_config(tmp_path, **{"state.lease_s": 0.5,
                                      "pipeline.breaker.reset_timeout_s": 0.1})
    state = open_state_store(config)
    for i in range(3):
        state.register_file(_stamp(i), str(tmp_path / f"{_stamp(i)}_sb00.hdf5"), 0)
        state.seal_block(_stamp(i), 1, 0.0)
    with Pipeline(config, state=state) as pipeline:
        pipeline.advance()
        monkeypatch.setattr(pipeline, "kind", lambda block_id: "target")
        other = open_state_store(config)
        lease = other.claim("elsewhere", 30.0, ["ingest"])
        assert lease is not None and lease.block_id == _stamp(0)
        other.complete(lease, StageResult("ingest", lease.block_id, (), Provenance((), "h")))
        other.close()

        def unreachable(block_id: str) -> None:
            raise StateUnavailableError("Redis went away (simulated: a store call failing)")

        monkeypatch.setattr(state, "block", unreachable)
        with pytest.raises((StateUnavailableError, pybreaker.CircuitBreakerError)):
            pipeline.advance()
        monkeypatch.undo()
        monkeypatch.setattr(pipeline, "kind", lambda block_id: "target")
        time.sleep(0.2)  # the state breaker's reset time-out
        pipeline.advance()
        assert state.stage_status(_stamp(0), "flag").status == "pending"
    state.close()


def _search(root: Path, capsys: pytest.CaptureFixture) -> list[dict]:
    capsys.readouterr()
    assert main(["--env", "testing", "--set", f"paths.root={root}", "archive", "search",
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_products_are_searchable_once_the_block_is_done(small_blocks: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    recipe = [{"stage": "ingest"}, {"stage": "flag"}]
    config = make_config(tmp_path, **{"pipeline.recipes.target": recipe,
                                      "pipeline.recipes.calibrator": recipe})
    files, truth = block_files(small_blocks)
    block_id = files[0].name[:19]
    store = config.paths.resolved().stores / f"{block_id}.zarr"
    with Pipeline(config) as pipeline:
        pipeline.submit(BlockRef(block_id, store, tuple(files)))
        assert pipeline.work(max_stages=1) == 1  # ingest: the block is not done yet
        assert _search(tmp_path, capsys) == []
        assert pipeline.process_block(BlockRef(block_id, store, tuple(files))
                                      ).outcome == "done"
    found = _search(tmp_path, capsys)
    assert [(e["kind"], e["block_id"], e["path"]) for e in found] == [
        ("block_store", block_id, str(store))]
    # Its position is the block's rephased centre: the true phase centre at mid-block.
    ra, dec = (np.degrees(np.mean(truth[f"phase_centre_icrs_{c}_rad"][11:13]))
               for c in ("ra", "dec"))
    assert abs(found[0]["ra_deg"] - ra) < 1e-4 and abs(found[0]["dec_deg"] - dec) < 1e-4
