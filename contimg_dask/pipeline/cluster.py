"""Connect to the configured Dask cluster, or start a LocalCluster of the configured size."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from distributed import Client, LocalCluster

from contimg_dask.config.schema import DaskConfig
from contimg_dask.logs import get_logger

log = get_logger(__name__)


@contextlib.contextmanager
def dask_client(config: DaskConfig) -> Iterator[Client]:
    """A ``Client`` on ``scheduler_address`` if set, else on a new LocalCluster (processes).

    The cluster started here is closed on exit; an external one is left running.
    """
    if config.scheduler_address:
        client = Client(config.scheduler_address)
        log.info("connected to Dask scheduler %s", config.scheduler_address)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=config.n_workers,
                           threads_per_worker=config.threads_per_worker,
                           memory_limit=config.memory_limit,
                           dashboard_address=config.dashboard_address,
                           processes=True)
    client = Client(cluster)
    log.info("started LocalCluster: %d workers, dashboard %s", config.n_workers,
             client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        _close_quietly(cluster)


def _close_quietly(cluster: LocalCluster) -> None:
    """Close a LocalCluster we started, without distributed's shutdown chatter.

    On a loaded machine a worker process may take longer than the nanny's 4 s grace to
    exit; the nanny then logs "Worker process still alive after 4.0 seconds, killing" at
    WARNING, which means nothing to a user (the cluster is being torn down on purpose).
    Only that logger, and only while closing, is raised to ERROR.
    """
    nanny_log = logging.getLogger("distributed.nanny")
    level = nanny_log.level
    nanny_log.setLevel(logging.ERROR)
    try:
        cluster.close()
    finally:
        nanny_log.setLevel(level)
