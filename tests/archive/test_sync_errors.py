"""Bad input to ``archive sync`` (both backends): products whose block store is gone or
corrupt are skipped with the file and the reason, logged, and left for the next sync; the
sync itself never fails on them and indexes nothing wrong."""

from __future__ import annotations

from pathlib import Path

from contimg_dask.archive.catalogue import sync_index
from contimg_dask.archive.index import ArchiveIndex
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import StateStore
from tests.helpers import make_config


def _record(state: StateStore, block: str, stage: str, kind: str, path: Path,
            inputs: list[Path]) -> None:
    state.enqueue(block, stage)
    lease = state.claim("sync-test", 60.0, [stage])
    state.complete(lease, StageResult(stage, block, (Product(kind, path),),
                                      Provenance(tuple(map(str, inputs)), "hash")))


def test_unreadable_products_are_skipped_with_the_reason(store: StateStore,
                                                         index: ArchiveIndex,
                                                         tmp_path: Path) -> None:
    gone = tmp_path / "gone.zarr"
    corrupt = tmp_path / "corrupt.zarr"
    corrupt.mkdir()
    (corrupt / "zarr.json").write_text("{not json")
    _record(store, "2026-01-01T00:00:00", "ingest", "block_store", gone, [])
    _record(store, "2026-01-01T00:05:09", "ingest", "block_store", corrupt, [])
    _record(store, "2026-01-01T00:05:09", "export", "ms", tmp_path / "x.ms", [corrupt])
    _record(store, "2026-01-01T00:10:18", "export", "ms", tmp_path / "y.ms",
            [tmp_path / "raw.hdf5"])
    report = sync_index(store, index, make_config(tmp_path))
    reasons = {s["product_id"]: s["reason"] for s in report["skipped"]}
    assert report["indexed"] == 0 and index.count() == 0
    assert str(gone) in reasons["2026-01-01T00:00:00/block_store"]
    assert "not a block store" in reasons["2026-01-01T00:00:00/block_store"]
    assert str(corrupt) in reasons["2026-01-01T00:05:09/block_store"]
    assert "cannot read" in reasons["2026-01-01T00:05:09/ms"]
    assert "no block store among the inputs" in reasons["2026-01-01T00:10:18/ms"]
