"""Exports: the Measurement Set as CASA reads it, and UVFITS/MIRIAD/UVH5 round trips through
pyuvdata."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from pyuvdata import UVData

from contimg_dask.casa import run_casa
from contimg_dask.errors import InputError
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.exports import export_block
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.processing.rephase import rephase_block
from contimg_dask.telescope.geodesy import geodetic_to_ecef
from contimg_dask.testing.casa_tasks import casa_uvw
from tests.casa_checks import ms_conventions
from tests.helpers import group_visibilities_of, make_config, read_truth

REPO_ROOT = Path(__file__).resolve().parents[2]
# AIPS/pyuvdata polarization codes and the CASA (casacore Stokes) correlation types of the
# linear products, from the two standards (AIPS Memo 117; casacore StokesTypes).
AIPS_TO_CASA_CORR = {-5: 9, -6: 12, -7: 10, -8: 11}
JD_TO_MJD = 2400000.5


@pytest.fixture(scope="module", autouse=True)
def casa_worker_imports_tests() -> object:
    """The CASA-side checks in tests/casa_checks.py are pickled by reference: the worker
    must import them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPO_ROOT))
        yield


@pytest.fixture(scope="module")
def raw(small_blocks: Path) -> dict:
    """The block's correlator files' metadata as pyuvdata reads it, independently of our
    ingest: the reference for the metadata conventions below. Frequencies per subband in
    file order (descending, as the correlator writes them)."""
    truth = read_truth(sorted(small_blocks.glob("*_truth.h5"))[0])
    heads = [UVData.from_file(str(small_blocks / truth["files"][str(sb)]), file_type="uvh5",
                              read_data=False, run_check=False) for sb in range(16)]
    first = heads[0]
    return {"subband_freqs_hz": [h.freq_array.copy() for h in heads],
            "channel_width_hz": float(np.abs(first.channel_width).max()),
            "polarization_array": first.polarization_array.tolist(),
            "times_jd": np.unique(first.time_array),
            "integration_s": float(np.unique(first.integration_time)[0]),
            "antenna_names": list(first.telescope.antenna_names),
            "antenna_numbers": first.telescope.antenna_numbers.copy(),
            "antenna_itrf_m": first.telescope.antenna_positions + np.array(
                [first.telescope.location.x.to_value("m"), first.telescope.location.y.to_value(
                    "m"), first.telescope.location.z.to_value("m")]),
            "antenna_diameters_m": first.telescope.antenna_diameters,
            "antennas_in_data": set(np.union1d(first.ant_1_array, first.ant_2_array).tolist())}


@pytest.fixture(scope="module")
def rephased(small_blocks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exports")
    truth = read_truth(sorted(small_blocks.glob("*_truth.h5"))[0])
    files = [small_blocks / truth["files"][str(sb)] for sb in range(16)]
    store = ingest_block(files, root / "block.zarr", make_config(root))
    rephase_block(store)
    return store


def rephased_dataset(store: Path) -> tuple[xr.Dataset, tuple[float, float]]:
    node = block_node(open_block(store))
    field = node["field_and_source_rephased_xds"].to_dataset(inherit=False)
    ra, dec = field.FIELD_PHASE_CENTER_DIRECTION.values[0]
    return node.to_dataset(inherit=False), (float(ra), float(dec))


@pytest.mark.parametrize(("fmt", "uvw_tol_m", "centre_tol_rad"), [
    ("uvh5", 1e-9, 1e-12), ("miriad", 1e-6, 1e-9), ("uvfits", 3e-4, 1e-9)])
def test_pyuvdata_round_trip(rephased: Path, raw: dict, tmp_path: Path, fmt: str,
                             uvw_tol_m: float, centre_tol_rad: float) -> None:
    out = export_block(rephased, tmp_path / f"block.{fmt}", fmt, make_config(tmp_path))
    uv = UVData.from_file(str(out))
    ds, (ra, dec) = rephased_dataset(rephased)
    n_t, n_bl, n_f, n_p = ds.VISIBILITY.shape
    assert (uv.Ntimes, uv.Nbls, uv.Nfreqs, uv.Npols) == (n_t, n_bl, n_f, n_p)
    order = np.lexsort((uv.ant_2_array, uv.ant_1_array, uv.time_array))
    np.testing.assert_allclose(uv.data_array[order].reshape(n_t, n_bl, n_f, n_p),
                               group_visibilities_of(rephased), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(uv.flag_array[order].reshape(n_t, n_bl, n_f, n_p),
                                  ds.FLAG.values)
    assert np.abs(uv.uvw_array[order].reshape(n_t, n_bl, 3)
                  - ds.UVW_REPHASED.values).max() < uvw_tol_m
    assert_metadata_of_the_correlator_files(uv, raw)
    (entry,) = uv.phase_center_catalog.values()
    assert entry["cat_type"] == "sidereal"
    assert abs(entry["cat_lon"] - ra) < centre_tol_rad
    assert abs(entry["cat_lat"] - dec) < centre_tol_rad


def assert_metadata_of_the_correlator_files(uv: UVData, raw: dict) -> None:
    """An export read by pyuvdata has the correlator files' polarizations (in their order),
    frequencies (all channels, ascending) and channel width, integration centres and
    integration time, as pyuvdata reads the correlator files."""
    assert uv.polarization_array.tolist() == raw["polarization_array"]
    np.testing.assert_allclose(uv.freq_array, np.sort(np.concatenate(raw["subband_freqs_hz"])),
                               rtol=0, atol=1e-3)
    np.testing.assert_allclose(uv.channel_width, raw["channel_width_hz"], rtol=1e-9)
    np.testing.assert_allclose(np.unique(uv.time_array), raw["times_jd"], rtol=0,
                               atol=1e-3 / 86400)
    np.testing.assert_allclose(uv.integration_time, raw["integration_s"], rtol=1e-6)


def test_export_needs_a_fixed_phase_centre(small_blocks: Path, tmp_path: Path) -> None:

    truth = read_truth(sorted(small_blocks.glob("*_truth.h5"))[0])
    files = [small_blocks / truth["files"][str(sb)] for sb in range(16)]
    store = ingest_block(files, tmp_path / "b.zarr", make_config(tmp_path), rephase=False)
    with pytest.raises(InputError, match="rephase"):
        export_block(store, tmp_path / "b.ms", "ms", make_config(tmp_path))
    with pytest.raises(InputError, match="moving phase centre"):
        export_block(store, tmp_path / "b.uvh5", "uvh5", make_config(tmp_path),
                     data_group="base")


@pytest.fixture(scope="module")
def ms(rephased: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ms")
    return export_block(rephased, root / "block.ms", "ms", make_config(root))


def test_pyuvdata_reads_our_ms_with_the_right_conjugation(ms: Path, rephased: Path,
                                                         raw: dict) -> None:
    """Our MS follows the MS sign convention as pyuvdata's MS reader expects: read back, the
    visibilities and UVWs are ours, and the polarizations, frequencies and times are the
    correlator files'. (pyuvdata's MS reader relabels swapped correlation types without
    moving the data, so the correlation types are pinned by CASA, below.)"""
    uv = UVData.from_file(str(ms))
    assert_metadata_of_the_correlator_files(uv, raw)
    ds, _ = rephased_dataset(rephased)
    n_t, n_bl, n_f, n_p = ds.VISIBILITY.shape
    order = np.lexsort((uv.ant_2_array, uv.ant_1_array, uv.time_array))
    np.testing.assert_allclose(uv.data_array[order].reshape(n_t, n_bl, n_f, n_p),
                               group_visibilities_of(rephased), rtol=1e-6, atol=1e-6)
    assert np.abs(uv.uvw_array[order].reshape(n_t, n_bl, 3)
                  - ds.UVW_REPHASED.values).max() < 1e-9


@pytest.mark.casa
def test_uvws_agree_with_casa_measures(ms: Path, rephased: Path, small_blocks: Path,
                                       tmp_path: Path) -> None:
    """CASA's own UVW computation (fixvis: its measures, for the field's ICRS centre) on the
    same MS agrees with the UVWs we wrote to the level at which pyuvdata's own MS agrees with
    CASA.

    Measured on this block: ours vs pyuvdata < 1e-9 m; ours vs CASA up to 1.8, 2.6, 3.3 mm
    in u, v, w on 2.47 km baselines; pyuvdata's write_ms vs CASA: the same 1.8, 2.6, 3.3 mm.
    The difference is between pyuvdata's and CASA's astrometric models (apparent-frame UVWs
    turned to ICRS north vs CASA's J2000-frame computation), not a sign or frame error: a
    sign error would differ by 2|uvw| (km), a frame error by ~0.35 deg rotation (~15 m).
    """
    from tests.helpers import read_with_true_phase_centres

    config = make_config(tmp_path)
    result = run_casa(config, casa_uvw, str(ms), str(tmp_path / "copy.ms"))
    written, casa = np.asarray(result["written"]), np.asarray(result["casa"])
    assert np.linalg.norm(written, axis=1).max() > 2400
    ours_vs_casa = np.abs(written - casa).max()
    assert ours_vs_casa < 5e-3

    # pyuvdata's own Measurement Set of the same subband, checked by CASA the same way.
    truth = read_truth(sorted(small_blocks.glob("*_truth.h5"))[0])
    _, (ra, dec) = rephased_dataset(rephased)
    uv = read_with_true_phase_centres(small_blocks / truth["files"]["0"], truth)
    uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name="centre", use_ant_pos=True)
    uv.write_ms(str(tmp_path / "pyuvdata.ms"))
    reference = run_casa(config, casa_uvw, str(tmp_path / "pyuvdata.ms"),
                         str(tmp_path / "pyuvdata_copy.ms"))
    pyuvdata_vs_casa = np.abs(np.asarray(reference["written"])
                              - np.asarray(reference["casa"])).max()
    assert ours_vs_casa <= pyuvdata_vs_casa * 1.01 + 1e-6


@pytest.mark.casa
def test_single_spw_layout(rephased: Path, raw: dict, tmp_path: Path) -> None:
    """One window of all 128 channels, ascending, as the correlator files have them."""
    config = make_config(tmp_path)
    out = export_block(rephased, tmp_path / "one.ms", "ms", config, spw_layout="single")
    meta = run_casa(config, ms_conventions, str(out))
    assert meta["n_spw"] == 1
    np.testing.assert_allclose(meta["chan_freqs_hz"][0],
                               np.sort(np.concatenate(raw["subband_freqs_hz"])), rtol=0,
                               atol=1e-3)
    assert meta["corr_types"] == [AIPS_TO_CASA_CORR[p] for p in raw["polarization_array"]]
    shutil.rmtree(out)


@pytest.mark.casa
def test_windows_of_whole_subbands(rephased: Path, raw: dict, tmp_path: Path) -> None:
    """``spw_layout=2`` (the image stage's default): two windows of 8 whole subbands each,
    as CASA reads them, holding the same visibilities as the one-window MS, row for row."""
    config = make_config(tmp_path)
    one = export_block(rephased, tmp_path / "one.ms", "ms", config, spw_layout="single")
    two = export_block(rephased, tmp_path / "two.ms", "ms", config, spw_layout=2)
    meta = run_casa(config, ms_conventions, str(two))
    freqs = np.sort(np.concatenate(raw["subband_freqs_hz"]))
    assert meta["n_spw"] == 2
    for s, half in enumerate(np.split(freqs, 2)):
        np.testing.assert_allclose(meta["chan_freqs_hz"][s], half, rtol=0, atol=1e-3)
    single, halves = (_ms_columns(ms, ("DATA", "UVW", "DATA_DESC_ID")) for ms in (one, two))
    n_rows = len(single["DATA"])
    assert len(halves["DATA"]) == 2 * n_rows
    np.testing.assert_array_equal(halves["DATA_DESC_ID"], np.repeat([0, 1], n_rows))
    np.testing.assert_array_equal(np.concatenate([halves["DATA"][:n_rows],
                                                  halves["DATA"][n_rows:]], axis=1),
                                  single["DATA"])
    np.testing.assert_array_equal(halves["UVW"][n_rows:], single["UVW"])
    with pytest.raises(InputError, match="dividing the 16 subbands"):
        export_block(rephased, tmp_path / "three.ms", "ms", config, spw_layout=3)


def _ms_columns(ms: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    from casacore.tables import table

    with table(str(ms), ack=False) as main:
        return {name: main.getcol(name) for name in names if name in main.colnames()}


def test_ms_of_a_group_rotated_on_the_fly_equals_the_ms_of_its_stored_copy(
        rephased: Path, ms: Path, tmp_path: Path) -> None:
    """The writer rotates the derived ``rephased`` group while it writes; materialised, the
    same group gives the same MS, bit for bit. WEIGHT is the channel mean of the store's
    weights and WEIGHT_SPECTRUM is left out while weights do not vary by channel."""
    stored = tmp_path / "stored.zarr"
    shutil.copytree(rephased, stored)
    rephase_block(stored, materialise=True)
    other = export_block(stored, tmp_path / "stored.ms", "ms", make_config(tmp_path))
    names = ("DATA", "FLAG", "WEIGHT", "SIGMA", "UVW", "FLAG_ROW", "TIME", "ANTENNA1",
             "ANTENNA2", "DATA_DESC_ID", "WEIGHT_SPECTRUM")
    ours, theirs = _ms_columns(ms, names), _ms_columns(other, names)
    assert "WEIGHT_SPECTRUM" not in ours and set(ours) == set(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    ds, _ = rephased_dataset(rephased)
    n_t, n_bl, n_f, n_p = ds.VISIBILITY.shape
    per_spw = ds.WEIGHT.values.reshape(n_t, n_bl, 16, n_f // 16, n_p).mean(axis=3)
    np.testing.assert_allclose(ours["WEIGHT"], per_spw.transpose(2, 0, 1, 3).reshape(-1, n_p),
                               rtol=1e-6)


def test_weights_varying_by_channel_add_weight_spectrum(rephased: Path, tmp_path: Path
                                                        ) -> None:
    """Weights that differ across the channels of a row (found while writing) are written
    as WEIGHT_SPECTRUM for every spectral window, WEIGHT staying their channel mean."""
    import zarr

    varied = tmp_path / "varied.zarr"
    shutil.copytree(rephased, varied)
    weight = zarr.open_array(varied / block_node(open_block(varied)).name / "WEIGHT",
                             mode="r+")
    values = weight[...]
    values[:, :, 70, :] *= 3.0  # one channel of spectral window 8
    weight[...] = values
    out = export_block(varied, tmp_path / "varied.ms", "ms", make_config(tmp_path))
    cols = _ms_columns(out, ("WEIGHT_SPECTRUM", "WEIGHT"))
    n_t, n_bl, n_f, n_p = values.shape
    expected = values.reshape(n_t, n_bl, 16, n_f // 16, n_p).transpose(2, 0, 1, 3, 4)
    np.testing.assert_array_equal(cols["WEIGHT_SPECTRUM"], expected.reshape(-1, n_f // 16, n_p))
    np.testing.assert_allclose(cols["WEIGHT"], expected.mean(axis=3).reshape(-1, n_p),
                               rtol=1e-6)


def test_ms_row_columns_hold_every_rows_value(ms: Path, rephased: Path) -> None:
    """Run columns (IncrementalStMan, one value put per run) and the row columns expanded by
    the writer process read back, row by row, as the MS layout requires: spectral window,
    then time, then baseline."""
    ds, _ = rephased_dataset(rephased)
    n_t, n_bl = ds.sizes["time"], ds.sizes["baseline_id"]
    cols = _ms_columns(ms, ("TIME", "TIME_CENTROID", "INTERVAL", "EXPOSURE", "DATA_DESC_ID",
                            "ANTENNA1", "ANTENNA2", "SCAN_NUMBER", "PROCESSOR_ID", "FIELD_ID",
                            "UVW"))
    n_spw = 16
    mjd_s = ds.time.values + 40587 * 86400.0  # Unix to MJD seconds
    np.testing.assert_allclose(cols["TIME"], np.tile(np.repeat(mjd_s, n_bl), n_spw), atol=1e-3)
    np.testing.assert_array_equal(cols["TIME_CENTROID"], cols["TIME"])
    interval = float(ds.time.attrs["integration_time"]["data"])
    for name in ("INTERVAL", "EXPOSURE"):
        np.testing.assert_array_equal(cols[name], np.full(n_spw * n_t * n_bl, interval))
    np.testing.assert_array_equal(cols["DATA_DESC_ID"], np.repeat(np.arange(n_spw), n_t * n_bl))
    for name, value in (("SCAN_NUMBER", 1), ("PROCESSOR_ID", -1), ("FIELD_ID", 0)):
        np.testing.assert_array_equal(cols[name], np.full(n_spw * n_t * n_bl, value))
    antenna = block_node(open_block(rephased))["antenna_xds"].to_dataset(inherit=False)
    index = {name: i for i, name in enumerate(antenna.antenna_name.values.tolist())}
    ant1 = np.array([index[a] for a in ds.baseline_antenna1_name.values.tolist()])
    np.testing.assert_array_equal(cols["ANTENNA1"], np.tile(ant1, n_t * n_spw))
    np.testing.assert_array_equal(cols["UVW"], np.tile(-ds.UVW_REPHASED.values.reshape(-1, 3),
                                                       (n_spw, 1)))


def test_ms_export_where_dev_shm_is_too_small(rephased: Path, ms: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers often give /dev/shm 64 MB. Its free space is the one thing mocked here (a
    property of the machine, outside the system): the writer then shares its slots through
    memory-mapped files, and writes the same MS."""
    import contimg_dask.io.outputs.table_writer_process as writer_process

    monkeypatch.setattr(writer_process, "shared_memory_free_bytes", lambda: 0)
    out = export_block(rephased, tmp_path / "mapped.ms", "ms", make_config(tmp_path))
    names = ("DATA", "FLAG", "WEIGHT", "UVW", "TIME", "ANTENNA2")
    ours, theirs = _ms_columns(out, names), _ms_columns(ms, names)
    for name in names:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert not list(out.glob(".slot-*"))


@pytest.mark.casa
def test_casa_reads_the_ms_metadata_of_the_correlator_files(ms: Path, rephased: Path,
                                                             raw: dict, tmp_path: Path) -> None:
    """Every metadata convention of our MS, as CASA (msmetadata, listobs) reads it, equals
    the correlator files' as pyuvdata reads them: correlation types, each window's channel
    frequencies (ascending within the window, windows ascending), positive channel widths,
    integration centres and exposure, the antenna and field tables. CASA places the array
    (OVRO_MMA) within 1 m of our reference and reads the store's phase centre."""
    config = make_config(tmp_path)
    meta = run_casa(config, ms_conventions, str(ms))
    assert meta["telescope"] == "OVRO_MMA"
    ref = config.telescope.reference
    array_ref = geodetic_to_ecef(ref.longitude_rad, ref.latitude_rad, ref.height_m)
    assert np.linalg.norm(np.array(meta["observatory_itrf_m"]) - array_ref) < 1.0
    assert meta["nrows"] == 24 * 16 * 78
    assert meta["corr_types"] == [AIPS_TO_CASA_CORR[p] for p in raw["polarization_array"]]
    expected = sorted((np.sort(f) for f in raw["subband_freqs_hz"]), key=lambda f: f[0])
    assert meta["n_spw"] == len(expected) == 16
    for spw, (casa, ours) in enumerate(zip(meta["chan_freqs_hz"], expected, strict=True)):
        np.testing.assert_allclose(casa, ours, rtol=0, atol=1e-3, err_msg=f"spw {spw}")
        np.testing.assert_allclose(meta["chan_widths_hz"][spw], raw["channel_width_hz"],
                                   rtol=1e-9)
    times = (raw["times_jd"] - JD_TO_MJD) * 86400.0
    np.testing.assert_allclose(meta["times_mjd_s"], times, rtol=0, atol=1e-3)
    assert meta["exposure_s"] == pytest.approx(raw["integration_s"], abs=1e-6)
    listobs = meta["listobs"]
    assert listobs["integration_s"] == pytest.approx(raw["integration_s"], abs=1e-3)
    half = raw["integration_s"] / 2
    assert listobs["begin_mjd_d"] * 86400 == pytest.approx(times[0] - half, abs=1e-2)
    assert listobs["end_mjd_d"] * 86400 == pytest.approx(times[-1] + half, abs=1e-2)
    assert listobs["nfields"] == 1 and len(meta["field_names"]) == 1
    assert meta["phase_centre"]["frame"] == "ICRS"
    _, (ra, dec) = rephased_dataset(rephased)
    assert np.mod(meta["phase_centre"]["ra_rad"], 2 * np.pi) == pytest.approx(ra, abs=1e-12)
    assert meta["phase_centre"]["dec_rad"] == pytest.approx(dec, abs=1e-12)
    # The antenna table holds the antennas that have data, by the correlator's names.
    index = [raw["antenna_names"].index(name) for name in meta["antenna_names"]]
    assert {int(raw["antenna_numbers"][i]) for i in index} == raw["antennas_in_data"]
    np.testing.assert_allclose(meta["antenna_itrf_m"], raw["antenna_itrf_m"][index], atol=1e-3)
    np.testing.assert_allclose(meta["antenna_diameters_m"], raw["antenna_diameters_m"][index])
