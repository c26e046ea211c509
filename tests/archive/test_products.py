"""The archive on a real block: simulated (3C147 transiting), run through the stages with
their results recorded in the state store (SQLite), indexed, searched, converted to every
visibility format (read back with pyuvdata), served again from the cache, reproduced, and
invalidated when the block store changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from pyuvdata import UVData

from contimg_dask.archive.catalogue import sync_index
from contimg_dask.archive.conversions import get_product
from contimg_dask.archive.index import open_archive_index
from contimg_dask.archive.reproduce import reproduce
from contimg_dask.cli.main import main
from contimg_dask.config import load_config
from contimg_dask.coords.time import unix_to_jd
from contimg_dask.io.store.block_calibration import corrected_dataset
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.registry import get_stage
from contimg_dask.state import open_state_store
from tests.helpers import make_config, read_truth

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ORDER = ("ingest", "rephase", "flag", "calibrate_solve", "calibrate_apply", "export")
CALIBRATOR = "3C147"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("archive_products")
    config = make_config(root)
    summary = simulate_blocks(config, root / "incoming", SimulationOptions(
        preset="small", n_blocks=1, seed=11, transit=CALIBRATOR, random_sources=False,
        rfi=False))[0]
    truth = read_truth(Path(summary["truth"]))
    block = BlockRef(truth["block_id"], root / "stores" / "block.zarr",
                     tuple(Path(f) for f in summary["files"]))
    state = open_state_store(config)
    results = {}
    for sb, path in enumerate(block.files):
        state.register_file(block.block_id, str(path), sb)
    for name in ORDER:
        state.enqueue(block.block_id, name)
        lease = state.claim("archive-test", 600.0, [name])
        results[name] = get_stage(name).run(block, config)
        state.complete(lease, results[name])
    index = open_archive_index(config)
    first, second = sync_index(state, index, config), sync_index(state, index, config)
    yield {"root": root, "config": config, "truth": truth, "block": block, "state": state,
           "index": index, "results": results, "syncs": (first, second)}
    index.close()
    state.close()


def _cli(run: dict, *args: str) -> list[str]:
    return ["--env", "testing", "--set", f"paths.root={run['root']}", *args]


def _tree_sha256(path: Path) -> str:
    """An independent content checksum: sha256 over (relative path, bytes), sorted."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\n" + f.read_bytes())
    return digest.hexdigest()


def test_sync_indexes_the_products_with_the_block_metadata(run: dict) -> None:
    first, second = run["syncs"]
    assert first["indexed"] == 3 and first["skipped"] == [] and first["total"] == 3
    assert second["indexed"] == 0 and second["unchanged"] == 3
    truth, block_id, index = run["truth"], run["block"].block_id, run["index"]
    times = np.asarray(truth["time_unix"])
    step = float(np.median(np.diff(times)))
    strip = np.degrees(truth["pointing_dec_rad"])
    ms = index.get(f"{block_id}/ms")
    for kind in ("block_store", "solutions", "ms"):
        entry = index.get(f"{block_id}/{kind}")
        assert entry is not None and entry.kind == kind and entry.block_id == block_id
        assert entry.time_start == pytest.approx(times[0] - step / 2, abs=1e-3)
        assert entry.time_end == pytest.approx(times[-1] + step / 2, abs=1e-3)
        assert entry.strip_dec_deg == pytest.approx(strip, abs=1e-9)
        # The rephased centre: HA 0 / pointing dec at mid-block, within the truth's track.
        track_ra = np.degrees(truth["phase_centre_icrs_ra_rad"])
        assert min(track_ra) < entry.ra_deg < max(track_ra)
        assert entry.dec_deg == pytest.approx(np.degrees(np.mean(
            truth["phase_centre_icrs_dec_rad"])), abs=1e-3)
        assert entry.calibrator == CALIBRATOR
        assert entry.flag_fraction == run["results"]["flag"].figures["flagged_fraction"]
        assert entry.n_antennas == len(truth["antennas"])
        assert entry.provenance["config_hash"] == run["results"]["export"].provenance.config_hash
    assert ms.checksum == _tree_sha256(Path(ms.path))
    assert ms.provenance["command"] == run["results"]["export"].provenance.command
    assert ms.collection == f"strip/{strip:+.1f}/{block_id[:10]}/{block_id}"
    assert index.get(f"{block_id}/solutions").collection.startswith("products/solutions/")


def test_search_from_the_command_line(run: dict, capsys: pytest.CaptureFixture) -> None:
    entry = run["index"].get(f"{run['block'].block_id}/ms")

    def search(*args: str) -> list[str]:
        assert main(_cli(run, "archive", "search", *args, "--json")) == 0
        return sorted(e["kind"] for e in json.loads(capsys.readouterr().out))

    ra, dec = f"{entry.ra_deg}", f"{entry.dec_deg}"
    assert search("--cone", ra, dec, "0.1") == ["block_store", "ms", "solutions"]
    assert search("--cone", f"{(entry.ra_deg + 5) % 360}", dec, "1") == []
    assert search("--cone", ra, dec, "0.1", "--kind", "solutions") == ["solutions"]
    assert search("--strip", f"{entry.strip_dec_deg + 0.2:.3f}") == [
        "block_store", "ms", "solutions"]
    assert search("--strip", f"{entry.strip_dec_deg + 2:.3f}") == []
    assert search("--from", "2026-03-22T01:40:00", "--to", "2026-03-22T02:00:00") == [
        "block_store", "ms", "solutions"]
    assert search("--to", "2026-03-22T01:30:00") == []
    assert search("--max-noise", "1") == []  # no image: no noise measured


def _canonical(uv: UVData) -> UVData:
    uv.conjugate_bls("ant1<ant2")
    uv.reorder_blts(order="time", minor_order="baseline")
    uv.reorder_freqs(channel_order="freq")
    return uv


def test_every_visibility_format_round_trips_through_pyuvdata(run: dict) -> None:
    """Each format, converted on request from the block store, read back by pyuvdata: the
    store's calibrated visibilities, flags, times and frequencies (uvfits holds float32)."""
    config, store = run["config"], run["block"].store
    entry = run["index"].get(f"{run['block'].block_id}/block_store")
    corrected = corrected_dataset(store)
    vis = np.asarray(corrected.VISIBILITY_CORRECTED.values)  # (time, baseline, freq, pol)
    n_t, n_bl, n_f, n_p = vis.shape
    times_jd = unix_to_jd(np.asarray(run["truth"]["time_unix"]))
    reference = None
    for fmt in ("uvh5", "uvfits", "miriad", "ms"):
        served = get_product(entry, fmt, config)
        assert served["cache"] == "miss"
        kwargs = {"data_column": "CORRECTED_DATA"} if fmt == "ms" else {}
        uv = _canonical(UVData.from_file(served["path"], **kwargs))
        assert (uv.Ntimes, uv.Nfreqs, uv.Npols) == (n_t, n_f, n_p)
        np.testing.assert_allclose(np.unique(uv.time_array), times_jd, rtol=0, atol=1e-8)
        np.testing.assert_allclose(uv.freq_array.ravel(), corrected.frequency.values, rtol=1e-9)
        if reference is None:
            # The uvh5 against the store itself (baseline order: the store's, ant1 < ant2).
            assert uv.Nbls == n_bl
            cross = uv.ant_1_array != uv.ant_2_array
            assert np.abs(uv.data_array).max() > 0
            store_rows = vis.reshape(n_t * n_bl, n_f, n_p)
            order = np.lexsort((uv.ant_2_array, uv.ant_1_array, uv.time_array))
            np.testing.assert_allclose(np.sort(np.abs(uv.data_array[order][cross[order]]),
                                               axis=None),
                                       np.sort(np.abs(store_rows[np.asarray(
                                           cross[order])]), axis=None), rtol=1e-6)
            reference = uv
            continue
        scale = np.abs(reference.data_array).max()
        tol = 1e-6 * scale if fmt == "uvfits" else 1e-9 * scale
        assert np.abs(uv.data_array - reference.data_array).max() <= tol, fmt
        np.testing.assert_array_equal(uv.flag_array, reference.flag_array)
        np.testing.assert_allclose(uv.uvw_array, reference.uvw_array, atol=1e-3)


def test_reproduce_export_and_solutions_bit_for_bit(run: dict) -> None:
    for kind in ("ms", "solutions"):
        entry = run["index"].get(f"{run['block'].block_id}/{kind}")
        report = reproduce(entry, run["config"], run["root"] / "reproduced" / kind)
        assert report["config_matches"] and report["changed_inputs"] == {}
        assert report["identical"] and report["agrees"], report
        assert report["arrays_compared"] > 10
        assert Path(report["reproduced"]).exists()
        assert Path(report["reproduced"]) != Path(entry.path)


def test_reproduce_uses_the_recorded_configuration(run: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """config/pipeline.yaml changed after the MS was made (the telescope name CASA reads,
    written into the MS): ``contimg reproduce`` runs with the configuration recorded with
    the product and gives it bit for bit; the same command run with the changed
    configuration gives a different MS (the check can fail)."""
    entry = run["index"].get(f"{run['block'].block_id}/ms")
    assert run["state"].configuration(entry.provenance["config_hash"]) is not None
    config_dir = tmp_path / "config"
    shutil.copytree(REPO / "config", config_dir)
    base = config_dir / "pipeline.yaml"
    text = base.read_text()
    assert "casa_name: OVRO_MMA " in text
    base.write_text(text.replace("casa_name: OVRO_MMA ", "casa_name: VLA "))
    changed = ["--config", str(config_dir), *_cli(run)]
    assert main([*changed, "reproduce", entry.product_id, "--out", str(tmp_path / "recorded"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config_used"] == "recorded" and report["config_matches"]
    assert report["identical"] and report["agrees"], report
    current = reproduce(entry, load_config("testing", config_dir, overrides={
        "paths.root": str(run["root"])}, environ={}), tmp_path / "current")
    assert current["config_used"] == "current" and not current["config_matches"]
    assert not current["identical"]


#: A quick image: 384 x 10" pixels (1.1 deg; the cell keeps the longest baselines on the uv
#: grid), hogbom, 200 iterations, all channels.
QUICK_IMAGE = {"imaging.imsize": 384, "imaging.cell_arcsec": 10.0, "imaging.niter": 200,
               "imaging.deconvolver": "hogbom", "imaging.channels_per_subband": None}


@pytest.mark.casa
def test_image_is_indexed_served_and_reproduced(run: dict, capsys: pytest.CaptureFixture
                                                ) -> None:
    """The image stage (CASA tclean) on the calibrated block: indexed with its noise and
    centre, served as FITS and PNG, reproduced by its recorded command within the stated
    tolerance (1 % of the noise)."""
    from astropy.io import fits

    config = make_config(run["root"], **QUICK_IMAGE)
    block, state, index = run["block"], run["state"], run["index"]
    state.enqueue(block.block_id, "image")
    lease = state.claim("archive-test", 600.0, ["image"])
    result = get_stage("image").run(block, config)
    state.complete(lease, result)
    report = sync_index(state, index, config)
    assert report["indexed"] == 5 and report["skipped"] == []  # image, pbcor, residual, pb, model
    entry = index.get(f"{block.block_id}/image")
    header = fits.getheader(entry.path)
    assert (entry.ra_deg, entry.dec_deg) == pytest.approx((header["CRVAL1"] % 360,
                                                           header["CRVAL2"]), abs=1e-9)
    assert entry.noise_jy == result.figures["noise_jy"] > 0
    assert entry.collection.startswith("products/image/")
    assert main(_cli(run, "archive", "search", "--kind", "image", "--max-noise",
                     f"{2 * entry.noise_jy}", "--json")) == 0
    assert [e["product_id"] for e in json.loads(capsys.readouterr().out)] == [entry.product_id]
    assert main(_cli(run, "archive", "search", "--kind", "image", "--max-noise",
                     f"{entry.noise_jy / 2}", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == []
    served = get_product(entry, "fits", config)
    assert served["cache"] == "original" and served["path"] == entry.path
    png = Path(get_product(entry, "png", config)["path"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reproduced = reproduce(entry, config, run["root"] / "reproduced" / "image")
    assert reproduced["config_matches"] and reproduced["changed_inputs"] == {}
    assert reproduced["agrees"], reproduced
    assert reproduced["tolerance"] == pytest.approx(0.01 * entry.noise_jy)


def test_cached_second_request_and_invalidation(run: dict, capsys: pytest.CaptureFixture,
                                                record_property) -> None:
    """Runs last: it changes the block store (rephases it elsewhere)."""
    from contimg_dask.processing.rephase import rephase_block

    product = f"{run['block'].block_id}/block_store"
    first = json.loads(_run_cli(run, capsys, "archive", "get", product, "--format", "uvfits"))
    assert first["cache"] == "miss"
    path = Path(first["path"])
    written = path.stat().st_mtime_ns
    second = json.loads(_run_cli(run, capsys, "archive", "get", product, "--format", "uvfits"))
    assert second["cache"] == "hit" and Path(second["path"]) == path
    assert path.stat().st_mtime_ns == written  # not written again
    record_property("cache_speedup", first["seconds"] / second["seconds"])
    print(f"uvfits: first request {first['seconds']:.3f} s, cached {second['seconds']:.4f} s",
          file=sys.stderr)
    # A copy to --out is the same product.
    out = run["root"] / "copy.uvfits"
    third = json.loads(_run_cli(run, capsys, "archive", "get", product, "--format", "uvfits",
                                "--out", str(out)))
    assert third["cache"] == "hit" and out.read_bytes() == path.read_bytes()
    old_centre = _centre(UVData.from_file(str(path)))
    # The block store changes: rephased to another centre. The cache must not serve the old
    # conversion; the new one carries the new centre.
    new_ra, new_dec = old_centre["cat_lon"] + 0.01, old_centre["cat_lat"] - 0.01
    rephase_block(run["block"].store, new_ra, new_dec)
    fourth = json.loads(_run_cli(run, capsys, "archive", "get", product, "--format", "uvfits"))
    assert fourth["cache"] == "miss"
    centre = _centre(UVData.from_file(fourth["path"]))
    assert centre["cat_lon"] == pytest.approx(new_ra, abs=1e-9)
    assert centre["cat_lat"] == pytest.approx(new_dec, abs=1e-9)
    assert os.path.exists(fourth["path"])


def _centre(uv: UVData) -> dict:
    (centre,) = uv.phase_center_catalog.values()
    return centre


def _run_cli(run: dict, capsys: pytest.CaptureFixture, *args: str) -> str:
    """A command on a cache of its own (the round-trip test filled the default one)."""
    own_cache = ("--set", f"archive.cache_dir={run['root'] / 'cli-cache'}")
    assert main([*own_cache, *_cli(run, *args, "--json")]) == 0
    return capsys.readouterr().out
