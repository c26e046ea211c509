"""CASA works out of the box, offline, in its own processes, and knows where DSA-110 is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contimg_dask.casa import run_casa
from contimg_dask.casa.tasks import listobs_summary
from contimg_dask.coords.time import unix_to_mjd_seconds
from contimg_dask.errors import CasaError
from tests.helpers import make_config, read_truth, read_with_true_phase_centres

pytestmark = pytest.mark.casa


def test_casa_check_in_a_clean_environment(tmp_path: Path) -> None:
    """A fresh HOME, no CASA configuration anywhere: CASA finds its measures in the package,
    places OVRO_MMA and DSA_110 at our array reference, and writes nothing into HOME or the
    working directory."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASA", "CONTIMG_"))}
    env.update(HOME=str(home), CONTIMG_ENV="testing", CONTIMG_PATHS__ROOT=str(tmp_path / "data"))
    exe = Path(sys.executable).with_name("contimg")
    run = subprocess.run([str(exe), "casa-check"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["ok"]
    assert report["iers_table"].startswith(str(tmp_path / "data" / "cache"))
    for name in ("OVRO_MMA", "DSA_110"):
        assert report["observatories"][name]["offset_from_array_reference_m"] < 1.0
    assert list(home.iterdir()) == []  # nothing written into the user's home
    assert list(work.iterdir()) == []  # no casa-*.log in the working directory
    assert list((tmp_path / "data" / "logs" / "casa").glob("casa-*.log"))


def test_listobs_reads_an_ms_of_a_simulated_block(small_blocks: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    truth = read_truth(next(small_blocks.glob("2026-03-21T08:00:00_truth.h5")))
    uv = read_with_true_phase_centres(small_blocks / truth["files"]["0"], truth)
    ra, dec = truth["phase_centre_icrs_ra_rad"][12], truth["phase_centre_icrs_dec_rad"][12]
    uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name="DSA_FIELD", use_ant_pos=True)
    ms = tmp_path / "block.ms"
    uv.write_ms(str(ms))

    summary = run_casa(make_config(tmp_path), listobs_summary, str(ms))
    assert summary["numrecords"] == 78 * 24
    assert summary["nfields"] == 1
    direction = summary["field_0"]["direction"]
    assert direction["refer"] == "ICRS"
    assert np.mod(direction["m0"]["value"], 2 * np.pi) == pytest.approx(ra, abs=1e-9)
    assert direction["m1"]["value"] == pytest.approx(dec, abs=1e-9)
    start_mjd_s = unix_to_mjd_seconds(truth["time_unix"][0] - 12.884902 / 2)
    assert summary["BeginTime"] * 86400 == pytest.approx(start_mjd_s, abs=1e-3)
    assert summary["IntegrationTime"] == pytest.approx(24 * 12.884902, abs=1e-3)
    assert list(home.iterdir()) == []


def test_casa_failures_are_contained(tmp_path: Path) -> None:
    with pytest.raises(CasaError) as info:
        run_casa(make_config(tmp_path), listobs_summary, str(tmp_path / "missing.ms"))
    assert info.value.transient


def test_casa_time_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"casa.task_timeout_s": 0.5})
    with pytest.raises(CasaError, match="timed out"):
        run_casa(config, listobs_summary, str(tmp_path / "missing.ms"))
