"""Ingest to the MSv4 block store and rephasing, checked against xradio's schema and against
pyuvdata on the same files."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from pyuvdata import UVData
from xradio.measurement_set import open_processing_set
from xradio.measurement_set.schema import VisibilityXds
from xradio.schema.check import check_dataset, check_datatree

from contimg_dask.errors import (
    IncompleteBlockError,
    InconsistentBlockError,
    InputError,
    UnreadableFileError,
)
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.processing.rephase import rephase_block
from tests.conftest import REAL_DATA
from tests.helpers import (
    group_visibilities_of,
    make_config,
    pyuvdata_uvw_per_integration,
    read_truth,
    read_with_true_phase_centres,
)

REAL = REAL_DATA


def block_files(directory: Path, block: int = 0) -> tuple[list[Path], dict]:
    truth_path = sorted(directory.glob("*_truth.h5"))[block]
    truth = read_truth(truth_path)
    return [directory / truth["files"][str(sb)] for sb in range(16)], truth


@pytest.fixture(scope="module")
def store(small_blocks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    files, _ = block_files(small_blocks)
    return ingest_block(files, root / "block.zarr", make_config(root))


def dataset(path: Path) -> xr.Dataset:
    return block_node(open_block(path)).to_dataset(inherit=False)


def test_store_passes_xradios_schema_check(store: Path) -> None:
    ps = open_processing_set(str(store))
    (name,) = ps.children
    assert len(check_dataset(ps[name].to_dataset(inherit=False), VisibilityXds)) == 0
    assert len(check_datatree(ps)) == 0
    summary = ps.xr_ps.summary()
    assert summary["shape"][0] == (24, 78, 128, 2)


def test_store_is_lazy_chunked_by_subband_and_ascending(store: Path) -> None:
    ds = xr.open_zarr(store, group=next(iter(open_block(store).children)), consolidated=False)
    assert type(ds.VISIBILITY.data).__module__.startswith("dask")
    assert ds.VISIBILITY.chunks[2] == (8,) * 16
    assert np.all(np.diff(ds.frequency.values) > 0)
    assert ds.UVW.dtype == np.float64
    prov = ds.attrs["contimg"]
    assert prov["telescope"] == "DSA-110" and prov["telescope_name_in_files"] == "OVRO_MMA"
    assert prov["missing_subbands"] == [] and len(prov["source_files"]) == 16
    assert prov["subbands"] == list(range(15, -1, -1))  # ascending frequency
    assert len(prov["config_hash"]) == 64 and prov["package_version"]
    assert prov["phase_centre"]["kind"] == "drift"


def test_visibilities_match_pyuvdata(store: Path, small_blocks: Path) -> None:
    files, _ = block_files(small_blocks)
    subbands = [UVData.from_file(str(f), file_type="uvh5", run_check=False) for f in files]
    freq = np.concatenate([uv.freq_array for uv in subbands])
    data = np.concatenate([uv.data_array for uv in subbands], axis=1)
    ds = dataset(store)
    order = np.argsort(freq)
    np.testing.assert_allclose(ds.frequency.values, freq[order])
    n_t, n_bl = ds.sizes["time"], ds.sizes["baseline_id"]
    theirs = data[:, order].reshape(n_t, n_bl, -1, 2)
    np.testing.assert_array_equal(ds.VISIBILITY.values, theirs)
    times = np.unique(subbands[0].time_array)
    np.testing.assert_allclose(ds.time.values, (times - 2440587.5) * 86400, atol=1e-4)


def test_uvw_matches_pyuvdata_with_true_phase_centres(store: Path, small_blocks: Path) -> None:
    files, truth = block_files(small_blocks)
    uv = read_with_true_phase_centres(files[0], truth)
    ds = dataset(store)
    theirs = pyuvdata_uvw_per_integration(uv).reshape(ds.sizes["time"],
                                                      ds.sizes["baseline_id"], 3)
    assert np.abs(ds.UVW.values - theirs).max() < 1e-3  # 1 mm; measured ~1e-11 m
    assert np.linalg.norm(theirs, axis=-1).max() > 2400  # 2.47 km baselines


@pytest.mark.parametrize(("subband", "materialise"), [(0, False), (15, False), (0, True)])
def test_rephase_matches_pyuvdata(store: Path, small_blocks: Path, tmp_path: Path,
                                  subband: int, materialise: bool) -> None:
    """Rephased UVWs and visibilities (rotated on the fly, the default, or stored) equal
    pyuvdata's ``phase()`` of the same subband."""
    copy = tmp_path / "block.zarr"
    shutil.copytree(store, copy)
    ra, dec = rephase_block(copy, materialise=materialise)
    files, truth = block_files(small_blocks)
    mid = truth["phase_centre_icrs_ra_rad"], truth["phase_centre_icrs_dec_rad"]
    assert abs(ra - np.mean(mid[0][11:13])) < 1e-6 and abs(dec - np.mean(mid[1])) < 1e-6
    uv = read_with_true_phase_centres(files[subband], truth)
    uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name="centre", use_ant_pos=True)
    ds = dataset(copy)
    n_t, n_bl = ds.sizes["time"], ds.sizes["baseline_id"]
    theirs_uvw = pyuvdata_uvw_per_integration(uv).reshape(n_t, n_bl, 3)
    assert np.abs(ds.UVW_REPHASED.values - theirs_uvw).max() < 1e-3
    np.testing.assert_allclose(uv.uvw_array.reshape(n_t, n_bl, 3), theirs_uvw, atol=1e-9)
    channels = np.isin(ds.frequency.values, uv.freq_array)
    ours = group_visibilities_of(copy)[:, :, channels]
    theirs = uv.data_array[:, np.argsort(uv.freq_array)].reshape(n_t, n_bl, -1, 2)
    cross = (ds.baseline_antenna1_name != ds.baseline_antenna2_name).values
    ratio = ours[:, cross] / theirs[:, cross]
    assert np.degrees(np.abs(np.angle(ratio))).max() < 0.01
    assert np.abs(np.abs(ratio) - 1).max() < 1e-5
    stored = set(ds.attrs["data_groups"])
    assert stored == ({"base", "rephased"} if materialise else {"base"})
    assert ("VISIBILITY_REPHASED" in ds) == materialise
    assert ("rephased" in ds.attrs["contimg"]["derived_groups"]) != materialise
    np.testing.assert_array_equal(ds.VISIBILITY.values, dataset(store).VISIBILITY.values)
    assert len(check_datatree(open_processing_set(str(copy)))) == 0


def test_rephasing_at_ingest_equals_the_rephase_stage(store: Path, small_blocks: Path,
                                                      tmp_path: Path) -> None:
    """The rephased group added during ingest, rotated on the fly (the default) or stored in
    the same pass, is the rephase stage's materialised result; switching back to on the fly
    drops the stored copy."""
    files, _ = block_files(small_blocks)
    plain = ingest_block(files, tmp_path / "plain.zarr", make_config(tmp_path), rephase=False)
    assert set(dataset(plain).attrs["data_groups"]) == {"base"}
    assert "rephased" not in dataset(plain).attrs["contimg"].get("derived_groups", {})
    rephase_block(plain, materialise=True)
    fused = ingest_block(files, tmp_path / "fused.zarr", make_config(
        tmp_path, **{"store.materialise_rephased": True}))
    assert set(dataset(fused).attrs["data_groups"]) == {"base", "rephased"}
    staged = group_visibilities_of(plain)
    for other in (store, fused):
        np.testing.assert_allclose(dataset(other).UVW_REPHASED.values,
                                   dataset(plain).UVW_REPHASED.values, atol=1e-9)
        np.testing.assert_allclose(group_visibilities_of(other), staged, rtol=1e-6,
                                   atol=1e-6)
    rephase_block(plain)
    assert "VISIBILITY_REPHASED" not in dataset(plain)
    assert not (plain / block_node(open_block(plain)).name / "VISIBILITY_REPHASED").exists()
    np.testing.assert_allclose(group_visibilities_of(plain), staged, rtol=1e-6, atol=1e-6)


def test_missing_subband_becomes_a_flagged_gap(small_blocks: Path, tmp_path: Path) -> None:
    files, _ = block_files(small_blocks)
    out = ingest_block([f for f in files if not f.name.endswith("_sb07.hdf5")],
                       tmp_path / "gap.zarr", make_config(tmp_path))
    ds = dataset(out)
    assert ds.attrs["contimg"]["missing_subbands"] == [7]
    freq = ds.frequency.values
    np.testing.assert_allclose(np.diff(freq), np.diff(freq)[0])  # the gap has its channels
    gap = ds.frequency.values[(15 - 7) * 8:(15 - 7 + 1) * 8]
    assert ds.FLAG.sel(frequency=gap).values.all()
    assert (ds.WEIGHT.sel(frequency=gap).values == 0).all()
    assert not ds.FLAG.values.all()


def test_too_many_missing_is_a_clear_error(small_blocks: Path, tmp_path: Path) -> None:
    files, _ = block_files(small_blocks)
    with pytest.raises(IncompleteBlockError, match="3 subbands missing"):
        ingest_block(files[3:], tmp_path / "x.zarr", make_config(tmp_path))
    assert list(tmp_path.glob("x.zarr*")) == []


def test_truncated_file_is_named_and_leaves_existing_store_intact(
        store: Path, small_blocks: Path, tmp_path: Path) -> None:
    files, _ = block_files(small_blocks)
    damaged = tmp_path / files[4].name
    shutil.copy(files[4], damaged)
    with damaged.open("r+b") as handle:
        handle.truncate(damaged.stat().st_size // 2)
    target = tmp_path / "block.zarr"
    shutil.copytree(store, target)
    before = dataset(target).VISIBILITY.values
    with pytest.raises(UnreadableFileError) as info:
        ingest_block([*files[:4], damaged, *files[5:]], target, make_config(tmp_path))
    assert info.value.file == str(damaged)
    np.testing.assert_array_equal(dataset(target).VISIBILITY.values, before)
    assert sorted(p.name for p in tmp_path.glob("block.zarr*")) == ["block.zarr"]


def test_data_truncated_after_the_header_is_named(small_blocks: Path, tmp_path: Path) -> None:
    """A file whose header is intact but whose data cannot be read fails in its Dask task,
    and the error still names the file."""
    files, _ = block_files(small_blocks)
    damaged = tmp_path / files[2].name
    shutil.copy(files[2], damaged)
    with h5py.File(damaged, "r+") as f:
        del f["Data/visdata"]
        f["Data"].create_dataset("visdata", data=np.zeros((3,), np.float32))
    with pytest.raises(InputError) as info:
        ingest_block([*files[:2], damaged, *files[3:]], tmp_path / "x.zarr",
                     make_config(tmp_path))
    assert info.value.file == str(damaged) and "shape" in info.value.message
    assert list(tmp_path.glob("x.zarr*")) == []


def test_nonfinite_samples_are_flagged_and_counted(small_blocks: Path, store: Path,
                                                  tmp_path: Path) -> None:
    """Defect 9 of issue 10: one NaN rejected the whole block. Non-finite samples are now
    flagged (zero value, zero weight) and counted; every other sample is as in the clean
    ingest of the same files."""
    files, _ = block_files(small_blocks)
    bad = tmp_path / files[9].name
    shutil.copy(files[9], bad)
    with h5py.File(bad, "r+") as f:
        n_blt, _, n_chan, _ = f["Data/visdata"].shape
        f["Data/visdata"][5, 0, 3, 1] = np.nan
        f["Data/visdata"][7, 0, 0, 0] = complex(np.inf, 0.0)
        f["Data/visdata"][7, 0, 1, 0] = complex(0.0, -np.inf)
    out = ingest_block([*files[:9], bad, *files[10:]], tmp_path / "x.zarr",
                       make_config(tmp_path))
    ds = block_node(open_block(out)).to_dataset(inherit=False)
    clean = block_node(open_block(store)).to_dataset(inherit=False)
    assert ds.attrs["contimg"]["nonfinite_flagged"] == {"total": 3, "per_subband": {"09": 3}}
    assert clean.attrs["contimg"]["nonfinite_flagged"] == {"total": 0, "per_subband": {}}
    n_t, n_bl = ds.sizes["time"], ds.sizes["baseline_id"]
    first = ds.attrs["contimg"]["subbands"].index(9)
    start = sum(ds.attrs["contimg"]["subband_chunks"][:first])
    # File rows are time-major; channels descend in the file, ascend in the store.
    expected = np.zeros(ds.FLAG.shape, bool)
    for blt, chan, pol in ((5, 3, 1), (7, 0, 0), (7, 1, 0)):
        expected[blt // n_bl, blt % n_bl, start + n_chan - 1 - chan, pol] = True
    new_flags = ds.FLAG.values & ~clean.FLAG.values
    np.testing.assert_array_equal(new_flags, expected & ~clean.FLAG.values)
    vis, weight = ds.VISIBILITY.values, ds.WEIGHT.values
    assert np.isfinite(vis).all()
    assert (vis[expected] == 0).all() and (weight[expected] == 0).all()
    np.testing.assert_array_equal(vis[~expected], clean.VISIBILITY.values[~expected])
    assert n_t * n_bl == n_blt


def test_files_of_two_blocks_are_refused(small_blocks: Path, tmp_path: Path) -> None:
    first, _ = block_files(small_blocks, 0)
    second, _ = block_files(small_blocks, 1)
    with pytest.raises(InconsistentBlockError, match="time axis") as info:
        ingest_block([*first[:5], second[5], *first[6:]], tmp_path / "x.zarr",
                     make_config(tmp_path))
    assert info.value.file == str(second[5])


@pytest.mark.parametrize("name", ["zen.2458661.23480.HH.uvh5", "zen.2458432.34569.uvh5"])
def test_real_hera_files_ingest(name: str, tmp_path: Path) -> None:
    """Zenith-drift HERA data (complex128, integer compound, 4 pols) without special cases."""
    path = REAL / name
    out = ingest_block([path], tmp_path / "hera.zarr", make_config(tmp_path), block_id="hera")
    ps = open_processing_set(str(out))
    assert len(check_datatree(ps)) == 0
    ds = dataset(out)
    uv = UVData.from_file(str(path), run_check=False)
    order = np.argsort(uv.freq_array)
    n_t, n_bl = ds.sizes["time"], ds.sizes["baseline_id"]
    expected = uv.data_array[:, order].reshape(n_t, n_bl, len(order), uv.Npols)
    np.testing.assert_allclose(ds.VISIBILITY.values, expected.astype(np.complex64), rtol=1e-6)
    codes = {-5: "XX", -6: "YY", -7: "XY", -8: "YX"}  # AIPS memo 117
    assert list(ds.polarization.values) == [codes[p] for p in uv.polarization_array]
    assert ds.attrs["contimg"]["phase_centre"]["kind"] == "drift"
    assert ds.attrs["contimg"]["telescope"] == "HERA"


def test_sidereal_phased_file_ingests(tmp_path: Path) -> None:
    uv = UVData.from_file(str(REAL / "zen.2458661.23480.HH.uvh5"))
    ra, dec = np.radians(30.0), np.radians(-31.0)
    uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name="target")
    phased = tmp_path / "phased.uvh5"
    uv.write_uvh5(str(phased))
    out = ingest_block([phased], tmp_path / "p.zarr", make_config(tmp_path), block_id="p")
    ds = dataset(out)
    centre = ds.attrs["contimg"]["phase_centre"]
    assert centre["kind"] == "sidereal"
    assert centre["ra_rad"] == pytest.approx(ra) and centre["dec_rad"] == pytest.approx(dec)
    theirs = uv.uvw_array.reshape(ds.sizes["time"], ds.sizes["baseline_id"], 3)
    assert np.abs(ds.UVW.values - theirs).max() < 1e-3
