"""The examples run as a user runs them (a fresh interpreter each), on small blocks, and
what they print agrees with an independent reading of the same data (h5py on the raw files,
astropy on the image)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO_ROOT


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / script), *args],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _raw_mean_amplitude(files: list[Path]) -> float:
    """Mean |V| of the unflagged visibilities of the raw subband files (h5py)."""
    total, count = 0.0, 0
    for path in files:
        with h5py.File(path, "r") as f:
            vis = f["Data"]["visdata"][()]
            good = ~f["Data"]["flags"][()]
        total += float(np.abs(vis[good]).sum())
        count += int(good.sum())
    return total / count


def test_basic_example_processes_a_directory(small_blocks: Path, tmp_path: Path) -> None:
    run = _run("basic.py", str(small_blocks), "--root", str(tmp_path), "--env", "testing",
               "--stages", "ingest", cwd=tmp_path)
    done = re.findall(r"^(\S+): done \((\w+)\), 1 products$", run.stdout, re.M)
    assert len(done) == 2, run.stdout
    stores = re.findall(r"block_store\s+(\S+)", run.stdout)
    assert len(stores) == 2 and all(Path(s).is_dir() for s in stores)
    from contimg_dask.io.store.block_view import open_block_view

    for (block_id, _), store in zip(done, stores, strict=True):
        view = open_block_view(store)
        raw = sorted(small_blocks.glob(f"{block_id[:16]}*_sb*.hdf5"))
        assert len(view.provenance["subbands"]) == 16 == len(raw)
        with h5py.File(raw[0], "r") as f:
            n_times = int(np.asarray(f["Header"]["Ntimes"][()]).item())
        assert view.dataset.sizes["time"] == n_times


@pytest.mark.slow
def test_advanced_example_client_session(tmp_path: Path) -> None:
    run = _run("advanced.py", "--root", str(tmp_path), "--env", "testing", cwd=tmp_path)
    assert "Dask dashboard: http://127.0.0.1:" in run.stdout
    assert re.search(r": done, stages \{'ingest': 'done', 'image': 'done'\}", run.stdout)
    mean = float(re.search(r"mean unflagged amplitude ([\d.]+) Jy", run.stdout).group(1))
    raw = sorted((tmp_path / "incoming").glob("*_sb*.hdf5"))
    assert len(raw) == 16
    assert mean == pytest.approx(_raw_mean_amplitude(raw), rel=2e-3)
    image = next((tmp_path / "products" / "images").glob("*/*.image.pbcor.fits"))
    from astropy.io import fits

    data = fits.getdata(image).squeeze()
    peak = re.search(r"peak ([-\d.]+) Jy/beam", run.stdout)
    assert peak and float(peak.group(1)) == pytest.approx(np.nanmax(data), abs=1e-3)
    assert "384 x 384 pixels of 10 arcsec" in run.stdout
