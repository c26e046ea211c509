"""The dashboard page: one Bokeh document per browser session, updated every
``monitoring.dashboard.refresh_s`` from the shared snapshot's page data, prepared once for
all sessions (monitoring/page_data.py; never from the state store directly): a session
sends its browser only what changed. Views, top to bottom: Health, Alerts, Metrics,
Processing status (with a block's detail), Science, and links. Each view's root model
carries a ``name`` (``health``, ``alerts_active``, ``latency``, ``blocks``, ``science``...)
that the browser tests look up.

The only query parameter is ``block`` (a block id, YYYY-MM-DDTHH:MM:SS) selecting the
block shown in detail; anything else is reported on the page and ignored.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from typing import Any

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    DataTable,
    Div,
    HoverTool,
    Span,
    TableColumn,
)
from bokeh.plotting import figure

from contimg_dask.config import PipelineConfig
from contimg_dask.monitoring.antenna_views import AntennaHeatmap
from contimg_dask.monitoring.health import GREEN, RED
from contimg_dask.monitoring.page_data import (
    COLOURS,
    SECONDS_PER_HOUR,
    PageData,
    seconds_text,
    utc,
)
from contimg_dask.monitoring.snapshot import STAGES

BLOCK_ID = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
#: Query parameters the page understands (``token`` is the access token, checked before).
PARAMETERS = ("block", "token")
STAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#17becf")
#: MJD of the Unix epoch, and milliseconds per day (Bokeh's datetime axis is Unix ms).
MJD_UNIX_EPOCH = 40587.0
MS_PER_DAY = 86_400_000.0


def block_parameter(arguments: dict[str, list[bytes]]) -> tuple[str | None, list[str]]:
    """The validated ``block`` query parameter and the problems with the others."""
    problems = [f"unknown query parameter {html.escape(k)!r} ignored" for k in arguments
                if k not in PARAMETERS]
    values = arguments.get("block", [])
    block = values[-1].decode(errors="replace") if values else None
    if block is not None and not BLOCK_ID.match(block):
        problems.append(f"block={html.escape(block)!r} is not a block id "
                        "(YYYY-MM-DDTHH:MM:SS); ignored")
        block = None
    return block, problems


def _table(name: str, columns: list[tuple[str, str]], height: int = 220
           ) -> tuple[DataTable, ColumnDataSource]:
    source = ColumnDataSource({key: [] for key, _ in columns})
    table = DataTable(source=source, name=name, height=height, sizing_mode="stretch_width",
                      columns=[TableColumn(field=key, title=title) for key, title in columns],
                      index_position=None)
    return table, source


def _time_figure(name: str, title: str, y_label: str, **kwargs: Any) -> Any:
    return figure(name=name, title=title, x_axis_type="datetime", height=230,
                  sizing_mode="stretch_width", y_axis_label=y_label,
                  tools="pan,wheel_zoom,box_zoom,reset,save", **kwargs)


class DashboardPage:
    """Builds the document's models once and refreshes their data sources from
    ``page_data()`` (the shared :class:`~contimg_dask.monitoring.page_data.PageDataCache`)."""

    def __init__(self, config: PipelineConfig, page_data: Callable[[], PageData],
                 arguments: dict[str, list[bytes]]) -> None:
        self.config = config
        self.page_data = page_data
        self.shown: PageData | None = None
        self.block, problems = block_parameter(arguments)
        self.candidate: str | None = None
        self.sources: dict[str, ColumnDataSource] = {}
        self._sent: dict[str, dict[str, list[Any]]] = {}
        self.notice = Div(name="notice", text="<br>".join(problems),
                          styles={"color": COLOURS[RED]})
        self.health = Div(name="health", sizing_mode="stretch_width")
        self.layout = column(self.notice, self._links(), self.health, self._alerts(),
                             *self._metrics(), *self._processing(), *self._science(),
                             sizing_mode="stretch_width", name="dashboard")

    # -- views ------------------------------------------------------------------------------

    def _links(self) -> Div:
        dash = self.config.monitoring.dashboard
        links = [f"<a href='{html.escape(dash.docs_url)}/{page}.md'>{page}</a>"
                 for page in ("architecture", "operations", "alerts")]
        if dash.dask_dashboard_url:
            links.insert(0, f"<a href='{html.escape(dash.dask_dashboard_url)}'>Dask dashboard</a>")
        return Div(name="links", text="<h1>DSA-110 continuum imaging pipeline</h1>"
                   + " | ".join(links))

    def _alerts(self) -> Any:
        active, self.sources["alerts_active"] = _table("alerts_active", [
            ("rule", "rule"), ("severity", "severity"), ("since", "since (UTC)"),
            ("message", "message"), ("runbook", "what to do")], height=150)
        resolved, self.sources["alerts_resolved"] = _table("alerts_resolved", [
            ("rule", "rule"), ("severity", "severity"), ("raised", "raised (UTC)"),
            ("resolved", "resolved (UTC)"), ("message", "message")], height=150)
        return column(Div(text="<h2>Active alerts</h2>"), active,
                      Div(text="<h3>Recently resolved</h3>"), resolved,
                      sizing_mode="stretch_width")

    def _line(self, fig: Any, key: str, colour: str = "#1f77b4", label: str | None = None
              ) -> None:
        source = self.sources.setdefault(key, ColumnDataSource({"t": [], "v": []}))
        extra = {"legend_label": label} if label else {}
        fig.line("t", "v", source=source, color=colour, **extra)
        fig.scatter("t", "v", source=source, color=colour, size=4)

    def _metrics(self) -> list[Any]:
        budget = self.config.monitoring.dashboard.latency_budget_s
        latency = _time_figure("latency", f"Block latency (budget {budget:.0f} s)", "s")
        self._line(latency, "block_latency_s")
        latency.add_layout(Span(location=budget, dimension="width", line_color=COLOURS[RED],
                                line_dash="dashed"))
        rate = _time_figure("blocks_per_hour", "Blocks per hour", "blocks")
        self.sources["blocks_per_hour"] = ColumnDataSource({"t": [], "n": []})
        rate.vbar(x="t", top="n", width=0.9 * SECONDS_PER_HOUR * 1000,
                  source=self.sources["blocks_per_hour"])
        backlog = _time_figure("backlog", "Backlog", "blocks")
        self._line(backlog, "backlog_blocks")
        stages = _time_figure("stage_timings", "Stage timings", "s")
        for stage, colour in zip(STAGES, STAGE_COLOURS, strict=True):
            self._line(stages, f"stage_seconds.{stage}", colour, stage)
        stages.legend.label_text_font_size = "8pt"
        stages.add_layout(stages.legend[0], "right")
        flags = _time_figure("flag_fraction", "Flagged fraction per block", "fraction")
        self._line(flags, "flag_fraction")
        snr = _time_figure("calibration_snr", "Calibration SNR", "SNR")
        self._line(snr, "calibration_snr")
        noise = _time_figure("image_noise", "Image noise", "mJy/beam")
        self._line(noise, "image_noise_jy")
        dynamic = _time_figure("dynamic_range", "Image dynamic range", "peak / noise")
        self._line(dynamic, "image_dynamic_range")
        self.flag_heatmap = AntennaHeatmap(
            "flag_heatmap", "Flagged fraction per antenna and block", "Viridis256", "0.000",
            low=0.0, high=1.0)
        self.amp_heatmap = AntennaHeatmap(
            "solution_amp", "Calibration: gain amplitude per antenna and calibrator block",
            "Viridis256", "0.000")
        self.phase_heatmap = AntennaHeatmap(
            "solution_phase", "Calibration: gain phase (deg, vs refant) per antenna and "
            "calibrator block", "RdBu11", "0.0", low=-180.0, high=180.0)
        return [Div(text="<h2>Metrics</h2>"), row(latency, rate, sizing_mode="stretch_width"),
                row(backlog, stages, sizing_mode="stretch_width"),
                row(flags, snr, sizing_mode="stretch_width"),
                row(self.flag_heatmap.figure, self.amp_heatmap.figure,
                    self.phase_heatmap.figure, sizing_mode="stretch_width"),
                row(noise, dynamic, sizing_mode="stretch_width")]

    def _processing(self) -> list[Any]:
        blocks, self.sources["blocks"] = _table("blocks", [
            ("block_id", "block"), ("status", "files"), ("outcome", "outcome"),
            *((stage, stage) for stage in STAGES)], height=260)
        self.sources["blocks"].selected.on_change("indices", self._selected)
        failures, self.sources["failures"] = _table("failures", [
            ("at", "at (UTC)"), ("block_id", "block"), ("stage", "stage"),
            ("error", "error"), ("transient", "transient"), ("message", "cause"),
            ("input", "input")], height=200)
        self.detail = Div(name="block_detail", sizing_mode="stretch_width")
        self.sources["timeline"] = ColumnDataSource(
            {"stage": [], "start": [], "end": [], "colour": [], "label": []})
        timeline = figure(name="block_timeline", title="Stage timeline of the selected block",
                          y_range=list(STAGES[::-1]), x_axis_type="datetime", height=260,
                          sizing_mode="stretch_width", tools="save")
        timeline.hbar(y="stage", left="start", right="end", height=0.6, color="colour",
                      source=self.sources["timeline"])
        timeline.add_tools(HoverTool(tooltips="@stage: @label"))
        return [Div(text="<h2>Processing status</h2><p>Select a block for its detail.</p>"),
                blocks, row(self.detail, timeline, sizing_mode="stretch_width"),
                Div(text="<h3>Failures</h3>"), failures]

    def _science(self) -> list[Any]:
        self.science = Div(name="science", sizing_mode="stretch_width")
        candidates, self.sources["candidates"] = _table("candidates", [
            ("at", "at (UTC)"), ("name", "source"), ("kind", "kind"), ("metrics", "metrics")],
            height=150)
        self.sources["candidates"].selected.on_change("indices", self._candidate_selected)
        self.sources["light_curve"] = ColumnDataSource(
            {"t": [], "flux": [], "low": [], "high": []})
        self.sources["upper_limits"] = ColumnDataSource({"t": [], "limit": []})
        self.curve = _time_figure("light_curve", "Light curve", "flux density (mJy)")
        self.curve.segment("t", "low", "t", "high", source=self.sources["light_curve"],
                           color="#1f77b4")
        self.curve.scatter("t", "flux", source=self.sources["light_curve"], size=6,
                           color="#1f77b4", legend_label="normalised, 1σ")
        self.curve.scatter("t", "limit", source=self.sources["upper_limits"], size=8,
                           marker="inverted_triangle", color=COLOURS[RED],
                           legend_label="upper limit")
        return [Div(text="<h2>Science</h2>"), self.science,
                Div(text="<h3>Candidates</h3><p>Select one for its light curve (default: "
                    "the newest).</p>"),
                row(candidates, self.curve, sizing_mode="stretch_width")]

    # -- updates ----------------------------------------------------------------------------

    def _set_shared(self, name: str, data: dict[str, list[Any]]) -> None:
        """Show the page data's columns ``data`` unless they are the object shown already
        (the page data keeps unchanged columns' objects: no comparison per session)."""
        if self._sent.get(name) is not data:
            self.sources[name].data = data
            self._sent[name] = data

    def _set(self, name: str, data: dict[str, list[Any]]) -> None:
        """Replace this session's own data source's columns, only if they changed (each
        change is sent to the browser and redrawn there)."""
        if self._sent.get(name) != data:
            self.sources[name].data = data
            self._sent[name] = data

    def _candidate_selected(self, attr: str, old: list[int], new: list[int]) -> None:
        if new and self.shown is not None:
            self.candidate = self.sources["candidates"].data["name"][new[0]]
            self._show_light_curve(self.shown)

    def _selected(self, attr: str, old: list[int], new: list[int]) -> None:
        if new and self.shown is not None:
            self.block = self.sources["blocks"].data["block_id"][new[0]]
            self._show_block(self.shown)

    def refresh(self) -> None:
        """Show the latest page data if it is new (called by the periodic callback): what
        did not change since the last is not sent again."""
        data = self.page_data()
        previous = self.shown
        if data is previous:
            return
        self.shown = data
        self.health.text = data.health_html
        self.science.text = data.science_html
        for name, columns in data.columns.items():
            if name in self.sources:
                self._set_shared(name, columns)
        self.flag_heatmap.show(data.heatmaps["flag_heatmap"])
        self.amp_heatmap.show(data.heatmaps["solution_amp"])
        self.phase_heatmap.show(data.heatmaps["solution_phase"])
        if previous is None or data.blocks is not previous.blocks:
            self._show_block(data)
        if (previous is None or data.candidates is not previous.candidates
                or data.light_curves is not previous.light_curves):
            self._show_light_curve(data)

    def _show_block(self, data: PageData) -> None:
        block = next((b for b in data.blocks if b["block_id"] == self.block),
                     data.blocks[0] if data.blocks else None)
        if block is None:
            self.detail.text = "<h3>Block detail</h3><p>no blocks yet</p>"
            return
        lines = "".join(
            f"<tr><td>{stage}</td><td>{s['status']}</td><td>{s['attempts']}</td>"
            f"<td>{seconds_text(s['seconds'])}</td>"
            f"<td>{html.escape(s['error'] or '')}</td></tr>"
            for stage, s in sorted(block["stages"].items(),
                                   key=lambda kv: STAGES.index(kv[0])
                                   if kv[0] in STAGES else len(STAGES)))
        self.detail.text = (
            f"<h3>Block {html.escape(block['block_id'])}: {block['outcome']}</h3>"
            f"<p>{block['status']}, {block['n_files']} files, first seen "
            f"{utc(block['first_seen'])} UTC</p><table cellpadding='3'><tr><th>stage</th>"
            f"<th>status</th><th>attempts</th><th>s</th><th>error</th></tr>{lines}</table>")
        spans = [(stage, s) for stage, s in block["stages"].items()
                 if stage in STAGES and s["finished_at"] is not None and s["seconds"] is not None]
        self._set("timeline", {
            "stage": [stage for stage, _ in spans],
            "start": [1000.0 * (s["finished_at"] - s["seconds"]) for _, s in spans],
            "end": [1000.0 * s["finished_at"] for _, s in spans],
            "colour": [COLOURS[GREEN] if s["status"] == "done" else COLOURS[RED]
                       for _, s in spans],
            "label": [f"{s['status']} {s['seconds']:.1f} s" for _, s in spans]})

    def _show_light_curve(self, data: PageData) -> None:
        """The selected candidate's light curve, else the newest candidate's that has one
        (MJD -> the time axis; Jy -> mJy)."""
        name = self.candidate or next((str(c.get("name")) for c in data.candidates
                                       if c.get("name") in data.light_curves), None)
        curve = data.light_curves.get(name) if name else None
        if curve is None:
            self.curve.title.text = (f"Light curve: no measurements of {name}" if name else
                                     "Light curve: no candidate with measurements yet")
            self._set("light_curve", {"t": [], "flux": [], "low": [], "high": []})
            self._set("upper_limits", {"t": [], "limit": []})
            return
        t = [MS_PER_DAY * (mjd - MJD_UNIX_EPOCH) for mjd in curve["mjd"]]
        flux = [1e3 * f for f in curve["flux_jy"]]
        err = [1e3 * e for e in curve["err_jy"]]
        self.curve.title.text = f"Light curve of {name} ({len(t)} epochs)"
        self._set("light_curve", {"t": t, "flux": flux,
                                  "low": [f - e for f, e in zip(flux, err, strict=True)],
                                  "high": [f + e for f, e in zip(flux, err, strict=True)]})
        limits = [(x, 1e3 * u) for x, u in zip(t, curve["upper_limit_jy"], strict=True)
                  if math.isfinite(u)]
        self._set("upper_limits", {"t": [x for x, _ in limits], "limit": [u for _, u in limits]})


def make_document(doc: Document, config: PipelineConfig,
                  page_data: Callable[[], PageData]) -> None:
    """Populate one session's document (the Bokeh application's function handler);
    ``page_data``: the page data cache all sessions share."""
    request = doc.session_context.request if doc.session_context else None
    arguments = request.arguments if request is not None else {}
    page = DashboardPage(config, page_data, arguments)
    page.refresh()
    doc.title = "contimg-dask pipeline dashboard"
    doc.add_root(page.layout)
    doc.add_periodic_callback(page.refresh,
                              int(1000 * config.monitoring.dashboard.refresh_s))
