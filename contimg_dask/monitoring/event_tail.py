"""Follow the state store's event log incrementally and keep what monitoring needs from it:
the latest state of each circuit breaker, the alerts raised and not yet resolved, recent
resolved alerts, stage outcomes, candidates, the last calibration solved and the per-antenna
figures of recent blocks.

Event kinds and fields are the pipeline's shared vocabulary: ``breaker`` {name, state},
``alert_raised``/``alert_resolved`` {rule, severity, message, ...}, ``stage_done``
{block_id, stage, seconds}, ``stage_failed`` {block_id, stage, error, transient},
``candidate`` {name, kind, metrics}, ``product`` {block_id, kind, path}; per antenna
``antenna_flags`` {block_id, antennas, flagged_fraction} and ``solutions`` {block_id,
antennas, amp, phase_deg, snr} (contimg_dask/pipeline/monitor.py). Times are the events' own
``at`` (Unix s).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from contimg_dask.state import Event, StateStore

#: Events read per call of ``StateStore.events`` while catching up.
PAGE = 1000


class EventTail:
    """Reads new events on every :meth:`update`; keeps at most ``max_events`` of each
    history (stage outcomes, resolved alerts, candidates) and the per-antenna events of the
    last ``antenna_blocks`` blocks of each kind (the dashboard's heatmaps show that many,
    ``monitoring.dashboard.recent_blocks``; the alert evaluator, which uses none, keeps
    none)."""

    def __init__(self, store: StateStore, max_events: int, antenna_blocks: int = 0) -> None:
        self.store = store
        self.cursor: str | None = None
        self.breakers: dict[str, dict[str, Any]] = {}
        self.active_alerts: dict[str, dict[str, Any]] = {}
        self.resolved_alerts: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.outcomes: deque[tuple[float, str, bool]] = deque(maxlen=max_events)
        self.candidates: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.last_calibration_at: float | None = None
        self.antenna_blocks = antenna_blocks
        #: Per-antenna events by kind, then block id (a rerun replaces), oldest first.
        self.antenna: dict[str, dict[str, dict[str, Any]]] = {
            "antenna_flags": {}, "solutions": {}}
        #: Per-antenna events applied so far (the heatmaps changed when this did).
        self.antenna_updates = 0
        #: ``product`` events of kind ``photometry`` seen (new light curves to read).
        self.photometry_products = 0

    def update(self) -> int:
        """Read the events since the last call; the number read."""
        n = 0
        while True:
            page = self.store.events(after=self.cursor, count=PAGE)
            for event in page:
                self._apply(event)
            n += len(page)
            if page:
                self.cursor = page[-1].id
            if len(page) < PAGE:
                return n

    def _apply(self, event: Event) -> None:
        data, at = event.data, event.at
        if event.kind == "breaker":
            self.breakers[str(data.get("name"))] = {"state": data.get("state"), "at": at}
        elif event.kind == "alert_raised":
            self.active_alerts[str(data.get("rule"))] = {**data, "raised_at": at}
        elif event.kind == "alert_resolved":
            raised = self.active_alerts.pop(str(data.get("rule")), {})
            self.resolved_alerts.append({**raised, **data, "resolved_at": at})
        elif event.kind in ("stage_done", "stage_failed"):
            self.outcomes.append((at, str(data.get("stage")), event.kind == "stage_failed"))
            if event.kind == "stage_done" and data.get("stage") == "calibrate_solve":
                self.last_calibration_at = at
        elif event.kind == "candidate":
            self.candidates.append({**data, "at": at})
        elif event.kind == "product" and data.get("kind") == "solutions":
            self.last_calibration_at = at
        elif event.kind == "product" and data.get("kind") == "photometry":
            self.photometry_products += 1
        elif event.kind in self.antenna and self.antenna_blocks > 0:
            by_block = self.antenna[event.kind]
            by_block.pop(str(data.get("block_id")), None)
            by_block[str(data.get("block_id"))] = {**data, "at": at}
            self.antenna_updates += 1
            if len(by_block) > self.antenna_blocks:
                del by_block[next(iter(by_block))]

    def failure_fraction(self, now: float, window_s: float) -> float | None:
        """Failed stage runs over all stage runs that ended in the last ``window_s``
        seconds; None if none ended."""
        recent = [failed for at, _, failed in self.outcomes if now - window_s <= at <= now]
        return sum(recent) / len(recent) if recent else None

    def open_breakers(self) -> list[str]:
        """Names of the breakers whose latest state is ``open``."""
        return sorted(name for name, b in self.breakers.items() if b["state"] == "open")
