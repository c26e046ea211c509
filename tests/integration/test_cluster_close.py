"""Closing the LocalCluster the pipeline started prints none of distributed's shutdown
chatter (issue 11: no third-party warnings on the user's terminal), even when a worker
process is slow to exit, as on a loaded machine."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from distributed import Client, LocalCluster

from contimg_dask.pipeline.cluster import _close_quietly


def _hold_worker_process() -> int:
    """Keep the worker process alive past the nanny's 4 s grace: a non-daemon thread."""
    threading.Thread(target=time.sleep, args=(8,), daemon=False).start()
    return 1


def _slow_exiting_cluster() -> LocalCluster:
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    with Client(cluster) as client:
        assert client.submit(_hold_worker_process, pure=False).result() == 1
    return cluster


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_closing_a_slow_worker_is_quiet() -> None:
    nanny_log = logging.getLogger("distributed.nanny")
    records = _Records()
    nanny_log.addHandler(records)
    try:
        # Control: a plain close of the same set-up does log the nanny's warning, so the
        # set-up provokes what the quiet close must hide.
        _slow_exiting_cluster().close()
        assert any("still alive after" in m for m in records.messages)
        records.messages.clear()

        _close_quietly(_slow_exiting_cluster())
        assert not any("still alive after" in m for m in records.messages)
        assert nanny_log.level == logging.NOTSET
    finally:
        nanny_log.removeHandler(records)
