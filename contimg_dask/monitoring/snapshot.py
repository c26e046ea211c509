"""What the dashboard shows, read from the state store in one place: a :class:`Snapshot`,
rebuilt every ``monitoring.dashboard.snapshot_s`` by one background thread
(:class:`SnapshotService`) and shared by every page session, ``/health`` and ``/metrics``,
so that the number of open pages and scrapes does not multiply the load on the store.

Nothing here writes to the store. Light curves come from a reader the caller injects
(``contimg dashboard`` gives :func:`contimg_dask.photometry.light_curves.light_curve_reader`:
monitoring sits below photometry): those of the newest candidates, read again when a
``product`` event of kind ``photometry`` arrives or a minute has passed.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError, StateError
from contimg_dask.logs import get_logger
from contimg_dask.monitoring.event_tail import EventTail
from contimg_dask.monitoring.health import RED, Check, run_checks, worst
from contimg_dask.state import StateStore, open_state_store

log = get_logger(__name__)

#: The pipeline's stages in order (the shared vocabulary); the Processing view's columns.
STAGES = ("ingest", "rephase", "flag", "calibrate_solve", "calibrate_apply", "export",
          "image", "mosaic", "photometry")
#: Metric series plotted (raw samples over ``dashboard.history_h``).
SERIES = ("block_latency_s", "backlog_blocks", "blocks_done", "flag_fraction",
          "calibration_snr", "image_noise_jy", "image_dynamic_range", "disk_free_fraction",
          "failure_fraction", *(f"stage_seconds.{s}" for s in STAGES))
#: Quick-look PNGs larger than this are not embedded in the page, bytes.
MAX_QUICKLOOK_BYTES = 4_000_000
#: Product kinds whose FITS files have a quick-look PNG beside them.
QUICKLOOK_KINDS = ("image", "mosaic")
#: Light curves kept: those of this many newest candidates (distinct sources).
LIGHT_CURVES = 10
#: Light curves are read again at least this often, s.
LIGHT_CURVE_MAX_AGE_S = 60.0

#: Source names -> {name: {"mjd", "flux_jy", "err_jy", "upper_limit_jy": lists}} (MJD UTC,
#: Jy; see contimg_dask/photometry/light_curves.py).
LightCurveReader = Callable[[list[str]], dict[str, dict[str, list[float]]]]


@dataclass
class Snapshot:
    """The monitoring picture at ``at`` (Unix s). ``blocks``: the most recent blocks, newest
    first, each with its stages; ``series``: metric name -> (times, values);
    ``flag_heatmap``: (block, antenna, flagged fraction) of the recent blocks;
    ``solution_cells``: (calibrator block, antenna, amplitude, phase in degrees, SNR)."""

    at: float
    health: list[Check]
    status: dict[str, Any] | None = None
    active_alerts: list[dict[str, Any]] = field(default_factory=list)
    resolved_alerts: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    flag_heatmap: list[tuple[str, str, float | None]] = field(default_factory=list)
    solution_cells: list[tuple[str, str, float | None, float | None, float | None]] = field(
        default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    light_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    quicklooks: list[dict[str, str]] = field(default_factory=list)

    @property
    def overall(self) -> str:
        return worst(self.health)


def _stage_row(s: Any) -> dict[str, Any]:
    result = s.result or {}
    error = s.error or {}
    return {"status": s.status, "attempts": s.attempts, "seconds": result.get("seconds"),
            "finished_at": result.get("finished_at"), "updated_at": s.updated_at,
            "figures": result.get("figures") or {},
            "error": f"{error.get('error')}: {error.get('message')}" if error else None,
            "transient": error.get("transient")}


def _outcome(stages: dict[str, dict[str, Any]]) -> str:
    statuses = {s["status"] for s in stages.values()}
    for status in ("failed", "running", "pending"):
        if status in statuses:
            return status
    return "done" if statuses else "waiting"


def antenna_cells(events: dict[str, dict[str, Any]], fields: tuple[str, ...], last: int
                  ) -> list[tuple[Any, ...]]:
    """(block id, antenna, *values of ``fields``) of the ``last`` blocks' per-antenna events
    (EventTail.antenna[kind]); None where a value is missing."""
    cells = []
    for block_id, data in list(events.items())[-last:]:
        columns = [data.get(f) or [] for f in fields]
        for i, antenna in enumerate(data.get("antennas") or []):
            cells.append((block_id, str(antenna),
                          *(c[i] if i < len(c) else None for c in columns)))
    return cells


class SnapshotBuilder:
    """Builds snapshots from one open store (reopened after a failure to open);
    ``light_curves`` reads the candidates' light curves (none shown without it)."""

    def __init__(self, config: PipelineConfig,
                 light_curves: LightCurveReader | None = None) -> None:
        self.config = config
        self.light_curves = light_curves
        self.store: StateStore | None = None
        self.tail: EventTail | None = None
        self._quicklooks: dict[str, str] = {}
        self._curves: dict[str, dict[str, list[float]]] = {}
        self._curves_key: tuple[Any, ...] | None = None
        self._cells: tuple[int, list[Any], list[Any]] | None = None

    def _open(self) -> StateStore:
        if self.store is None:
            self.store = open_state_store(self.config)
            dash = self.config.monitoring.dashboard
            self.tail = EventTail(self.store, dash.max_events, dash.recent_blocks)
        return self.store

    def build(self, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        try:
            store = self._open()
        except StateError as exc:
            where = f"state store at {exc.file}: " if exc.file else ""
            return Snapshot(now, [Check("state", RED, where + exc.message)])
        try:
            assert self.tail is not None
            self.tail.update()
            tail: EventTail | None = self.tail
        except StateError:
            tail = None
        health, status = run_checks(store, tail, self.config, now)
        snap = Snapshot(now, health, status)
        if status is None or tail is None:
            return snap
        try:
            self._fill(snap, store, tail, now)
        except StateError as exc:  # the store went away while read: say which, as health does
            snap.health = [Check("state", RED, f"{store.backend} at {store.location}: "
                                 f"{exc.message}"), *health[1:]]
        return snap

    def _fill(self, snap: Snapshot, store: StateStore, tail: EventTail, now: float) -> None:
        dash = self.config.monitoring.dashboard
        snap.active_alerts = sorted(tail.active_alerts.values(), key=lambda a: a["raised_at"])
        snap.resolved_alerts = list(tail.resolved_alerts)[-20:][::-1]
        snap.candidates = list(tail.candidates)[-50:][::-1]
        recent = sorted(store.blocks(), key=lambda b: b.first_seen)[-dash.recent_blocks:]
        for block in recent[::-1]:
            stages = {s.stage: _stage_row(s) for s in store.stages(block.block_id)}
            snap.blocks.append({**block.to_dict(), "stages": stages, "outcome": _outcome(stages)})
        snap.flag_heatmap, snap.solution_cells = self._antenna_cells(tail)
        snap.failures = [f.to_dict() for f in store.failures(limit=50)][::-1]
        since = now - 3600.0 * dash.history_h
        for name in SERIES:
            points = store.metric_series(name, "raw", since=since, until=now)
            snap.series[name] = ([float(p.key) for p in points], [p.mean for p in points])
        snap.quicklooks = self._latest_quicklooks(store)
        snap.light_curves = self._candidate_light_curves(tail, snap.candidates, now)

    def _antenna_cells(self, tail: EventTail) -> tuple[list[Any], list[Any]]:
        """The heatmaps' cells, rebuilt only after new per-antenna events (the same lists
        otherwise, so that the page data sees they did not change)."""
        if self._cells is None or self._cells[0] != tail.antenna_updates:
            last = self.config.monitoring.dashboard.recent_blocks
            self._cells = (tail.antenna_updates,
                           antenna_cells(tail.antenna["antenna_flags"], ("flagged_fraction",),
                                         last),
                           antenna_cells(tail.antenna["solutions"],
                                         ("amp", "phase_deg", "snr"), last))
        return self._cells[1], self._cells[2]

    def _candidate_light_curves(self, tail: EventTail, candidates: list[dict[str, Any]],
                                now: float) -> dict[str, dict[str, list[float]]]:
        if self.light_curves is None:
            return {}
        names = list(dict.fromkeys(str(c.get("name")) for c in candidates))[:LIGHT_CURVES]
        key = (tail.photometry_products, tuple(names), now // LIGHT_CURVE_MAX_AGE_S)
        if key != self._curves_key:
            try:
                self._curves = self.light_curves(names)
            except (ContimgError, OSError, ValueError, KeyError) as exc:
                log.warning("light curves of %s not read: %s", ", ".join(names), exc)
                self._curves = {}
            self._curves_key = key
        return self._curves

    def _latest_quicklooks(self, store: StateStore) -> list[dict[str, str]]:
        """The newest quick-look of each kind, as data URIs (read once per file)."""
        shown = []
        for kind in QUICKLOOK_KINDS:
            products = sorted(store.products(kind=kind), key=lambda p: p.recorded_at)
            for product in products[::-1]:
                png = Path(product.path).with_suffix(".png")
                uri = self._quicklooks.get(str(png)) or self._read_png(png)
                if uri:
                    self._quicklooks[str(png)] = uri
                    shown.append({"kind": kind, "block_id": product.block_id,
                                  "path": str(png), "uri": uri})
                    break
        return shown

    @staticmethod
    def _read_png(path: Path) -> str | None:
        try:
            if path.stat().st_size > MAX_QUICKLOOK_BYTES:
                return None
            return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        except OSError:
            return None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class SnapshotService:
    """A daemon thread keeping :attr:`latest` at most ``snapshot_s`` old (as long as the
    store answers: :meth:`age_s` tells how old it is)."""

    def __init__(self, config: PipelineConfig,
                 light_curves: LightCurveReader | None = None) -> None:
        self.config = config
        self.builder = SnapshotBuilder(config, light_curves)
        self.latest = self.builder.build()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="snapshot", daemon=True)

    def start(self) -> SnapshotService:
        self._thread.start()
        return self

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.latest.at

    def stale(self) -> bool:
        """True when the snapshot is older than ten refresh intervals (at least 10 s): the
        store is hanging rather than refusing."""
        return self.age_s() > max(10.0, 10 * self.config.monitoring.dashboard.snapshot_s)

    def _loop(self) -> None:
        interval = self.config.monitoring.dashboard.snapshot_s
        while not self._stop.wait(interval):
            try:
                self.latest = self.builder.build()
            except Exception:  # the monitor must outlive any one bad read; logged in full
                log.exception("dashboard snapshot failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.builder.close()
