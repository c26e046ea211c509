"""The ``mosaic`` stage and ``contimg mosaic`` on synthetic block images
(contimg_dask/testing/mosaic_images.py):

- adding blocks one by one (incremental accumulators) gives the mosaic built from all of them
  at once; running again on the same block changes nothing; a changed image is rebuilt;
- a bad block leaves the existing mosaic exactly as it was, with no temporaries;
- bad input to ``contimg mosaic`` (incompatible WCS, missing PB or noise, NaN image, empty
  selection): a clear error naming the image, nothing at the output path;
- the Dask tasks run on a real distributed cluster (worker processes) with the same result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from contimg_dask.cli.main import main
from contimg_dask.errors import InputError
from contimg_dask.imaging.mosaic_build import MosaicSettings
from contimg_dask.imaging.mosaic_inputs import Selection, select_inputs
from contimg_dask.imaging.mosaic_writer import new_mosaic
from contimg_dask.ops.mosaic import GaussianBeam, MosaicGrid
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.layout import images_dir, mosaics_dir
from contimg_dask.stages.mosaic import MosaicStage
from contimg_dask.testing.mosaic_images import block_ids, strip, write_block_image
from tests.helpers import make_config

SMALL = {"imsize": 200, "cell_deg": 0.02, "beam": GaussianBeam(0.12, 0.08, 20.0)}
DEC = 16.1


def _config(root: Path):
    return make_config(root, **{"mosaic.tile_pixels": 128})


def _block(block_id: str) -> BlockRef:
    return BlockRef(block_id, Path("/nonexistent/block.zarr"))  # the stage reads images only


def _batch(config, images: list[Path], grid: MosaicGrid, work: Path) -> np.ndarray:
    inputs = select_inputs(images, Selection())
    work.mkdir()
    outcome = new_mosaic(inputs, MosaicSettings.from_config(config.mosaic), work, "batch",
                         provenance={}, grid=grid, quicklook=False)
    return fits.getdata(outcome.files["mosaic"])


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_incremental_mosaic_equals_the_batch_mosaic(tmp_path: Path) -> None:
    config = _config(tmp_path)
    dirs = strip(images_dir(config), 3, 30.0, DEC, seed=5, **SMALL)
    ids = block_ids(3)
    stage = MosaicStage()
    results = [stage.run(_block(b), config) for b in ids]
    assert [r.figures["incremental"] for r in results] == [False, True, True]
    last = results[-1]
    kinds = {p.kind for p in last.products}
    assert {"mosaic", "noise", "png", "accumulators", "provenance"} <= kinds
    assert all(p.path.exists() for p in last.products)
    assert last.product("mosaic").path.parent == mosaics_dir(config) / "mosaic-2026-03-21T080000"
    assert sorted(last.provenance.inputs) == sorted(str(next(d.glob("*.image.fits")))
                                                    for d in dirs)
    document = json.loads(last.product("provenance").path.read_text())
    assert [i["block_id"] for i in document["inputs"]] == ids
    grid = MosaicGrid.from_dict(document["grid"])
    incremental = fits.getdata(last.product("mosaic").path)
    batch = _batch(config, dirs, grid, tmp_path / "batch")
    assert np.array_equal(np.isfinite(incremental), np.isfinite(batch))
    np.testing.assert_allclose(incremental, batch, rtol=1e-5, atol=1e-8)
    # The grid fixed by the first block holds the whole hour: the third block is all in.
    noise = fits.getdata(last.product("noise").path)
    assert np.isfinite(noise).sum() > 0.9 * document["figures"]["covered_pixels"]
    assert document["figures"]["covered_pixels"] == np.isfinite(noise).sum()
    # Again on the same block: nothing changes.
    before = _tree(last.product("mosaic").path.parent)
    again = stage.run(_block(ids[2]), config)
    assert again.figures["unchanged"] is True
    assert _tree(last.product("mosaic").path.parent) == before
    # A re-imaged block: the mosaic is rebuilt from the current images.
    shutil.rmtree(dirs[1])
    write_block_image(images_dir(config), ids[1], 30.0 + 1.2935, DEC, seed=99, **SMALL)
    rebuilt = stage.run(_block(ids[1]), config)
    assert rebuilt.figures["incremental"] is False and rebuilt.figures["n_inputs"] == 3
    np.testing.assert_allclose(fits.getdata(rebuilt.product("mosaic").path),
                               _batch(config, dirs, grid, tmp_path / "batch2"), rtol=1e-5,
                               atol=1e-8)


def test_a_bad_block_leaves_the_mosaic_as_it_was(tmp_path: Path) -> None:
    config = _config(tmp_path)
    dirs = strip(images_dir(config), 3, 30.0, DEC, seed=7, **SMALL)
    ids = block_ids(3)
    stage = MosaicStage()
    for block_id in ids[:2]:
        stage.run(_block(block_id), config)
    mosaic_dir = mosaics_dir(config) / "mosaic-2026-03-21T080000"
    before = _tree(mosaic_dir)
    image = next(dirs[2].glob("*.image.fits"))
    with fits.open(image, mode="update") as hdul:
        hdul[0].data[:] = np.nan
    with pytest.raises(InputError, match="NaN everywhere") as caught:
        stage.run(_block(ids[2]), config)
    assert caught.value.file == str(image) and caught.value.block == ids[2]
    assert _tree(mosaic_dir) == before
    assert sorted(p.name for p in mosaics_dir(config).iterdir()) == [
        ".mosaic-2026-03-21T080000.lock", "mosaic-2026-03-21T080000"]


def _break(kind: str, directory: Path) -> Path:
    """Damage one block's products in the way ``kind`` says; returns the image."""
    image = next(directory.glob("*.image.fits"))
    pb = next(directory.glob("*.pb.fits"))
    if kind == "galactic":
        with fits.open(image, mode="update") as hdul:
            hdul[0].header["CTYPE1"], hdul[0].header["CTYPE2"] = "GLON-SIN", "GLAT-SIN"
    elif kind == "pb_grid":
        with fits.open(pb, mode="update") as hdul:
            hdul[0].header["CRVAL1"] += 1.0
    elif kind == "no_pb":
        pb.unlink()
    elif kind == "no_noise":
        next(directory.glob("*.image.json")).unlink()
    elif kind == "nan":
        with fits.open(image, mode="update") as hdul:
            hdul[0].data[:] = np.nan
    return image


@pytest.mark.parametrize(("kind", "message"), [
    ("galactic", "incompatible WCS"), ("pb_grid", "incompatible WCS: the primary beam"),
    ("no_pb", "no primary beam"), ("no_noise", "no usable measured noise"),
    ("nan", "NaN everywhere"), ("empty", "empty selection")])
def test_bad_input_is_named_and_nothing_is_written(tmp_path: Path, kind: str, message: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    dirs = strip(tmp_path / "images", 3, 30.0, DEC, seed=3, **SMALL)
    named = str(tmp_path / "images") if kind == "empty" else str(_break(kind, dirs[1]))
    out = tmp_path / "out"
    out.mkdir()
    extra = ["--ra-min", "100", "--ra-max", "101"] if kind == "empty" else []
    code = main(["--env", "testing", "--set", f"paths.root={tmp_path}", "mosaic",
                 str(tmp_path / "images"), "--out", str(out / "m.fits"), *extra])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err and named in err, err
    assert list(out.iterdir()) == []


def test_cli_json_lists_the_products(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dirs = strip(tmp_path / "images", 3, 359.0, DEC, seed=4, **SMALL)
    out = tmp_path / "out" / "strip.fits"
    code = main(["--env", "testing", "--set", f"paths.root={tmp_path}", "mosaic",
                 str(tmp_path / "images"), "--out", str(out), "--json",
                 "--blocks", ",".join(block_ids(3)[:2])])
    assert code == 0
    products = {p["kind"]: Path(p["path"]) for p in json.loads(capsys.readouterr().out)}
    assert products["mosaic"] == out and products["noise"] == out.with_name("strip.noise.fits")
    assert all(p.exists() for p in products.values())
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "strip.fits", "strip.mosaic.json", "strip.noise.fits", "strip.png"]
    document = json.loads(products["provenance"].read_text())
    assert [Path(i["image"]).parent for i in document["inputs"]] == dirs[:2]
    assert document["provenance"]["inputs"] == [i["image"] for i in document["inputs"]]
    assert document["provenance"]["command"].startswith("contimg --env testing mosaic ")
    assert document["provenance"]["versions"]["reproject"] != "absent"
    assert fits.getheader(out)["CT_NIN"] == 2


@pytest.mark.slow
def test_dask_cluster_gives_the_threaded_result(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    config = _config(tmp_path)
    strip(tmp_path / "images", 3, 30.0, DEC, seed=8, **SMALL)
    inputs = select_inputs([tmp_path / "images"], Selection())
    settings = MosaicSettings.from_config(config.mosaic)
    results = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        for name, c in (("threads", None), ("cluster", client)):
            (tmp_path / name).mkdir()
            outcome = new_mosaic(inputs, settings, tmp_path / name, name, provenance={},
                                 client=c, quicklook=False)
            results[name] = fits.getdata(outcome.files["mosaic"])
    np.testing.assert_array_equal(results["threads"], results["cluster"])
