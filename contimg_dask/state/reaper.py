"""The reaper: a daemon thread that returns expired leases to the queue every
``state.reaper_interval_s``. An expired lease is therefore reaped within
``lease_s + reaper_interval_s`` of its last heartbeat."""

from __future__ import annotations

import threading

from contimg_dask.errors import StateError
from contimg_dask.logs import get_logger
from contimg_dask.state.protocol import StateStore

log = get_logger(__name__)


class Reaper:
    """Run ``store.reap()`` every ``interval_s`` seconds until :meth:`stop`. A transient
    store error is logged and retried at the next interval."""

    def __init__(self, store: StateStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self.reaped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="state-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                for lease in self.store.reap():
                    self.reaped += 1
                    log.warning("lease of %s on %s/%s (token %d) expired: requeued",
                                lease.worker, lease.block_id, lease.stage, lease.token)
            except StateError as exc:
                if not exc.transient:
                    raise
                log.warning("reaper: %s", exc)
