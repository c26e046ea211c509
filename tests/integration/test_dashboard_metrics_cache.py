"""``/metrics`` costs one prometheus_client rendering per snapshot, not one per request: 50
scrapes of a real dashboard server between two snapshots render once, and give the same
values but for the snapshot's age, which grows from scrape to scrape; the next snapshot's
values are served after one more rendering."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contimg_dask.monitoring import exposition
from contimg_dask.monitoring.server import DashboardThread
from contimg_dask.state import open_state_store
from tests.dashboard_support import free_port, heartbeats, record_block
from tests.helpers import make_config, without_disk_alerts


def test_metrics_rendered_once_per_snapshot(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """50 scrapes between two snapshots: one prometheus_client rendering; the next snapshot
    is rendered once more. The snapshot service is not refreshing on its own meanwhile
    (snapshot_s one hour); the test replaces its snapshot as its thread would."""
    calls = []
    render = exposition.generate_latest
    monkeypatch.setattr(exposition, "generate_latest",
                        lambda registry: calls.append(1) or render(registry))
    config = make_config(tmp_path, **{"monitoring.dashboard.snapshot_s": 3600.0,
                                      **without_disk_alerts(tmp_path)})
    store = open_state_store(config)
    heartbeats(store, time.time())
    record_block(store, "2026-12-01T00:00:00", time.time() - 400.0, latency_s=210.0)
    store.close()
    port = free_port()
    dashboard = DashboardThread(config, "127.0.0.1", port).start()

    def scrape() -> dict[str, str]:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        return {s.name + str(sorted(s.labels.items())): str(s.value)
                for f in text_string_to_metric_families(text) for s in f.samples}

    try:
        scrapes = [scrape() for _ in range(50)]
        assert len(calls) == 1
        ages = [float(s.pop("contimg_snapshot_age_seconds[]")) for s in scrapes]
        assert ages == sorted(ages) and ages[-1] > ages[0] > 0.0
        assert all(s == scrapes[0] for s in scrapes)
        assert scrapes[0]["contimg_block_latency_seconds[]"] == "210.0"

        assert dashboard.service is not None
        store = open_state_store(config)
        record_block(store, "2026-12-01T00:05:09", time.time() - 100.0, latency_s=330.0)
        store.close()
        dashboard.service.latest = dashboard.service.builder.build()
        later = [scrape() for _ in range(10)]
        assert len(calls) == 2
        assert later[-1]["contimg_block_latency_seconds[]"] == "330.0"
        assert float(later[-1]["contimg_snapshot_age_seconds[]"]) < ages[-1]
    finally:
        dashboard.stop()
