"""Keep a stage's lease alive while it runs: a thread renews it every
``pipeline.heartbeat_interval_s`` for ``state.lease_s``. If the store refuses a renewal
(LeaseLostError: the lease expired and the stage went to another worker), ``lost`` is set and
the holder must discard its result; a store that cannot be reached is retried at the next
beat (the lease stays valid until it expires)."""

from __future__ import annotations

import threading
from types import TracebackType

from contimg_dask.errors import LeaseLostError, StateError
from contimg_dask.logs import get_logger
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import Lease

log = get_logger(__name__)


class Heartbeat:
    """Context manager renewing ``lease`` in a daemon thread; ``lease`` is the latest."""

    def __init__(self, store: StateStore, lease: Lease, lease_s: float,
                 interval_s: float) -> None:
        self.store, self.lease = store, lease
        self.lease_s, self.interval_s = lease_s, interval_s
        self.lost: LeaseLostError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"heartbeat-{lease.block_id}-{lease.stage}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.lease = self.store.heartbeat(self.lease, self.lease_s)
            except LeaseLostError as exc:
                self.lost = exc
                log.error("lost the lease on %s/%s: %s", self.lease.block_id,
                          self.lease.stage, exc)
                return
            except StateError as exc:
                if not exc.transient:
                    raise
                log.warning("heartbeat of %s/%s failed (retrying): %s", self.lease.block_id,
                            self.lease.stage, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> Lease:
        """Stop renewing (before the lease is completed or failed); the latest lease."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.lease

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
