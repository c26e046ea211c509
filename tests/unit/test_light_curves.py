"""The dashboard's light-curve reader over photometry tables written as the stage writes
them: the values come back as written, in time order, with upper limits apart and
unnormalised epochs as NaN."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from contimg_dask.errors import UnreadableFileError
from contimg_dask.photometry.light_curves import read_light_curves
from contimg_dask.photometry.tables import PhotometryTables
from tests.dashboard_support import write_light_curves

REPO = Path(__file__).resolve().parents[2]


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


def test_a_damaged_table_is_named(tmp_path: Path) -> None:
    write_light_curves(tmp_path, {"J1234+4321": ([60640.1], [0.01], [0.001], [None])})
    damaged = PhotometryTables(tmp_path).measurement_path("epoch001", "v1")
    damaged.write_bytes(b"PAR1 cut short")
    with pytest.raises(UnreadableFileError, match=r"epoch001__v1\.parquet") as raised:
        read_light_curves(PhotometryTables(tmp_path), ["J1234+4321"])
    assert raised.value.file == str(damaged)


def test_the_dashboard_reader_imports_no_pandas_nor_photometry_stack(tmp_path: Path) -> None:
    """The dashboard process reads light curves without pandas, numba or scipy (~150 MiB
    resident): checked in a fresh interpreter, as ``contimg dashboard`` would read them."""
    write_light_curves(tmp_path / "products" / "photometry",
                       {"J1234+4321": ([60640.1, 60640.2], [0.01, 0.02], [0.001, 0.001],
                                       [None, None])})
    script = (
        "import sys\n"
        "from contimg_dask.config import load_config\n"
        "from contimg_dask.photometry.light_curves import light_curve_reader\n"
        f"config = load_config(environment='testing', environ={{}}, "
        f"overrides={{'paths.root': {str(tmp_path)!r}}})\n"
        "curves = light_curve_reader(config)(['J1234+4321'])\n"
        "print(curves['J1234+4321']['flux_jy'])\n"
        "print(sorted(m for m in ('pandas', 'numba', 'scipy', 'photutils') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.splitlines() == ["[0.01, 0.02]", "[]"]
