"""A block's kind (calibrator transit or target) is decided once: the work loop's looks at it
(advance passes, steps, the target's wait for a solve on its strip) read its block store
once, and after the first look no state-store query either. Real simulated blocks (3C147
transits the first, the second is a target of its strip), real block stores and a real
SQLite state store; the opener is wrapped to count, not replaced."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store import block_view
from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.recipes import CALIBRATOR, TARGET
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages.contract import Provenance, StageResult
from contimg_dask.stages.layout import block_slug
from contimg_dask.state import open_state_store
from tests.helpers import make_config

LOOKS = 5


def test_a_blocks_kind_reads_its_store_once(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(tmp_path)
    summaries = simulate_blocks(config, tmp_path / "incoming", SimulationOptions(
        preset="small", n_blocks=2, seed=11, transit="3C147", random_sources=False,
        rfi=False))
    blocks = [s["block_id"] for s in summaries]
    state = open_state_store(config)
    for summary in summaries:  # ingested and recorded as done, as the ingest stage does
        block_id, files = summary["block_id"], [Path(f) for f in summary["files"]]
        ingest_block(files, config.paths.stores / f"{block_slug(block_id)}.zarr", config)
        for sb, path in enumerate(files):
            state.register_file(block_id, str(path), sb)
        state.seal_block(block_id, len(files), 0.0)
        state.enqueue(block_id, "ingest")
        lease = state.claim("ingester", 60.0)
        state.complete(lease, StageResult("ingest", block_id, (), Provenance((), "h")))

    opened: Counter[str] = Counter()
    open_view = block_view.open_block_view

    def counting(store: Path, *args: object, **kwargs: object) -> block_view.BlockView:
        opened[Path(store).name] += 1  # the real open, counted per store
        return open_view(store, *args, **kwargs)

    monkeypatch.setattr(block_view, "open_block_view", counting)
    with Pipeline(config, state=state) as pipeline:
        assert [pipeline.kind(b) for b in blocks] == [CALIBRATOR, TARGET]
        asked: list[str] = []  # kind() asks whether ingest is done; only the first look
        real_status = state.stage_status
        monkeypatch.setattr(state, "stage_status", lambda block_id, stage: (
            asked.append(block_id) if stage == "ingest" else None,
            real_status(block_id, stage))[1])
        for _ in range(LOOKS):
            pipeline.advance()
            for block_id in blocks:
                assert pipeline.kind(block_id) == (CALIBRATOR if block_id == blocks[0]
                                                   else TARGET)
                pipeline.steps(block_id)
            # the target's wait compares its strip with the calibrator's: both pointings
            store = pipeline.block_ref(blocks[1]).store
            assert pipeline.calibration.solve_in_flight(blocks[1], store) == blocks[0]
        assert asked == []
    assert opened == {f"{block_slug(b)}.zarr": 1 for b in blocks}
    state.close()
