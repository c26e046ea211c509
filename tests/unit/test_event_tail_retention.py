"""The event tail keeps the per-antenna events of the blocks the heatmaps show and no more
(the dashboard: ``recent_blocks``; the alert evaluator, which shows none: none), while the
other histories it keeps are unaffected."""

from __future__ import annotations

from pathlib import Path

from contimg_dask.monitoring.event_tail import EventTail
from contimg_dask.state import open_state_store
from tests.helpers import make_config


def test_per_antenna_events_kept_for_the_shown_blocks_only(tmp_path: Path) -> None:
    store = open_state_store(make_config(tmp_path))
    blocks = [f"2026-12-01T{i // 12:02d}:{5 * (i % 12):02d}:00" for i in range(60)]
    for i, block_id in enumerate(blocks):
        store.emit("antenna_flags", {"block_id": block_id, "antennas": [1, 2, 3],
                                     "flagged_fraction": [0.01 * i, 0.0, 1.0]})
    store.emit("candidate", {"name": "J0001+4000", "kind": "variable", "metrics": {}})
    dashboard, evaluator = EventTail(store, 5000, antenna_blocks=50), EventTail(store, 5000)
    assert dashboard.update() == evaluator.update() == 61
    kept = dashboard.antenna["antenna_flags"]
    assert list(kept) == blocks[10:]  # the 50 newest, oldest first
    assert kept[blocks[-1]]["flagged_fraction"] == [0.59, 0.0, 1.0]
    assert evaluator.antenna["antenna_flags"] == {}
    assert [c["name"] for c in evaluator.candidates] == ["J0001+4000"]
    store.close()
