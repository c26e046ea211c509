"""The current candidates of a catalogue version: the metric candidates of the variability
table and the ESE candidates of a matched-dip search over every light curve (a batch over
all sources, vectorised; docs/variability.md). ESE candidates not announced before are
emitted as ``candidate`` events and remembered in the variability table."""

from __future__ import annotations

from typing import Any

import pandas as pd

from contimg_dask.config.schema import VariabilityConfig
from contimg_dask.errors import InputError
from contimg_dask.photometry.candidates import (
    ESE_COLUMNS,
    candidate_records,
    ese_candidates,
    metric_candidates,
    search_dips,
)
from contimg_dask.photometry.record import lightcurve_matrix
from contimg_dask.photometry.tables import PhotometryTables
from contimg_dask.state.protocol import StateStore


def current_candidates(tables: PhotometryTables, version: str, config: VariabilityConfig,
                       state: StateStore | None = None) -> list[dict[str, Any]]:
    """Every candidate (name, kind, metrics) of catalogue ``version``; new ESE candidates
    are announced in ``state``."""
    with tables.lock():
        frame = tables.variability(version)
        if frame is None:
            raise InputError(f"no variability table for catalogue version {version}",
                             file=tables.variability_path(version))
        names = frame["name"].to_numpy(str)
        mjd, flux, err = lightcurve_matrix(tables.measurements(version), names)
        ese = search_dips(mjd, flux, err, config)
        for key in ESE_COLUMNS:
            frame[key] = ese[key]
        masks = metric_candidates(frame, config)
        masks["ese"] = ese_candidates(ese, frame["n_epochs"].to_numpy(float), config)
        announced = pd.Series(frame["candidate_kinds"].astype(str))
        new_ese = masks["ese"] & ~announced.str.contains("ese", regex=False).to_numpy()
        frame.loc[new_ese, "candidate_kinds"] = frame.loc[new_ese, "candidate_kinds"] + "ese,"
        tables.write(tables.variability_path(version), frame)
    if state is not None:
        for record in candidate_records(names, {"ese": new_ese}, frame):
            state.emit("candidate", record)
    return candidate_records(names, masks, frame)


__all__ = ["current_candidates"]
