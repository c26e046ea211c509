"""Antenna x block heatmaps of the dashboard's Metrics view: one cell per (block, antenna),
blocks left to right (oldest first), antennas bottom to top in numeric order, the exact value
in the hover tooltip. Used for the flagged fraction of each block and for the calibration
solutions' amplitude, phase and SNR of each calibrator block (contimg_dask/monitoring/
snapshot.py gives the cells, page_data.py their columns, once for all sessions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure

#: Heatmap height, px: 96 antennas at 4-5 px a row.
HEIGHT = 440


def antenna_order(name: str) -> tuple[int, int | str]:
    """Sort key: numeric antenna names ("1".."117") by number, others after, by name."""
    return (0, int(name)) if name.isdigit() else (1, name)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def heatmap_columns(cells: Sequence[tuple[Any, ...]], column: int) -> dict[str, list[Any]]:
    """The heatmap's columns of ``cells`` (block id, antenna, values...): ``block``,
    ``antenna`` and ``value`` = ``cells[i][column]`` (NaN where missing or not finite)."""
    return {"block": [c[0] for c in cells], "antenna": [c[1] for c in cells],
            "value": [_number(c[column]) for c in cells]}


class AntennaHeatmap:
    """One heatmap (a figure named ``name``) and its data source (columns ``block``,
    ``antenna``, ``value``)."""

    def __init__(self, name: str, title: str, palette: str, value_format: str,
                 low: float | None = None, high: float | None = None) -> None:
        self.source = ColumnDataSource({"block": [], "antenna": [], "value": []})
        self.figure = figure(name=name, title=title, height=HEIGHT, sizing_mode="stretch_width",
                             x_range=[], y_range=[], tools="hover,save",
                             tooltips=f"block @block, antenna @antenna: @value{{{value_format}}}")
        self.figure.xaxis.visible = False
        self.figure.yaxis.axis_label = "antenna"
        self.figure.yaxis.major_label_text_font_size = "6pt"
        mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color="#dddddd")
        self.figure.rect("block", "antenna", 1, 1, source=self.source, line_color=None,
                         fill_color={"field": "value", "transform": mapper})
        self.figure.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
        self._sent: dict[str, list[Any]] | None = None

    def show(self, data: dict[str, list[Any]]) -> None:
        """Show ``data`` (:func:`heatmap_columns`); sends nothing when it is the object
        shown last (the page data keeps an unchanged heatmap's object)."""
        if data is self._sent:
            return
        blocks = list(dict.fromkeys(data["block"]))
        antennas = sorted(set(data["antenna"]), key=antenna_order)
        if blocks != list(self.figure.x_range.factors):
            self.figure.x_range.factors = blocks
        if antennas != list(self.figure.y_range.factors):
            self.figure.y_range.factors = antennas
        self.source.data = data
        self._sent = data
