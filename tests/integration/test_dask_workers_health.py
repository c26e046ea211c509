"""The ``dask_workers`` health line from what ``contimg watch`` records: a real LocalCluster
(scheduler and two worker processes on 127.0.0.1) asked by
:func:`contimg_dask.pipeline.monitor.dask_samples`; the samples go through a SQLite state store
to :func:`contimg_dask.monitoring.health.check_dask_workers`. The memory fraction is checked
against the workers' resident memory measured independently (psutil)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from contimg_dask.monitoring.health import AMBER, GREEN, RED, check_dask_workers
from contimg_dask.pipeline.monitor import dask_samples
from contimg_dask.state import MetricSample, open_state_store
from tests.helpers import make_config

MEMORY_LIMIT = 2_000_000_000  # bytes per worker


def test_workers_and_memory_reach_the_health_line(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit=MEMORY_LIMIT) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        time.sleep(1.0)  # a worker heartbeat carries its memory (every 0.5 s by default)
        now = time.time()
        recorded = dask_samples(client, now)
        rss = [psutil.Process(pid).memory_info().rss
               for pid in client.run(os.getpid).values()]
    samples = {s.name: s.value for s in recorded}
    assert samples["heartbeat.dask_workers"] == 2.0
    assert samples["dask_worker_memory_fraction"] == pytest.approx(
        max(rss) / MEMORY_LIMIT, rel=0.25)

    config = make_config(tmp_path)
    store = open_state_store(config)
    try:
        assert check_dask_workers(store, config, now).status == RED  # nothing recorded yet
        store.record_metrics(recorded)
        line = check_dask_workers(store, config, now + 1.0)
        assert line.status == GREEN and line.reason.startswith("2 workers, fullest at ")
        amber_s = config.monitoring.health.heartbeat_amber_s
        assert check_dask_workers(store, config, now + amber_s + 1.0).status == AMBER
        tight = make_config(tmp_path, **{"monitoring.health.dask_memory_amber":
                                         0.5 * samples["dask_worker_memory_fraction"]})
        assert check_dask_workers(store, tight, now + 1.0).status == AMBER
        store.record_metrics([MetricSample("heartbeat.dask_workers", 0.0, now + 2.0)])
        assert check_dask_workers(store, config, now + 3.0).status == RED
    finally:
        store.close()
