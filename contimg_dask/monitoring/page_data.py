"""What every dashboard session shows of a :class:`Snapshot`, prepared once per snapshot for
all of them: the health view's HTML (sent again at once when a status changes, else at most
every :data:`HEALTH_TEXT_EVERY_S`), the columns of the shared data sources (alerts, metric
series, blocks, failures, candidates, the antenna heatmaps) and the quick-looks' HTML.

:class:`PageDataCache` prepares the latest snapshot's :class:`PageData` on the first session
refresh that asks for it, and keeps each column set of the previous one when it is equal
(one comparison per snapshot, not one per session): a session then tells what changed by
identity, so an unchanged snapshot costs a session a few identity checks and sends nothing
to its browser. Column lists are shared by the sessions' documents, read-only.

Times: the plots' datetime axes take Unix milliseconds; tables show UTC.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contimg_dask.monitoring.antenna_views import heatmap_columns
from contimg_dask.monitoring.health import AMBER, GREEN, RED
from contimg_dask.monitoring.snapshot import STAGES, Snapshot

COLOURS = {GREEN: "#2e9d44", AMBER: "#e69b00", RED: "#d22c2c"}
SECONDS_PER_HOUR = 3600.0
#: Series plotted in other units than recorded: image noise Jy/beam -> mJy/beam.
PLOT_SCALE = {"image_noise_jy": 1e3}
#: The health view's text moves with every snapshot (its read time, heartbeat ages, free
#: space): it is sent again at once when a check's status changes, otherwise at most this
#: often, s (each send is a document patch per open session).
HEALTH_TEXT_EVERY_S = 10.0
#: Heatmap name -> (snapshot cells attribute, index of the value in a cell).
HEATMAPS = {"flag_heatmap": ("flag_heatmap", 2), "solution_amp": ("solution_cells", 2),
            "solution_phase": ("solution_cells", 3)}

Columns = dict[str, list[Any]]


def utc(at: float | None) -> str:
    """Unix seconds as 'YYYY-MM-DD HH:MM:SS' (UTC); '-' for None."""
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds_text(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def unix_ms(times: list[float]) -> list[float]:
    """Unix seconds -> Unix milliseconds (Bokeh's datetime axis)."""
    return [1000.0 * t for t in times]


def health_html(snap: Snapshot) -> str:
    rows = "".join(
        f"<tr><td><span style='color:{COLOURS[c.status]};font-size:1.3em'>&#9679;</span> "
        f"{html.escape(c.name)}</td><td>{c.status}</td><td>{html.escape(c.reason)}</td></tr>"
        for c in snap.health)
    return (f"<h2>Health: <span style='color:{COLOURS[snap.overall]}'>{snap.overall}</span>"
            f"</h2><p>state read at {utc(snap.at)} UTC</p>"
            f"<table style='border-collapse:collapse' cellpadding='4'>{rows}</table>")


def science_html(snap: Snapshot) -> str:
    images = "".join(
        f"<figure style='display:inline-block;margin:4px'><img src='{q['uri']}' "
        f"style='max-width:420px'><figcaption>{q['kind']} {html.escape(q['block_id'])}"
        f"</figcaption></figure>" for q in snap.quicklooks)
    return images or "<p>no quick-look images yet</p>"


def alert_columns(snap: Snapshot) -> dict[str, Columns]:
    active, resolved = snap.active_alerts, snap.resolved_alerts
    return {
        "alerts_active": {
            "rule": [a.get("rule") for a in active],
            "severity": [a.get("severity") for a in active],
            "since": [utc(a.get("since") or a.get("raised_at")) for a in active],
            "message": [a.get("message") for a in active],
            "runbook": [a.get("runbook") for a in active]},
        "alerts_resolved": {
            "rule": [a.get("rule") for a in resolved],
            "severity": [a.get("severity") for a in resolved],
            "raised": [utc(a.get("raised_at")) for a in resolved],
            "resolved": [utc(a.get("resolved_at")) for a in resolved],
            "message": [a.get("message") for a in resolved]}}


def metric_columns(snap: Snapshot) -> dict[str, Columns]:
    """Each metric series (``t`` Unix ms, ``v`` in the plot's unit) and the blocks done per
    hour (``t`` the hour's middle, Unix ms; ``n``)."""
    columns = {name: {"t": unix_ms(times), "v": [PLOT_SCALE.get(name, 1.0) * v for v in values]}
               for name, (times, values) in snap.series.items()}
    done_times, _ = snap.series.get("block_latency_s", ([], []))
    hours: dict[float, int] = {}
    for t in done_times:
        start = t - t % SECONDS_PER_HOUR + SECONDS_PER_HOUR / 2
        hours[start] = hours.get(start, 0) + 1
    columns["blocks_per_hour"] = {"t": unix_ms(list(hours)), "n": list(hours.values())}
    return columns


def _stage_cell(stages: dict[str, Any], stage: str) -> str:
    s = stages.get(stage)
    return "" if s is None else f"{s['status']} {seconds_text(s['seconds'])}".strip()


def block_columns(snap: Snapshot) -> dict[str, Columns]:
    blocks, failures = snap.blocks, snap.failures
    return {
        "blocks": {
            "block_id": [b["block_id"] for b in blocks],
            "status": [f"{b['status']} ({b['n_files']})" for b in blocks],
            "outcome": [b["outcome"] for b in blocks],
            **{stage: [_stage_cell(b["stages"], stage) for b in blocks] for stage in STAGES}},
        "failures": {
            "at": [utc(f["at"]) for f in failures],
            **{key: [str(f[key]) for f in failures]
               for key in ("block_id", "stage", "error", "transient", "message", "input")}}}


def candidate_columns(snap: Snapshot) -> dict[str, Columns]:
    candidates = snap.candidates
    return {"candidates": {"at": [utc(c.get("at")) for c in candidates],
                           "name": [str(c.get("name")) for c in candidates],
                           "kind": [str(c.get("kind")) for c in candidates],
                           "metrics": [str(c.get("metrics")) for c in candidates]}}


@dataclass
class PageData:
    """One snapshot's page content. ``columns``: data source name -> columns; ``heatmaps``:
    heatmap name -> columns (``block``, ``antenna``, ``value``); ``blocks``,
    ``candidates`` and ``light_curves`` as in the snapshot (a session's block detail and
    light curve depend on its selection); ``health_at``: the read time (Unix s) of the
    snapshot whose health ``health_html`` shows."""

    snapshot: Snapshot
    health_html: str
    health_at: float
    science_html: str
    columns: dict[str, Columns] = field(default_factory=dict)
    heatmaps: dict[str, Columns] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    light_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def _kept(new: Any, old: Any | None) -> Any:
    """``old`` when equal to ``new`` (so that sessions see by identity that nothing changed)."""
    return old if old is not None and old == new else new


def _statuses(snap: Snapshot) -> list[tuple[str, str]]:
    return [(c.name, c.status) for c in snap.health]


def prepare_page_data(snap: Snapshot, previous: PageData | None = None) -> PageData:
    """``snap``'s page content, reusing ``previous``'s objects where they are equal."""
    columns = {**alert_columns(snap), **metric_columns(snap), **block_columns(snap),
               **candidate_columns(snap)}
    heatmaps = {name: previous.heatmaps[name] if previous is not None
                and getattr(previous.snapshot, cells) is getattr(snap, cells)
                else heatmap_columns(getattr(snap, cells), index)
                for name, (cells, index) in HEATMAPS.items()}
    data = PageData(snap, health_html(snap), snap.at, science_html(snap), columns, heatmaps,
                    snap.blocks, snap.candidates, snap.light_curves)
    if previous is not None:
        if (_statuses(previous.snapshot) == _statuses(snap)
                and snap.at - previous.health_at < HEALTH_TEXT_EVERY_S):
            data.health_html, data.health_at = previous.health_html, previous.health_at
        data.columns = {k: _kept(v, previous.columns.get(k)) for k, v in columns.items()}
        data.heatmaps = {k: _kept(v, previous.heatmaps.get(k)) for k, v in heatmaps.items()}
        data.blocks = _kept(snap.blocks, previous.blocks)
        data.candidates = _kept(snap.candidates, previous.candidates)
        data.light_curves = _kept(snap.light_curves, previous.light_curves)
    return data


class PageDataCache:
    """The page data of ``latest()`` (the snapshot service's current snapshot), prepared at
    most once per snapshot whatever the number of sessions asking."""

    def __init__(self, latest: Callable[[], Snapshot]) -> None:
        self.latest = latest
        self._data: PageData | None = None
        self._lock = threading.Lock()

    def __call__(self) -> PageData:
        snap = self.latest()
        with self._lock:
            if self._data is None or self._data.snapshot is not snap:
                self._data = prepare_page_data(snap, self._data)
            return self._data
