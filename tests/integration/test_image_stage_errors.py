"""Bad input and faults of the image stage: each a clear error naming the block and the
cause, classified transient or permanent, with no temporary or half-written product left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from contimg_dask.errors import ContimgError, ExternalToolError, InputError
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.image import ImageStage
from tests.helpers import make_config

# 10": the small preset's longest baselines reach |v| ~9,500 wavelengths (< 1/(2 cell)).
SMALL = {"imaging.imsize": 256, "imaging.cell_arcsec": 10.0, "imaging.niter": 10,
         "imaging.quicklook": False}


@pytest.fixture(scope="module")
def small_block(tmp_path_factory: pytest.TempPathFactory) -> BlockRef:
    root = tmp_path_factory.mktemp("block")
    config = make_config(root)
    (summary,) = simulate_blocks(config, root / "incoming", SimulationOptions(
        preset="small", rfi=False, gains=False))
    store = ingest_block([Path(f) for f in summary["files"]], root / "block.zarr", config)
    return BlockRef(read_geometry(store).block_id, store)


def _nothing_left(out: Path) -> None:
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())


def test_uncalibrated_block_is_refused(small_block: BlockRef, tmp_path: Path) -> None:
    config = make_config(tmp_path, **SMALL)
    with pytest.raises(InputError, match="not calibrated") as info:
        ImageStage(tmp_path / "out").run(small_block, config)
    assert info.value.block == small_block.block_id
    assert info.value.key == "imaging.require_calibration"
    assert not info.value.transient
    _nothing_left(tmp_path / "out")


def test_all_flagged_block_is_refused(small_block: BlockRef, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "flagged.zarr"
    shutil.copytree(small_block.store, store)
    flag_path = next(store.glob("*/FLAG"))
    flags = zarr.open_array(flag_path, mode="r+")
    flags[...] = np.ones(flags.shape, bool)
    config = make_config(tmp_path, **SMALL, **{"imaging.require_calibration": False})
    with pytest.raises(InputError, match="every visibility of the block is flagged") as info:
        ImageStage(tmp_path / "out").run(BlockRef(small_block.block_id, store), config)
    assert info.value.block == small_block.block_id
    _nothing_left(tmp_path / "out")


def test_cell_too_coarse_for_the_longest_baselines_is_refused(small_block: BlockRef,
                                                               tmp_path: Path) -> None:
    """60" cells put the uv grid's edge at 1,719 wavelengths, inside the small preset's
    baselines (up to ~9,500 wavelengths): refused before anything is written, with the
    largest cell that would do (the baselines' own |u|, |v| recomputed here)."""
    from contimg_dask.io.store.block_store import block_node, open_block

    config = make_config(tmp_path, **{**SMALL, "imaging.cell_arcsec": 60.0,
                                      "imaging.require_calibration": False})
    with pytest.raises(InputError, match="too coarse") as info:
        ImageStage(tmp_path / "out").run(small_block, config)
    assert info.value.key == "imaging.cell_arcsec"
    assert info.value.block == small_block.block_id
    assert not info.value.transient
    ds = block_node(open_block(small_block.store)).to_dataset(inherit=False)
    uvw = np.abs(ds["UVW_REPHASED"].values)  # the rephased group's UVWs (ICRS centre)
    largest = 1 / (2 * max(uvw[..., 0].max(), uvw[..., 1].max()) * ds.frequency.values.max()
                   / 299792458.0) * 180 / np.pi * 3600
    assert 8 < largest < 60
    assert f"use at most {largest:.2f}" in str(info.value)
    _nothing_left(tmp_path / "out")


def test_missing_wsclean_binary_is_named(small_block: BlockRef, tmp_path: Path) -> None:
    config = make_config(tmp_path, **SMALL, **{"imaging.require_calibration": False,
                                               "imaging.engine": "wsclean",
                                               "imaging.wsclean_binary": "wsclean-absent"})
    with pytest.raises(ExternalToolError, match="wsclean-absent") as info:
        ImageStage(tmp_path / "out").run(small_block, config)
    assert info.value.block == small_block.block_id
    assert info.value.key == "imaging.wsclean_binary"
    assert not info.value.transient
    _nothing_left(tmp_path / "out")


@pytest.mark.casa
def test_casa_time_out_is_transient_and_leaves_nothing(small_block: BlockRef,
                                                       tmp_path: Path) -> None:
    """A CASA process that does not finish in casa.task_timeout_s: a transient error naming
    the block; the temporary MS and images are removed; an earlier product stays as it was."""
    out = tmp_path / "out"
    earlier = out / small_block.block_id.replace(":", "") / "earlier.fits"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier product")
    (earlier.parent / f"{earlier.parent.name}.image.json").write_text("{}\n")  # its sidecar
    config = make_config(tmp_path, **SMALL, **{"imaging.require_calibration": False,
                                               "casa.task_timeout_s": 2.0})
    with pytest.raises(ContimgError, match="timed out") as info:
        ImageStage(out).run(small_block, config)
    assert info.value.transient
    assert info.value.block == small_block.block_id
    assert sorted(p.name for p in out.iterdir()) == [earlier.parent.name]
    assert earlier.read_bytes() == b"an earlier product"


@pytest.mark.slow
@pytest.mark.casa
def test_contimg_image_json_lists_the_products(small_block: BlockRef, tmp_path: Path) -> None:
    """``contimg image STORE --out DIR --json``, run as a user runs it: a JSON list of the
    products (kind, path, checksum) that exist where it says; the sidecar's command
    reproduces the run's imaging settings."""
    import json
    import os
    import subprocess
    import sys

    sets = [f"--set=imaging.{k.split('.')[1]}={v}" for k, v in SMALL.items()]
    exe = Path(sys.executable).with_name("contimg")
    run = subprocess.run(
        [str(exe), "--env", "testing", f"--set=paths.root={tmp_path}", *sets,
         "--set=imaging.require_calibration=false", "image", str(small_block.store), "--out",
         str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=900,
        check=False, env={**os.environ})
    assert run.returncode == 0, run.stderr
    products = json.loads(run.stdout)
    kinds = [p["kind"] for p in products]
    assert {"image", "image_pbcor", "residual", "pb", "model"} <= set(kinds)
    for product in products:
        assert Path(product["path"]).exists(), product
    sidecar = json.loads(next(Path(p["path"]) for p in products
                              if p["kind"] == "provenance").read_text())
    assert "--set imaging.require_calibration=false" in sidecar["provenance"]["command"]
    assert "--set imaging.imsize=256" in sidecar["provenance"]["command"]
    failed = subprocess.run([str(exe), "--env", "testing", f"--set=paths.root={tmp_path}",
                             "image", str(small_block.store), "--out", str(tmp_path / "o2")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode == 2
    assert "not calibrated" in failed.stderr and small_block.block_id in failed.stderr
