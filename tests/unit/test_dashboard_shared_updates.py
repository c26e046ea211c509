"""The dashboard's cost per session and per scrape stays flat: a snapshot's page data is
prepared once for every session, a session whose snapshot did not change sends nothing to
its browser (one that changed sends only what changed, with the new values), and
``/metrics`` is rendered by prometheus_client once per snapshot, not once per request, while
the snapshot's age still grows from scrape to scrape."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource, Div

from contimg_dask.monitoring import page_data
from contimg_dask.monitoring.health import GREEN, RED, Check
from contimg_dask.monitoring.page import DashboardPage
from contimg_dask.monitoring.page_data import HEALTH_TEXT_EVERY_S, PageDataCache
from contimg_dask.monitoring.snapshot import Snapshot
from tests.helpers import make_config

NOW = 1.8e9


def snapshot(at: float = NOW, noise_jy: float = 0.002) -> Snapshot:
    """A snapshot with something in every shared view: two blocks, a latency and a noise
    series, a heatmap of three antennas, a candidate with a light curve."""
    stages = {"ingest": {"status": "done", "attempts": 1, "seconds": 12.0,
                         "finished_at": NOW - 290.0, "updated_at": NOW - 290.0, "figures": {},
                         "error": None, "transient": None}}
    blocks = [{"block_id": f"2026-12-01T00:0{i}:00", "status": "sealed", "n_files": 16,
               "first_seen": NOW - 600.0 + 300.0 * i, "stages": stages, "outcome": "done"}
              for i in range(2)]
    return Snapshot(
        at=at, health=[Check("state", GREEN, "sqlite")], blocks=blocks,
        series={"block_latency_s": ([NOW - 300.0, NOW], [250.0, 260.0]),
                "image_noise_jy": ([NOW - 300.0, NOW], [0.002, noise_jy])},
        flag_heatmap=[("2026-12-01T00:00:00", str(a), 0.1 * a) for a in (1, 2, 3)],
        candidates=[{"name": "J0001+4000", "kind": "variable", "metrics": {}, "at": NOW}],
        light_curves={"J0001+4000": {"mjd": [60640.0, 60640.1], "flux_jy": [0.01, 0.02],
                                     "err_jy": [0.001, 0.001],
                                     "upper_limit_jy": [math.nan, math.nan]}})


class Session:
    """One page session's document, counting the changes it would send to its browser."""

    def __init__(self, cache: PageDataCache) -> None:
        self.document = Document()
        self.page = DashboardPage(make_config(Path("/nonexistent")), cache, {})
        self.page.refresh()
        self.document.add_root(self.page.layout)
        self.changes: list[Any] = []
        self.document.on_change(self.changes.append)

    def changed_models(self) -> list[tuple[type, str]]:
        return [(type(e.model), e.attr) for e in self.changes]


def test_an_unchanged_snapshot_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = []
    prepare = page_data.prepare_page_data
    monkeypatch.setattr(page_data, "prepare_page_data",
                        lambda *a: prepared.append(a) or prepare(*a))
    latest = {"snap": snapshot()}
    cache = PageDataCache(lambda: latest["snap"])
    sessions = [Session(cache) for _ in range(3)]
    assert len(prepared) == 1  # three sessions opened on one snapshot: prepared once

    latest["snap"] = copy.deepcopy(latest["snap"])  # a new snapshot, equal in every way
    for session in sessions:
        session.page.refresh()
    assert len(prepared) == 2
    assert [s.changes for s in sessions] == [[], [], []]

    latest["snap"] = snapshot(at=NOW + 1.0)  # read a second later: only the read time moved
    for session in sessions:
        session.page.refresh()
    assert [s.changes for s in sessions] == [[], [], []]  # not sent for a second

    latest["snap"] = snapshot(at=NOW + HEALTH_TEXT_EVERY_S)  # ... but every 10 s
    for session in sessions:
        session.page.refresh()
    assert [s.changed_models() for s in sessions] == [[(Div, "text")]] * 3
    assert "2027-01-15 08:00:10" in sessions[0].page.health.text

    latest["snap"] = snapshot(at=NOW + 11.0)
    latest["snap"].health = [Check("state", RED, "sqlite: locked")]  # and at once on a change
    for session in sessions:
        session.changes.clear()
        session.page.refresh()
    assert [s.changed_models() for s in sessions] == [[(Div, "text")]] * 3
    assert "sqlite: locked" in sessions[0].page.health.text

    latest["snap"] = snapshot(at=NOW + 11.0, noise_jy=0.003)  # green again, one sample moved
    for session in sessions:
        session.changes.clear()
        session.page.refresh()
        assert session.changed_models() == [(Div, "text"), (ColumnDataSource, "data")]
        assert session.changes[1].model is session.page.sources["image_noise_jy"]
        assert session.page.sources["image_noise_jy"].data["v"] == pytest.approx([2.0, 3.0])
    assert len(prepared) == 6
