"""The ``contimg`` console command, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def contimg(*args: str, cwd: Path, env: dict | None = None,
            timeout_s: float = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("contimg")
    full_env = {**os.environ, "CONTIMG_ENV": "testing", **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


@pytest.mark.slow
def test_ingest_rephase_export_commands(small_blocks: Path, tmp_path: Path) -> None:
    """Each command's product, read back: the store holds the block's 16 subbands, the
    rephase goes to the centre it prints, and every export carries the store's rephased
    visibilities, frequencies and that phase centre, as pyuvdata reads them."""
    import numpy as np
    from pyuvdata import UVData

    from tests.helpers import group_visibilities_of, read_truth

    run = contimg("ingest", str(small_blocks), "--block", "2026-03-21T08:00:00", "--out",
                  "b.zarr", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("b.zarr")
    run = contimg("rephase", "b.zarr", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    printed = re.search(r"rephased \S*b\.zarr to ICRS \((-?[\d.]+), (-?[\d.]+)\) deg", run.stdout)
    assert printed, run.stdout
    ra, dec = np.radians([float(printed[1]), float(printed[2])])
    truth = read_truth(sorted(small_blocks.glob("*_truth.h5"))[0])
    mid = len(truth["time_unix"]) // 2  # rephased to the block's middle: within a few arcmin
    assert abs(dec - truth["phase_centre_icrs_dec_rad"][mid]) < np.radians(0.1)
    expected = group_visibilities_of(tmp_path / "b.zarr")
    n_t, n_bl, n_f, n_p = expected.shape
    assert n_f == 16 * 8
    for fmt in ("ms", "uvfits", "uvh5"):
        run = contimg("export", "b.zarr", "--format", fmt, "--out", f"b.{fmt}", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        uv = UVData.from_file(str(tmp_path / f"b.{fmt}"))
        order = np.lexsort((uv.ant_2_array, uv.ant_1_array, uv.time_array))
        np.testing.assert_allclose(uv.data_array[order].reshape(n_t, n_bl, n_f, n_p), expected,
                                   rtol=1e-5, atol=1e-5, err_msg=fmt)
        assert uv.Nfreqs == n_f and np.all(np.diff(uv.freq_array) > 0), fmt
        (entry,) = uv.phase_center_catalog.values()
        assert abs(entry["cat_lon"] - ra) < 1e-7 and abs(entry["cat_lat"] - dec) < 1e-7, fmt
    missing = contimg("ingest", str(small_blocks), "--block", "2020-01-01T00:00:00", "--out",
                      "x.zarr", cwd=tmp_path)
    assert missing.returncode == 2 and "no block 2020-01-01T00:00:00" in missing.stderr
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.slow
def test_simulate_then_blocks(tmp_path: Path) -> None:
    run = contimg("simulate", "out/", "--preset", "small", "--blocks", "2", "--seed", "1",
                  cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == 2
    listing = contimg("blocks", "out/", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines() if line.startswith("2026")]
    assert [row[1:4] for row in rows] == [["complete", "16/16", "-"]] * 2, listing.stdout
    # The block ids the simulator printed are the blocks discovery lists.
    assert [row[0] for row in rows] == [line.split()[0] for line in run.stdout.splitlines()]

    gap = contimg("simulate", "gap/", "--preset", "small", "--blocks", "2", "--seed", "1",
                  "--missing", "07", cwd=tmp_path)
    assert gap.returncode == 0, gap.stderr
    report = json.loads(contimg("blocks", "gap/", "--json", cwd=tmp_path).stdout)
    assert [b["missing_subbands"] for b in report["blocks"]] == [[7], [7]]
    assert [b["status"] for b in report["blocks"]] == ["incomplete", "incomplete"]
    text = contimg("blocks", "gap/", cwd=tmp_path).stdout
    rows = [line.split() for line in text.splitlines() if line.startswith("2026")]
    assert [row[1:4] for row in rows] == [["incomplete", "15/16", "07"]] * 2, text


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    run = contimg("--set", "telescope.sefd_jy=-3", "config", cwd=tmp_path)
    assert run.returncode == 2
    assert "telescope.sefd_jy" in run.stderr and "greater than 0" in run.stderr
    assert "Traceback" not in run.stderr
    run = contimg("config", cwd=tmp_path, env={"CONTIMG_BLOKS__X": "1"})
    assert run.returncode == 2 and "CONTIMG_BLOKS__X" in run.stderr


def test_config_prints_validated_yaml(tmp_path: Path) -> None:
    run = contimg("config", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "environment: testing" in run.stdout and "sefd_jy: 6500.0" in run.stdout


def test_blocks_on_missing_directory(tmp_path: Path) -> None:
    run = contimg("blocks", "nowhere", cwd=tmp_path)
    assert run.returncode == 2 and "not a directory" in run.stderr and "nowhere" in run.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_demo_runs_on_a_local_dask_cluster(tmp_path: Path) -> None:
    # The whole pipeline on two blocks, 512 x 10" images included: ~5-10 min on 2 cores.
    run = contimg("demo", "--out", "demo", cwd=tmp_path, timeout_s=1800)
    assert run.returncode == 0, run.stderr
    # No warnings on the user's terminal: zarr's, pyuvdata's and astropy's notes are
    # silenced where they arise, and the demo raises none of its own. Python prints a
    # warning as "<file>:<line>: <Category>: <message>" (issue 11: a plain demo printed 28).
    warned = [line for line in run.stderr.splitlines()
              if re.match(r"\S+:\d+: \w*Warning: ", line)]
    assert warned == [], warned
    assert "Dask dashboard: http://127.0.0.1:" in run.stdout
    assert run.stdout.count(": complete, 16 subbands") == 2
    discovery = json.loads((tmp_path / "demo" / "blocks.json").read_text())
    assert [b["status"] for b in discovery["blocks"]] == ["complete", "complete"]
    stores = sorted((tmp_path / "demo" / "stores").glob("*.zarr"))
    assert len(stores) == 2
    ms = sorted((tmp_path / "demo" / "products").glob("*.ms"))
    assert len(ms) == 2
    # One PB-corrected image per block, printed, each with its restoring beam and a
    # dynamic range (peak / off-source noise) above 10: measured 1,529 (the calibrator's
    # block) and 15 (the next: the calibrator 1.3 deg away, outside the 1.4 deg image, its
    # sidelobes uncleaned) with the small preset's 12 antennas on 512 x 10" (25 and 27 on
    # the former 256 x 60" grid, whose cells put the longest baselines off the uv grid); a
    # broken calibration or imaging leaves noise.
    import numpy as np
    from astropy.io import fits

    images = sorted((tmp_path / "demo" / "products" / "images").glob("*/*.image.pbcor.fits"))
    assert len(images) == 2 and all(str(i) in run.stdout for i in images)
    for image in images:
        header = fits.getheader(image)
        assert header["BMAJ"] > 0
        assert header["CT_DR"] > 10
    assert "calibrator 3C138" in run.stdout
    # The hourly mosaic holds both blocks; each block's photometry table is written.
    assert "mosaic (2 block(s))" in run.stdout
    assert len(list((tmp_path / "demo" / "products" / "photometry").rglob("*.parquet"))) >= 2
    from casacore.tables import table
    from xradio.measurement_set import open_processing_set
    from xradio.measurement_set.schema import VisibilityXds
    from xradio.schema.check import check_dataset

    for store in stores:
        processing_set = open_processing_set(str(store))
        node = processing_set[next(iter(processing_set.children))].to_dataset(inherit=False)
        # Rephasing and calibration applied on the fly (the defaults): UVWs and gains
        # stored, visibilities not duplicated.
        assert set(node.attrs["data_groups"]) == {"base"}
        assert set(node.attrs["contimg"]["derived_groups"]) == {"rephased"}
        assert "UVW_REPHASED" in node and "VISIBILITY_REPHASED" not in node
        assert node.attrs["contimg"]["calibration"]["calibrator"] == "3C138"
        assert not check_dataset(node, VisibilityXds).issues

    # Calibrated: CORRECTED_DATA is finite and differs from DATA by the gains (tens of
    # percent; an uncalibrated copy would differ by nothing).
    with table(str(ms[1]), ack=False) as main_table:
        data = main_table.getcol("DATA", nrow=5000)
        corrected = main_table.getcol("CORRECTED_DATA", nrow=5000)
        flags = main_table.getcol("FLAG", nrow=5000)
    good = ~flags & (np.abs(data) > 0)
    assert good.any() and np.isfinite(corrected[good]).all()
    assert np.median(np.abs(corrected[good] / data[good] - 1)) > 0.05
