"""Products of a collection in the archive: the hourly mosaic, recorded again by every
block's run of the real mosaic stage (synthetic block images, contimg_dask/testing/
mosaic_images.py), is one product, indexed from its inputs' entries (span, strip) and its
own header (centre), with every input image in its provenance and the configuration it was
made with retrievable; ``archive search --kind mosaic`` finds it. On SQLite and on a real
redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from astropy.io import fits

from contimg_dask.archive.catalogue import sync_index
from contimg_dask.archive.index import open_archive_index
from contimg_dask.archive.records import ArchiveEntry, SearchQuery, collection_of
from contimg_dask.cli.main import main
from contimg_dask.config import PipelineConfig, resolved_config
from contimg_dask.imaging.mosaic_inputs import block_time_unix
from contimg_dask.io.system.checksum import file_sha256
from contimg_dask.ops.mosaic import GaussianBeam
from contimg_dask.stages.contract import BlockRef, Product, StageResult, provenance_of
from contimg_dask.stages.layout import images_dir
from contimg_dask.stages.mosaic import MosaicStage
from contimg_dask.state import open_state_store
from contimg_dask.testing.mosaic_images import block_ids, strip

SMALL = {"imsize": 120, "cell_deg": 0.03, "beam": GaussianBeam(0.12, 0.08, 20.0)}
DEC, BLOCK_S = 16.1, 309.0


def _record(state, block_id: str, result: StageResult) -> None:
    state.enqueue(block_id, result.stage)
    lease = state.claim("archive-test", 60.0, [result.stage])
    assert (lease.block_id, lease.stage) == (block_id, result.stage)
    state.complete(lease, result)


def _image_entry(record, ra: float, dec: float) -> ArchiveEntry:
    """The archive entry of an image as an earlier sync left it (its block store is not
    part of this test): a block's span from its id, the image's centre."""
    start = block_time_unix(record.block_id)
    return ArchiveEntry(
        product_id=f"{record.block_id}/image", kind="image", path=record.path,
        block_id=record.block_id, collection=collection_of("image", DEC, start, record.block_id),
        ra_deg=ra, dec_deg=dec, strip_dec_deg=DEC, time_start=start,
        time_end=start + BLOCK_S, n_antennas=96, stage="image",
        checksum=file_sha256(Path(record.path)),
        provenance={**record.provenance, "token": record.token,
                    "recorded_at": record.recorded_at})


def test_hourly_mosaic_is_one_product_of_its_collection(
        store_config: Callable[..., PipelineConfig], cli_settings: list[str],
        capsys: pytest.CaptureFixture) -> None:
    config = store_config(**{"mosaic.tile_pixels": 128})
    ids = block_ids(2)
    dirs = strip(images_dir(config), 2, 30.0, DEC, seed=5, **SMALL)
    images = [next(d.glob("*.image.fits")) for d in dirs]
    state, index = open_state_store(config), open_archive_index(config)
    try:
        for block_id, image in zip(ids, images, strict=True):
            _record(state, block_id, StageResult("image", block_id, (
                Product("image", image),), provenance_of(config, [f"/s/{block_id}.zarr"])))
        index.add([_image_entry(r, fits.getheader(r.path)["CRVAL1"],
                                fits.getheader(r.path)["CRVAL2"])
                   for r in state.products(kind="image")])
        stage = MosaicStage()
        for block_id in ids:
            _record(state, block_id, stage.run(BlockRef(block_id, Path("/s/unused.zarr")),
                                               config))
        assert len(state.products(kind="mosaic")) == 2  # each block's run recorded it
        report = sync_index(state, index, config)
        assert report["skipped"] == []
        (found,) = index.search(SearchQuery(kind="mosaic"))
        entry = index.get(found.product_id)
    finally:
        index.close()
    mosaic = state.products(kind="mosaic")[-1]
    assert entry.product_id == f"mosaic/{mosaic.collection}" == "mosaic/mosaic-2026-03-21T080000"
    assert entry.block_id is None and entry.path == mosaic.path
    assert entry.collection == "products/mosaic/+16.1/2026-03-21"
    assert sorted(entry.provenance["inputs"]) == sorted(map(str, images))
    assert entry.provenance["input_checksums"] == {str(i): file_sha256(i) for i in images}
    assert entry.provenance["recorded_by_block"] == ids[-1]
    # The span of its inputs; the centre of its header; the stage's checksum of its bytes.
    assert entry.time_start == block_time_unix(ids[0])
    assert entry.time_end == block_time_unix(ids[1]) + BLOCK_S
    assert entry.strip_dec_deg == DEC and entry.n_antennas == 96
    header = fits.getheader(entry.path)
    assert (entry.ra_deg, entry.dec_deg) == (header["CRVAL1"] % 360.0, header["CRVAL2"])
    assert entry.checksum == file_sha256(Path(entry.path))
    # The configuration it was made with, kept by the state store under its hash.
    assert state.configuration(entry.provenance["config_hash"]) == resolved_config(config)
    state.close()
    assert main([*cli_settings, "archive", "search", "--kind", "mosaic", "--cone",
                 str(entry.ra_deg), str(entry.dec_deg), "0.5", "--json"]) == 0
    assert [e["product_id"] for e in json.loads(capsys.readouterr().out)] == [
        entry.product_id]
    assert main([*cli_settings, "archive", "config", entry.product_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == resolved_config(config)
    # Served as FITS (the product itself) and as a PNG quick-look.
    for fmt in ("fits", "png"):
        assert main([*cli_settings, "archive", "get", entry.product_id, "--format", fmt,
                     "--json"]) == 0
        served = json.loads(capsys.readouterr().out)
        head = Path(served["path"]).read_bytes()[:8]
        assert head == (b"SIMPLE  " if fmt == "fits" else b"\x89PNG\r\n\x1a\n"), served
