"""Calibration against the simulator's truth: calibrator finding, bandpass and gain solutions,
applying them to the calibrator block and to another block of the same declination strip,
and the refusals (no calibrator, flagged reference antenna, SNR, wrong strip, stale)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr
from astropy import units as u
from astropy.coordinates import SkyCoord

from contimg_dask.cli.main import main
from contimg_dask.errors import CalibrationError
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.io.store.solutions import read_solutions, write_solutions
from contimg_dask.processing.calibrate_apply import apply_solutions
from contimg_dask.processing.calibrate_solve import solve_block
from contimg_dask.science.calibrators import find_calibrators, load_calibrators
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from tests.helpers import airy_power, group_visibilities_of, make_config, read_truth

CALIBRATOR = "3C147"  # 22 Jy at 1.4 GHz (Perley-Butler 2017), dec +49.9
N_ANTENNAS = 48


def _config(root: Path, **overrides: object):
    return make_config(root, **{"simulation.presets.small.n_antennas": N_ANTENNAS,
                                **overrides})


@pytest.fixture(scope="module")
def strip(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two consecutive blocks of the strip of 3C147, which transits the first one; the
    instrument (gains, bandpasses) is the same for both; no RFI, no other sources."""
    root = tmp_path_factory.mktemp("calibration")
    config = _config(root)
    summaries = simulate_blocks(config, root / "incoming", SimulationOptions(
        preset="small", n_blocks=2, seed=11, transit=CALIBRATOR, random_sources=False,
        rfi=False))
    stores = [ingest_block([Path(f) for f in s["files"]], root / f"block{i}.zarr", config)
              for i, s in enumerate(summaries)]
    solutions = root / "solutions.zarr"
    summary = solve_block(stores[0], config, solutions)
    return {"root": root, "config": config, "stores": stores, "solutions": solutions,
            "truth": [Path(s["truth"]) for s in summaries], "summary": summary}


def _true_gains(truth_path: Path, antenna_names: list[str]) -> tuple[np.ndarray, ...]:
    """Injected time gains (antenna, time, pol), bandpass (antenna, frequency ascending,
    pol) for the store's antennas (names are station numbers), and the frequencies."""
    with h5py.File(truth_path, "r") as f:
        time_gains, bandpass, freq = f["time_gains"][()], f["bandpass"][()], f["freq_hz"][()]
    index = [int(n) - 1 for n in antenna_names]
    order = np.argsort(freq)
    return time_gains[index], bandpass[index][:, order], freq[order]


def _referenced(g: np.ndarray, refant: int) -> np.ndarray:
    """Remove the reference antenna's phase; antenna axis first."""
    return g * np.conj(g[refant]) / np.abs(g[refant])


def test_calibrators_finds_the_transiting_standard(strip: dict) -> None:
    _, _, best = find_calibrators(strip["stores"][0], strip["config"])
    assert best is not None and best.name == CALIBRATOR
    truth = read_truth(strip["truth"][0])
    mid = 0.5 * (truth["time_unix"][0] + truth["time_unix"][-1])
    assert abs(best.transit_unix - mid) < 13.0  # within one integration of the middle
    assert best.transits_in_block
    # Beam-weighted flux, independently: astropy separation from the pointing at the
    # integration of closest approach, the Airy beam at the band centre.
    source = next(s for s in load_calibrators(strip["config"].calibration)[1]
                  if s.name == CALIBRATOR)
    pointing = SkyCoord(np.array(truth["phase_centre_icrs_ra_rad"]) * u.rad,
                        np.array(truth["phase_centre_icrs_dec_rad"]) * u.rad)
    offset = SkyCoord(source.ra_deg * u.deg, source.dec_deg * u.deg).separation(pointing)
    freq = read_geometry(strip["stores"][0]).freq_hz.mean()
    expected = source.flux_at(np.array([freq]))[0] * airy_power(offset.rad.min(), freq)
    assert best.apparent_flux_jy == pytest.approx(float(expected), rel=1e-3)
    assert best.closest_offset_deg == pytest.approx(offset.deg.min(), abs=1e-3)


def test_cli_calibrators_and_no_calibrator(strip: dict, small_blocks: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    env = ["--env", "testing", "--set", f"paths.root={tmp_path}"]
    assert main([*env, "calibrators", str(strip["stores"][0]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["best"] == CALIBRATOR
    # The default test blocks (dec +16.1, RA ~180 deg) have no calibrator in the catalogue.
    config = make_config(tmp_path)
    truth = read_truth(next(small_blocks.glob("*_truth.h5")))
    files = [small_blocks / truth["files"][str(sb)] for sb in range(16)]
    store = ingest_block(files, tmp_path / "field.zarr", config)
    assert main([*env, "calibrators", str(store)]) == 1
    assert "best calibrator: none" in capsys.readouterr().out
    with pytest.raises(CalibrationError, match="no calibrator transits this block"):
        solve_block(store, config, tmp_path / "none.zarr")
    assert not (tmp_path / "none.zarr").exists()


def _ratios_to_truth(solutions: xr.Dataset, truth_path: Path, refant: int) -> np.ndarray:
    """Every solution cell's G x B against the injected gain (averaged over the cell's
    interval) x bandpass, phases referenced to ``refant``: the complex ratios
    (cell, antenna, frequency, pol), found / true."""
    names = solutions.antenna_name.values.tolist()
    time_gains, bandpass, freq = _true_gains(truth_path, names)
    np.testing.assert_allclose(solutions.frequency.values, freq)
    times = np.array(read_truth(truth_path)["time_unix"])
    ratios = []
    for c in range(solutions.sizes["gain_time"]):
        inside = ((times >= solutions.gain_time_start.values[c])
                  & (times <= solutions.gain_time_end.values[c]))
        assert inside.any()
        true = time_gains[:, inside].mean(axis=1)[:, None, :] * bandpass  # (ant, f, pol)
        found = solutions.GAIN.values[c][:, None, :] * solutions.BANDPASS.values
        ratios.append(_referenced(found, refant) / _referenced(true, refant))
    return np.array(ratios)


def test_solutions_match_injected_gains(strip: dict) -> None:
    """Every solution (SNR >= 50) recovers the injected gain x bandpass of its antenna,
    channel, polarization and 60 s interval within 1 % in amplitude and 1 deg in phase,
    after removing the reference antenna's phase."""
    solutions = read_solutions(strip["solutions"])
    names = solutions.antenna_name.values.tolist()
    refant = names.index(solutions.attrs["contimg"]["refant"])
    assert solutions.BANDPASS_SNR.min() >= 50 and solutions.GAIN_SNR.min() >= 50
    assert not solutions.BANDPASS_FLAG.any() and not solutions.GAIN_FLAG.any()
    ratios = _ratios_to_truth(solutions, strip["truth"][0], refant)
    assert ratios.shape[0] == 5
    assert np.abs(np.abs(ratios) - 1).max() < 0.01
    assert np.degrees(np.abs(np.angle(ratios))).max() < 1.0
    # Unbiased: the mean amplitude ratio of every cell is 1 to far better than a single
    # solution.
    np.testing.assert_allclose(np.abs(ratios).mean(axis=(1, 2, 3)), 1.0, atol=1e-3)


def test_solution_provenance_and_quality(strip: dict) -> None:
    solutions = read_solutions(strip["solutions"])
    prov = solutions.attrs["contimg"]
    truth = read_truth(strip["truth"][0])
    assert prov["calibrator"]["name"] == CALIBRATOR
    assert prov["block_id"] == truth["block_id"]
    assert prov["block_start_unix"] < truth["time_unix"][0] < prov["block_end_unix"]
    assert prov["pointing_dec_rad"] == pytest.approx(truth["pointing_dec_rad"])
    assert prov["refant"] in solutions.antenna_name.values
    assert prov["model_sources"] == [CALIBRATOR]
    quality = prov["quality"]
    assert quality["bandpass_flagged_fraction"] == 0.0
    # χ² per visibility is the noise power: 2 σ² of the simulator, times |g_a g_b|².
    sigma = truth["noise_sigma_jy"]
    assert 1.5 * sigma**2 < quality["bandpass_median_chi2"] < 3.5 * sigma**2
    assert solutions.sizes["gain_time"] == 5  # 24 integrations of 12.9 s in 60 s intervals


def _ideal(store: Path, truth_path: Path, sl: slice) -> np.ndarray:
    """The block's visibilities (channels ``sl``) divided by conj(g_a) g_b of the injected
    gains and bandpass: what a perfect calibration gives, from the simulator's truth."""
    geometry = read_geometry(store)
    time_gains, bandpass, _ = _true_gains(truth_path, geometry.antenna_names)
    g = time_gains[:, :, None, :] * bandpass[:, None, sl, :]  # (ant, t, f, p)
    c = (np.conj(g[geometry.ant1]) * g[geometry.ant2]).transpose(1, 0, 2, 3)  # (t, bl, f, p)
    return group_visibilities_of(store)[:, :, sl] / c


def test_apply_to_the_calibrator_block_returns_the_model(strip: dict) -> None:
    """Corrected calibrator data divided by the data corrected with the injected gains
    (the simulator's truth, not our model): 1 on average to 0.1 %, phase 0 to 0.05 deg,
    and every baseline within 1 % and 1 deg; the original data are kept."""
    store, config = strip["stores"][0], strip["config"]
    apply_solutions(store, strip["solutions"], config, materialise=True)
    ds = block_node(open_block(store)).to_dataset(inherit=False)
    assert "corrected" in ds.attrs["data_groups"]
    assert ds.attrs["data_groups"]["corrected"]["derived_from"] == "rephased"
    geometry = read_geometry(store)
    sl = geometry.subband_slices()[5]
    ideal = _ideal(store, strip["truth"][0], sl)
    corrected = ds.VISIBILITY_CORRECTED.values[:, :, sl]
    cross = geometry.ant1 != geometry.ant2
    ratio = corrected[:, cross] / ideal[:, cross]
    mean = ratio.mean()
    assert abs(mean) == pytest.approx(1.0, abs=1e-3)
    assert abs(np.degrees(np.angle(mean))) < 0.05
    per_baseline = ratio.mean(axis=(0, 2))
    assert np.abs(np.abs(per_baseline) - 1).max() < 0.01
    assert np.degrees(np.abs(np.angle(per_baseline))).max() < 1.0
    raw = group_visibilities_of(store)[:, :, sl]
    assert (np.abs(raw[:, cross] - corrected[:, cross]).mean()
            > 0.1 * np.abs(ideal[:, cross]).mean())
    # No solution is flagged: the corrected group shares the flags it was made from.
    assert ds.attrs["data_groups"]["corrected"]["flag"] == "FLAG"
    assert "FLAG_CORRECTED" not in ds


def test_apply_to_the_next_block_of_the_strip(strip: dict, tmp_path: Path) -> None:
    """The target block (309 s later, outside the solutions' span) gets the whole-block
    gains. Its corrected data differ from data corrected with its own true gains only by the
    instrument's drift between the blocks, which the truth predicts: per baseline, within
    1 % and 0.5 deg of that prediction (the drift itself reaches ~3 deg)."""
    store, config = strip["stores"][1], strip["config"]
    apply_solutions(store, strip["solutions"], config, materialise=True)
    ds = block_node(open_block(store)).to_dataset(inherit=False)
    geometry = read_geometry(store)
    a1, a2 = geometry.ant1, geometry.ant2
    time_gains = _true_gains(strip["truth"][1], geometry.antenna_names)[0]
    calibrator_gains = _true_gains(strip["truth"][0], geometry.antenna_names)[0].mean(axis=1)
    sl = geometry.subband_slices()[8]
    ideal = _ideal(store, strip["truth"][1], sl)
    cross = a1 != a2
    ratio = (ds.VISIBILITY_CORRECTED.values[:, :, sl] / ideal)[:, cross].mean(axis=(0, 2))
    drift = (np.conj(time_gains[a1]) * time_gains[a2]).mean(axis=1) / (
        np.conj(calibrator_gains[a1]) * calibrator_gains[a2])  # (bl, p)
    residual = ratio / drift[cross]
    assert np.max(np.abs(np.abs(residual) - 1)) < 0.01
    assert np.max(np.abs(np.degrees(np.angle(residual)))) < 0.5
    assert np.max(np.abs(np.degrees(np.angle(drift[cross])))) > 1.0  # the test has teeth


def test_export_carries_corrected_data(strip: dict, tmp_path: Path) -> None:
    from casacore.tables import table

    from contimg_dask.io.outputs.exports import export_block

    store, config = strip["stores"][0], strip["config"]
    apply_solutions(store, strip["solutions"], config, materialise=True)
    ms = export_block(store, tmp_path / "cal.ms", "ms", config)
    ds = block_node(open_block(store)).to_dataset(inherit=False)
    n_t, n_bl, _, n_p = ds.VISIBILITY_CORRECTED.shape
    with table(str(ms), ack=False) as main_table:
        rows = main_table.query("DATA_DESC_ID == 3")
        corrected = rows.getcol("CORRECTED_DATA").reshape(n_t, n_bl, -1, n_p)
        data = rows.getcol("DATA").reshape(n_t, n_bl, -1, n_p)
    sl = read_geometry(store).subband_slices()[3]
    np.testing.assert_array_equal(corrected, np.conj(ds.VISIBILITY_CORRECTED.values[:, :, sl]))
    np.testing.assert_array_equal(data, np.conj(group_visibilities_of(store)[:, :, sl]))


def test_on_the_fly_equals_materialised(strip: dict, tmp_path: Path) -> None:
    """Applied on the fly (the default: gains on the block's grid, nothing else written),
    the lazy corrected dataset and the MS export's CORRECTED_DATA, FLAG and WEIGHT equal
    the materialised corrected group; a materialised group left by an earlier apply is
    removed."""
    from casacore.tables import table

    from contimg_dask.io.outputs.exports import export_block
    from contimg_dask.io.store.block_calibration import corrected_dataset

    config = strip["config"]
    materialised = shutil.copytree(strip["stores"][0], tmp_path / "materialised.zarr")
    apply_solutions(materialised, strip["solutions"], config, materialise=True)
    lazy = shutil.copytree(materialised, tmp_path / "lazy.zarr")
    summary = apply_solutions(lazy, strip["solutions"], config)
    assert summary["materialised"] is False
    ds = block_node(open_block(lazy)).to_dataset(inherit=False)
    assert "corrected" not in ds.attrs["data_groups"]
    assert "VISIBILITY_CORRECTED" not in ds and not (lazy / ds.attrs["contimg"]["block_id"]
                                                    .replace(":", "-")).joinpath(
        "_0", "VISIBILITY_CORRECTED").exists()
    assert ds.attrs["contimg"]["calibration"]["materialised"] is False
    reference = block_node(open_block(materialised)).to_dataset(inherit=False)
    on_the_fly = corrected_dataset(lazy)
    np.testing.assert_array_equal(on_the_fly.VISIBILITY_CORRECTED.values,
                                  reference.VISIBILITY_CORRECTED.values)
    np.testing.assert_array_equal(on_the_fly.WEIGHT_CORRECTED.values,
                                  reference.WEIGHT_CORRECTED.values)
    columns = {}
    for name, store in (("materialised", materialised), ("lazy", lazy)):
        ms = export_block(store, tmp_path / f"{name}.ms", "ms", config)
        with table(str(ms), ack=False) as main_table:
            columns[name] = {c: main_table.getcol(c) for c in
                             ("DATA", "CORRECTED_DATA", "FLAG", "WEIGHT", "WEIGHT_SPECTRUM")}
    for column, values in columns["materialised"].items():
        np.testing.assert_array_equal(columns["lazy"][column], values, err_msg=column)


def test_uvh5_export_carries_calibrated_data(strip: dict, tmp_path: Path) -> None:
    """One-column formats get the calibrated data once calibration is applied."""
    from pyuvdata import UVData

    from contimg_dask.io.outputs.exports import export_block
    from contimg_dask.io.store.block_calibration import corrected_dataset

    store = shutil.copytree(strip["stores"][0], tmp_path / "block.zarr")
    apply_solutions(store, strip["solutions"], strip["config"])
    out = export_block(store, tmp_path / "block.uvh5", "uvh5", strip["config"])
    uv = UVData.from_file(str(out))
    assert uv.vis_units == "Jy"
    geometry = read_geometry(store)
    expected = corrected_dataset(store).VISIBILITY_CORRECTED.values
    n_t, n_bl, n_f, n_p = expected.shape
    order = np.lexsort((uv.ant_2_array, uv.ant_1_array, uv.time_array))
    data = uv.data_array[order].reshape(n_t, n_bl, n_f, n_p)
    # Against the simulator's truth (not our corrected dataset): each baseline's exported
    # data equal the data corrected with the injected gains within 1 % and 1 deg.
    sl = geometry.subband_slices()[10]
    cross = geometry.ant1 != geometry.ant2
    per_baseline = (data[:, cross, sl] / _ideal(store, strip["truth"][0], sl)[:, cross]).mean(
        axis=(0, 2))
    assert np.abs(np.abs(per_baseline) - 1).max() < 0.01
    assert np.degrees(np.abs(np.angle(per_baseline))).max() < 1.0
    # The exported data are the on-the-fly corrected data, bit for bit.
    np.testing.assert_array_equal(data, expected)


def test_flagged_solutions_flag_the_data(strip: dict, tmp_path: Path) -> None:
    solutions = read_solutions(strip["solutions"])
    flags = solutions.BANDPASS_FLAG.values.copy()
    names = solutions.antenna_name.values.tolist()
    flags[names.index(names[3]), 10:14, 0] = True
    edited = solutions.assign(BANDPASS_FLAG=(solutions.BANDPASS_FLAG.dims, flags))
    path = write_solutions(edited, tmp_path / "edited.zarr")
    store = shutil.copytree(strip["stores"][0], tmp_path / "block.zarr")
    summary = apply_solutions(store, path, strip["config"], materialise=True)
    ds = block_node(open_block(store)).to_dataset(inherit=False)
    geometry = read_geometry(store)
    flagged = ds.FLAG_CORRECTED.values
    has = (geometry.ant1 == 3) | (geometry.ant2 == 3)
    assert flagged[:, has, 10:14, 0].all()
    assert (ds.WEIGHT_CORRECTED.values[:, has, 10:14, 0] == 0).all()
    assert flagged.sum() == flagged.shape[0] * has.sum() * 4
    assert summary["flagged_fraction"] == pytest.approx(flagged.mean())


def test_reference_antenna_falls_back_when_flagged(strip: dict, tmp_path: Path) -> None:
    """The preferred reference antenna is flagged: the next one takes over, with the same
    accuracy (phases referenced to it)."""
    store = shutil.copytree(strip["stores"][0], tmp_path / "block.zarr")
    geometry = read_geometry(store)
    first, second = geometry.antenna_names[4], geometry.antenna_names[9]
    node_name = next(p.name for p in store.iterdir() if p.is_dir())
    flag = zarr.open_array(store / node_name / "FLAG", mode="r+")
    values = flag[...]
    values[:, (geometry.ant1 == 4) | (geometry.ant2 == 4)] = True
    flag[...] = values
    config = _config(strip["root"], **{"calibration.reference_antennas": [first, second]})
    summary = solve_block(store, config, tmp_path / "sol.zarr")
    assert summary["refant"] == second
    solutions = read_solutions(tmp_path / "sol.zarr")
    assert solutions.BANDPASS_FLAG.values[4].all()  # the flagged antenna has no solutions
    assert np.isnan(solutions.BANDPASS.values[4]).all()
    ratios = np.delete(_ratios_to_truth(solutions, strip["truth"][0], 9), 4, axis=1)
    assert np.abs(np.abs(ratios) - 1).max() < 0.01
    assert np.degrees(np.abs(np.angle(ratios))).max() < 1.0


def test_no_usable_solution_is_an_error(strip: dict, tmp_path: Path) -> None:
    config = _config(strip["root"], **{"calibration.bandpass_min_snr": 1e6})
    with pytest.raises(CalibrationError, match="below the SNR limit") as info:
        solve_block(strip["stores"][0], config, tmp_path / "sol.zarr")
    assert info.value.key == "calibration.bandpass_min_snr"
    assert not (tmp_path / "sol.zarr").exists()


def test_solutions_from_another_strip_or_too_old_are_refused(strip: dict, small_blocks: Path,
                                                             tmp_path: Path) -> None:
    config = make_config(tmp_path)
    truth = read_truth(next(small_blocks.glob("*_truth.h5")))
    files = [small_blocks / truth["files"][str(sb)] for sb in range(16)]
    other = ingest_block(files, tmp_path / "other.zarr", config)
    with pytest.raises(CalibrationError, match=r"pointing dec 49\.8"):
        apply_solutions(other, strip["solutions"], config)
    stale = _config(strip["root"], **{"calibration.validity_days": 1e-3})  # 86 s
    with pytest.raises(CalibrationError, match="validity"):
        apply_solutions(strip["stores"][1], strip["solutions"], stale)
    ds = block_node(open_block(other)).to_dataset(inherit=False)
    assert "corrected" not in ds.attrs["data_groups"]


def test_cli_solve_and_apply(strip: dict, tmp_path: Path,
                             capsys: pytest.CaptureFixture) -> None:
    store = shutil.copytree(strip["stores"][1], tmp_path / "target.zarr")
    env = ["--env", "testing", "--set", f"paths.root={tmp_path}",
           "--set", f"simulation.presets.small.n_antennas={N_ANTENNAS}"]
    assert main([*env, "calibrate", "solve", str(strip["stores"][0]), "--out",
                 str(tmp_path / "sol.zarr"), "--calibrator", CALIBRATOR]) == 0
    assert f"solved on {CALIBRATOR}" in capsys.readouterr().out
    assert main([*env, "calibrate", "apply", str(store), "--solutions",
                 str(tmp_path / "sol.zarr")]) == 0
    assert "0.00 % flagged" in capsys.readouterr().out
    assert main([*env, "calibrate", "apply", str(store), "--solutions",
                 str(tmp_path / "missing.zarr")]) == 2
    assert "missing.zarr" in capsys.readouterr().err


def test_catalogue_override_and_bad_catalogue(strip: dict, tmp_path: Path) -> None:
    from contimg_dask.errors import InputError

    bad = tmp_path / "bad.csv"
    bad.write_text("name,ra_deg,dec\nX,1,2\n")
    with pytest.raises(InputError, match="lacks columns") as info:
        find_calibrators(strip["stores"][0], strip["config"], bad)
    assert info.value.file == str(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("name,ra_deg,dec_deg,flux_jy,ref_freq_hz,spectral_index\n")
    _, candidates, best = find_calibrators(strip["stores"][0], strip["config"], empty)
    assert candidates == [] and best is None


def test_simulated_transit_is_deterministic(tmp_path: Path) -> None:
    from contimg_dask.simulate import plan_blocks

    config = _config(tmp_path)
    options = SimulationOptions(preset="small", transit=CALIBRATOR, random_sources=False)
    first = plan_blocks(config, options)[0].truth
    again = plan_blocks(config, dataclasses.replace(options))[0].truth
    assert first["block_id"] == again["block_id"]
    assert [s["name"] for s in first["sources"]] == [CALIBRATOR]


# --- CASA: the model's convention, the solvers side by side, applycal on our tables ---


@pytest.fixture(scope="module")
def calibrator_ms(strip: dict) -> Path:
    """The calibrator block's rephased data as a Measurement Set (DATA only)."""
    from contimg_dask.io.outputs.ms_writer import write_ms

    return write_ms(strip["stores"][0], strip["root"] / "calibrator.ms",
                    data_group="rephased")


def _ms_column(ms: Path, column: str, shape: tuple[int, ...]) -> np.ndarray:
    """An MS column back in the store's layout and convention: (spw, time, baseline,
    channel, pol), conjugated."""
    from casacore.tables import table

    with table(str(ms), ack=False) as main_table:
        return np.conj(main_table.getcol(column)).reshape(shape)


def _ms_rows(ms: Path, column: str) -> np.ndarray:
    """A row column of an MS as stored: (row, ...)."""
    from casacore.tables import table

    with table(str(ms), ack=False) as main_table:
        return main_table.getcol(column)


@pytest.mark.casa
def test_model_convention_matches_casa_ft(strip: dict, calibrator_ms: Path,
                                          tmp_path: Path) -> None:
    """Our point-source model (beam left out) equals CASA's ft of the same component in
    phase and amplitude on every baseline and channel: ties the model's sign, frame and
    w-term to CASA."""
    from contimg_dask.casa import run_casa
    from contimg_dask.ops.calibration import point_source_visibilities
    from contimg_dask.science.skymodel import path_differences, track_sources
    from contimg_dask.testing.casa_tasks import ft_point_source

    ms = shutil.copytree(calibrator_ms, tmp_path / "ft.ms")
    source = next(s for s in load_calibrators(strip["config"].calibration)[1]
                  if s.name == CALIBRATOR)
    run_casa(strip["config"], ft_point_source, str(ms), str(tmp_path / "cal.cl"),
             np.radians(source.ra_deg), np.radians(source.dec_deg), source.flux_jy,
             source.ref_freq_hz, source.spectral_index)
    geometry = read_geometry(strip["stores"][0])
    ds = block_node(open_block(strip["stores"][0])).to_dataset(inherit=False)
    n_t, n_bl, _, n_p = ds.VISIBILITY.shape
    casa = _ms_column(ms, "MODEL_DATA", (16, n_t, n_bl, -1, n_p))
    (track,) = track_sources([source], geometry, 5.0)
    dw = path_differences([track], geometry, ds.UVW_REPHASED.values[..., 2])
    cross = geometry.ant1 != geometry.ant2
    length = np.linalg.norm(geometry.baselines_local_m[cross], axis=1)
    for spw, sl in enumerate(geometry.subband_slices()):
        freq = geometry.freq_hz[sl]
        flux = np.broadcast_to(source.flux_at(freq), (1, n_t, len(freq)))
        ratio = (point_source_visibilities(dw, flux, freq, n_p)[:, cross]
                 / casa[spw][:, cross])  # (time, baseline, channel, pol)
        assert np.abs(np.abs(ratio) - 1).max() < 1e-5
        # Phases agree to what a 20 mas shift of the source gives: CASA's ft takes the
        # source's offset in ICRS (no differential aberration, ~5 mas here); a sign, frame
        # or w-term error would show as arcseconds to arcminutes.
        allowed = 2 * np.pi * length[None, :, None] * freq[None, None, :] / 299792458.0 * (
            0.020 / 206265)
        assert (np.abs(np.angle(ratio)).max(axis=3) < allowed).all()


@pytest.mark.casa
def test_solutions_agree_with_casa_bandpass_and_gaincal(strip: dict, calibrator_ms: Path,
                                                        tmp_path: Path) -> None:
    """CASA bandpass + gaincal against our model in MODEL_DATA: the complex gain
    G x B of every antenna, channel and polarization agrees with ours within 1 % and 1 deg
    (phases referenced to the same antenna)."""
    from contimg_dask.casa import run_casa
    from contimg_dask.casa.caltables import bandpass_from_table, gains_from_table, read_caltable
    from contimg_dask.processing.calibration_tables import import_from_casa
    from contimg_dask.testing.calibration_model import model_visibilities, write_model_column
    from contimg_dask.testing.casa_tasks import solve_bandpass_and_gains

    ms = shutil.copytree(calibrator_ms, tmp_path / "solve.ms")
    geometry = read_geometry(strip["stores"][0])
    model = model_visibilities(strip["stores"][0], strip["config"])
    slices = geometry.subband_slices()
    write_model_column(ms, lambda s: model[:, :, slices[s]].compute())
    solutions = read_solutions(strip["solutions"])
    refant = solutions.attrs["contimg"]["refant"]
    b_path, g_path = tmp_path / "casa.B", tmp_path / "casa.G"
    run_casa(strip["config"], solve_bandpass_and_gains, str(ms), str(b_path), str(g_path),
             refant, "inf", 5.0)
    b_table, g_table = read_caltable(b_path), read_caltable(g_path)
    bandpass, b_flags = bandpass_from_table(b_table, geometry.freq_hz)  # (ant, f, pol)
    casa = np.empty_like(bandpass)
    for spw, sl in enumerate(slices):
        _, gains, g_flags = gains_from_table(g_table, spw=spw)  # (1, ant, pol)
        assert not g_flags.any()
        casa[:, sl] = gains[0][:, None, :] * bandpass[:, sl]
    assert not b_flags.any()
    ours = solutions.GAIN_BLOCK.values[:, None, :] * solutions.BANDPASS.values
    r = solutions.antenna_name.values.tolist().index(refant)
    ratio = _referenced(ours, r) / _referenced(casa, r)
    assert np.max(np.abs(np.abs(ratio) - 1)) < 0.01
    assert np.max(np.degrees(np.abs(np.angle(ratio)))) < 1.0
    # CASA's tables imported as a solutions store (G averaged over its 16 windows) agree too.
    imported = read_solutions(import_from_casa(b_path, g_path, strip["stores"][0],
                                               tmp_path / "imported.zarr", strip["config"]))
    assert imported.sizes["gain_time"] == 1
    product = imported.GAIN.values[0][:, None, :] * imported.BANDPASS.values
    ratio = _referenced(ours, r) / _referenced(product, r)
    assert np.max(np.abs(np.abs(ratio) - 1)) < 0.01
    assert np.max(np.degrees(np.abs(np.angle(ratio)))) < 1.0


@pytest.mark.casa
def test_casa_applycal_of_our_tables_equals_our_apply(strip: dict, calibrator_ms: Path,
                                                      tmp_path: Path) -> None:
    """Our solutions exported as CASA B and G tables: applycal (calwt=True) accepts them,
    and its CORRECTED_DATA equals our own corrected data (gains interpolated linearly in
    time) and its calibrated WEIGHT our calibrated weights."""
    from contimg_dask.casa import run_casa
    from contimg_dask.processing.calibration_tables import export_to_casa, import_from_casa
    from contimg_dask.testing.casa_tasks import apply_tables

    ms = shutil.copytree(calibrator_ms, tmp_path / "apply.ms")
    b_table, g_table = export_to_casa(strip["solutions"], ms, tmp_path / "ours",
                                      strip["config"])
    run_casa(strip["config"], apply_tables, str(ms), [str(b_table), str(g_table)],
             ["nearestflag", "linear"])
    store = shutil.copytree(strip["stores"][0], tmp_path / "block.zarr")
    apply_solutions(store, strip["solutions"], strip["config"], materialise=True)
    ds = block_node(open_block(store)).to_dataset(inherit=False)
    n_t, n_bl, _, n_p = ds.VISIBILITY_CORRECTED.shape
    casa = _ms_column(ms, "CORRECTED_DATA", (16, n_t, n_bl, -1, n_p))
    geometry = read_geometry(store)
    cross = geometry.ant1 != geometry.ant2
    # calwt=True: CASA scales each row's WEIGHT by |g_a g_b|² of its own gains; without
    # WEIGHT_SPECTRUM it uses one gain per window, so ours (per channel, then averaged over
    # the window's channels) agree to the bandpass's variation across a window (measured
    # 0.996-1.003); a weight left uncalibrated or divided instead of multiplied is off by
    # |g_a g_b|^±2, tens of percent for these gains.
    casa_weight = np.asarray(_ms_rows(ms, "WEIGHT")).reshape(16, n_t, n_bl, n_p)
    before = np.asarray(_ms_rows(calibrator_ms, "WEIGHT")).reshape(16, n_t, n_bl, n_p)
    for spw, sl in enumerate(geometry.subband_slices()):
        ours = ds.VISIBILITY_CORRECTED.values[:, :, sl]
        np.testing.assert_allclose(casa[spw][:, cross], ours[:, cross], rtol=1e-4,
                                   atol=1e-4 * np.abs(ours).mean())
        # The factor each applied its weights by (the MS's WEIGHT before applycal may
        # already be calibrated, when an earlier test left a corrected group in the store).
        ours = (ds.WEIGHT_CORRECTED.values[:, :, sl] / ds.WEIGHT.values[:, :, sl]).mean(axis=2)
        theirs = casa_weight[spw][:, cross] / before[spw][:, cross]
        ratio = theirs / ours[:, cross]
        assert np.abs(ratio - 1).max() < 0.01, (spw, ratio.min(), ratio.max())
        assert np.abs(theirs - 1).max() > 0.1  # the gains do change the weights
    # And back: the tables imported give the same solutions.
    imported = read_solutions(import_from_casa(b_table, g_table, store, tmp_path / "in.zarr",
                                               strip["config"]))
    solutions = read_solutions(strip["solutions"])
    np.testing.assert_allclose(imported.BANDPASS.values, solutions.BANDPASS.values, rtol=1e-6)
    np.testing.assert_allclose(imported.GAIN.values, solutions.GAIN.values, rtol=1e-6)
    np.testing.assert_allclose(imported.gain_time.values, solutions.gain_time.values,
                               atol=1e-3)
