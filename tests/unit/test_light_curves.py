"""The dashboard's light-curve reader over photometry tables written as the stage writes
them: the values come back as written, in time order, with upper limits apart and
unnormalised epochs as NaN."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from contimg_dask.photometry.light_curves import read_light_curves
from contimg_dask.photometry.tables import PhotometryTables
from tests.dashboard_support import write_light_curves


def test_light_curves_as_written(tmp_path: Path) -> None:
    write_light_curves(tmp_path, {
        "J1234+4321": ([60640.2, 60640.1, 60640.3], [0.010, 0.012, 0.002],
                       [0.001, 0.001, 0.001], [None, None, 0.005]),
        "J2222+2222": ([60640.1], [0.5], [0.01], [None])})
    tables = PhotometryTables(tmp_path)
    unnormalised = pd.read_parquet(tables.measurement_path("epoch000", "v1"))
    unnormalised["name"], unnormalised["mjd"], unnormalised["flags"] = "J0000+0000", 60640.0, 2
    tables.write(tables.measurement_path("epoch009", "v1"), unnormalised)

    curves = read_light_curves(tables, ["J1234+4321", "J0000+0000", "J9999+9999"])

    assert set(curves) == {"J1234+4321", "J0000+0000"}  # J2222 not asked, J9999 unmeasured
    curve = curves["J1234+4321"]
    assert curve["mjd"] == [60640.1, 60640.2, 60640.3]
    assert curve["flux_jy"] == [0.012, 0.010, 0.002]
    assert curve["err_jy"] == [0.001, 0.001, 0.001]
    assert [math.isnan(u) for u in curve["upper_limit_jy"]] == [True, True, False]
    assert curve["upper_limit_jy"][2] == 0.005
    assert math.isnan(curves["J0000+0000"]["flux_jy"][0])
    assert read_light_curves(PhotometryTables(tmp_path / "none"), ["J1234+4321"]) == {}
