"""Where CASA processes run on a Dask cluster: on a worker that declares the configured
resource (``dask worker --resources CASA=1``), so that a worker runs at most as many CASA
processes at once as it declares, whichever pipeline process asked for them.

Without a current Dask client, inside a Dask task already, or on a cluster whose workers
declare no such resource (a LocalCluster), the call runs here, in the calling process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from contimg_dask.logs import get_logger

if TYPE_CHECKING:
    from distributed import Client

log = get_logger(__name__)
T = TypeVar("T")


def current_client() -> Client | None:
    """The Dask client made current (``client.as_current()``) or the process's default one;
    None inside a Dask task (the caller is on a worker already) or without any client."""
    from distributed import Client, get_worker

    try:
        get_worker()
        return None
    except ValueError:
        pass
    try:
        return Client.current(allow_global=True)
    except ValueError:
        return None


def declared_resources(client: Client) -> dict[str, float]:
    """The largest amount of each resource any live worker declares (the scheduler's view)."""
    found: dict[str, float] = {}
    for worker in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        for name, amount in (worker.get("resources") or {}).items():
            found[name] = max(found.get(name, 0.0), float(amount))
    return found


def declared(client: Client, wanted: dict[str, float]) -> bool:
    """Whether some worker declares every resource of ``wanted`` in at least that amount."""
    for worker in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        have = worker.get("resources") or {}
        if all(float(have.get(name, 0.0)) >= amount for name, amount in wanted.items()):
            return True
    return False


def run_with_resource(call: Callable[[], T], resource: str | None, name: str) -> T:
    """``call()`` as a Dask task that holds one unit of ``resource`` on a worker declaring
    it, or here (see the module docstring). A worker lost during the call: the scheduler
    runs it again on another (``distributed.scheduler.allowed-failures``)."""
    client = current_client() if resource else None
    if client is None or not declared(client, {resource: 1.0}):
        return call()
    future = client.submit(call, resources={resource: 1.0}, pure=False,
                           key=f"casa-{name}-{uuid.uuid4().hex}")
    try:
        return future.result()
    finally:
        future.release()
