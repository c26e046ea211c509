"""Variability candidates from the metrics, with the thresholds calibrated by simulation
(``photometry.variability.thresholds``, benchmarks/variability_thresholds.py; docs/variability.md):

- ``variable``: η >= η_thr(N) and V >= ``v_min``;
- ``two_epoch``: the largest |Vs| of a consecutive pair with |m| >= ``m_min`` >= Vs_thr(N);
- ``ese``: the matched box-dip statistic z >= z_thr(N) and the dip's depth >= ``ese_min_depth``;

each only for sources with at least ``min_epochs`` epochs. A candidate is the source's name,
its kind and its metrics (the ``candidate`` event's payload).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from contimg_dask.config.schema import VariabilityConfig
from contimg_dask.ops.variability import dip_search, threshold_at

METRIC_COLUMNS = ("n_epochs", "weighted_mean_jy", "eta", "v", "max_deviation", "vs_max",
                  "m_max", "vs_sig")
ESE_COLUMNS = ("ese_z", "ese_depth", "ese_start_mjd", "ese_width_days")


def metric_candidates(metrics: dict[str, NDArray] | pd.DataFrame, config: VariabilityConfig
                      ) -> dict[str, NDArray[np.bool_]]:
    """Masks of the ``variable`` and ``two_epoch`` candidates."""
    t = config.thresholds
    n = np.asarray(metrics["n_epochs"], float)
    enough = n >= config.min_epochs
    eta_thr = threshold_at(n, t.epochs, t.eta)
    vs_thr = threshold_at(n, t.epochs, t.vs)
    return {"variable": enough & (np.asarray(metrics["eta"]) >= eta_thr)
            & (np.abs(np.asarray(metrics["v"])) >= config.v_min),
            "two_epoch": enough & (np.asarray(metrics["vs_sig"]) >= vs_thr)}


def ese_candidates(ese: dict[str, NDArray], n_epochs: NDArray, config: VariabilityConfig
                   ) -> NDArray[np.bool_]:
    """Mask of the ``ese`` candidates from :func:`~contimg_dask.ops.variability.dip_search`'s
    output."""
    t = config.thresholds
    return ((n_epochs >= config.min_epochs)
            & (ese["ese_z"] >= threshold_at(n_epochs, t.epochs, t.ese_z))
            & (ese["ese_depth"] >= config.ese_min_depth))


def search_dips(mjd: NDArray, flux: NDArray, err: NDArray, config: VariabilityConfig
                ) -> dict[str, NDArray]:
    """:func:`~contimg_dask.ops.variability.dip_search` with the configured widths."""
    return dip_search(mjd, flux, err, np.asarray(config.ese_widths_days, float),
                      config.ese_min_inside)


def candidate_records(names: NDArray, masks: dict[str, NDArray], table: pd.DataFrame
                      ) -> list[dict[str, Any]]:
    """One record per (source, kind) flagged in ``masks``: name, kind and the metrics in
    ``table`` (rows aligned with ``names``)."""
    columns = [c for c in (*METRIC_COLUMNS, *ESE_COLUMNS) if c in table.columns]
    out = []
    for kind, mask in masks.items():
        for i in np.flatnonzero(mask):
            out.append({"name": str(names[i]), "kind": kind,
                        "metrics": {c: _json_number(table[c].iat[i]) for c in columns}})
    return out


def _json_number(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
