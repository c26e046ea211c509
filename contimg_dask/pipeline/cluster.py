"""Connect to the configured Dask cluster, or start a LocalCluster of the configured size;
run a stage's Dask work on it: placed by the resources the configuration asks for, a lost
worker or scheduler turned into a transient failure once the client is connected again."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError

from distributed import Client, LocalCluster

from contimg_dask.casa.placement import declared, declared_resources
from contimg_dask.config.schema import DaskConfig
from contimg_dask.errors import ContimgError
from contimg_dask.logs import get_logger

log = get_logger(__name__)
#: How often a lost client's status is looked at while it reconnects (seconds).
_RECONNECT_POLL_S = 0.2


class ClusterUnavailableError(ContimgError):
    """The Dask cluster lost the stage's computation: the scheduler went away (the client
    reconnects meanwhile) or workers died more often than the scheduler allows. Transient:
    the stage runs again (its products are written atomically)."""

    transient = True


@contextlib.contextmanager
def dask_client(config: DaskConfig) -> Iterator[Client]:
    """A ``Client`` on ``scheduler_address`` if set, else on a new LocalCluster (processes).

    The client on an external scheduler keeps reconnecting to it for
    ``reconnect_timeout_s`` after losing it. The cluster started here is closed on exit;
    an external one is left running.
    """
    if config.scheduler_address:
        client = Client(config.scheduler_address, timeout=config.reconnect_timeout_s)
        log.info("connected to Dask scheduler %s: %d workers, resources %s",
                 config.scheduler_address, len(client.scheduler_info()["workers"]),
                 declared_resources(client) or "none")
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


def in_this_process() -> contextlib.AbstractContextManager:
    """Run the Dask computations made inside on this process's threads, not on a cluster
    (a default or current ``Client`` included): the pipeline's own small reads of a block
    store (is a calibrator in the beam? what does the archive index need?) are not a
    stage's work, and as tasks on the cluster they would take a worker's slot unplaced by
    ``stage_resources`` (and share task keys with the stage's placed reads)."""
    import dask

    return dask.config.set(scheduler="threads")


@contextlib.contextmanager
def on_cluster(client: Client | None, config: DaskConfig, stage: str) -> Iterator[None]:
    """Run a stage's work inside: ``client`` current, the stage's Dask tasks annotated with
    its ``stage_resources`` (when some worker declares them), a lost scheduler or killed
    workers raised as :class:`ClusterUnavailableError` after the client reconnected (or
    gave up). A stage does not start while the client is reconnecting (up to
    ``reconnect_timeout_s``): an outage does not use up the stage's attempts."""
    if client is None:
        yield
        return
    import dask
    from distributed.scheduler import KilledWorker

    if client.status != "running" and not _wait_connected(client, config.reconnect_timeout_s):
        raise ClusterUnavailableError(
            f"the Dask client is {client.status}: no scheduler to run {stage} on "
            "(restart the pipeline once the scheduler is back)", stage=stage)
    wanted = config.stage_resources.get(stage)
    annotate = (dask.annotate(resources=wanted) if wanted and declared(client, wanted)
                else contextlib.nullcontext())
    try:
        with client.as_current(), dask.config.set(scheduler="dask.distributed"), annotate:
            yield
    except (CancelledError, KilledWorker) as exc:  # FutureCancelledError & co
        connected = _wait_connected(client, config.reconnect_timeout_s)
        raise ClusterUnavailableError(
            f"the Dask cluster lost the {stage} computation ({type(exc).__name__}: {exc}); "
            f"client {'connected again' if connected else 'not connected'} to "
            f"{client.scheduler.address if client.scheduler else '?'}",
            stage=stage) from exc


def _wait_connected(client: Client, timeout_s: float) -> bool:
    """Wait until ``client`` is running again (it reconnects on its own); False if it
    closed or ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    while client.status != "running":
        if client.status in ("closing", "closed") or time.monotonic() > deadline:
            return False
        time.sleep(_RECONNECT_POLL_S)
    return True
