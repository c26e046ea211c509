"""The block simulator: the correlator's file layout, and visibilities that an independent
implementation (pyuvdata) agrees with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from contimg_dask.science.skymodel import PointSource, write_catalog
from contimg_dask.simulate import Faults, SimulationOptions, plan_blocks, simulate_blocks
from tests.helpers import airy_power, make_config, read_truth, read_with_true_phase_centres


def _files(directory: Path, block: int = 0) -> list[Path]:
    stamps = sorted({p.name[:19] for p in directory.glob("*_truth.h5")})
    truth = read_truth(directory / f"{stamps[block]}_truth.h5")
    return [directory / name for _, name in sorted(truth["files"].items(), key=lambda kv:
                                                   int(kv[0]))]


def test_full_preset_band_and_array(tmp_path: Path) -> None:
    plan = plan_blocks(make_config(tmp_path), SimulationOptions(preset="full"))[0]
    assert plan.subband_freqs(0)[0] == pytest.approx(1498.643e6, abs=1e3)
    assert plan.subband_freqs(15)[-1] == pytest.approx(1311.4e6, abs=0.1e6)
    assert np.diff(plan.subband_freqs(3)) == pytest.approx(-244140.625)
    assert plan.subband_freqs(1)[0] - plan.subband_freqs(0)[0] == pytest.approx(-11.71875e6)
    assert plan.header.n_ants_data == 96
    assert len(plan.header.ant_1_array) == 4656
    assert plan.integration_time_s == 12.884902 and len(plan.unix) == 24


def test_file_layout_is_the_correlators(small_blocks: Path) -> None:
    path = _files(small_blocks)[0]
    assert path.name.endswith("_sb00.hdf5")
    with h5py.File(path, "r") as f:
        hdr, data = f["Header"], f["Data"]
        n_blts, n_freqs = hdr["Nblts"][()], hdr["Nfreqs"][()]
        assert hdr["telescope_name"][()] == b"OVRO_MMA"
        assert hdr["instrument"][()] == b"DSA"
        assert hdr["phase_type"][()] == b"drift"
        assert hdr["object_name"][()] == b"search"
        assert hdr["Ntimes"][()] == 24 and hdr["Npols"][()] == 2
        assert list(hdr["polarization_array"][()]) == [-5, -6]
        assert hdr["freq_array"].shape == (1, n_freqs)
        freqs = hdr["freq_array"][0]
        assert np.all(np.diff(freqs) < 0)
        assert hdr["channel_width"][()] < 0
        assert hdr["uvw_array"].dtype == np.float32
        assert hdr["Nants_telescope"][()] == 117
        assert [n.decode() for n in hdr["antenna_names"][()]][:3] == ["1", "2", "3"]
        assert hdr["antenna_positions"].shape == (117, 3)
        extra = hdr["extra_keywords"]
        assert extra["phase_center_epoch"][()] == b"HADEC"
        assert extra["ha_phase_center"][()] == 0.0
        assert extra["phase_center_dec"][()] == pytest.approx(np.radians(16.1))
        assert hdr["phase_center_app_dec"][()] == pytest.approx(np.radians(16.1))
        assert len(extra["applied_delays_ns"][()].split()) == 117 * 2
        vis = data["visdata"]
        assert vis.shape == (n_blts, 1, n_freqs, 2)
        assert vis.dtype == np.complex64
        assert vis.maxshape == (None, 1, n_freqs, 2)  # resizable, appended per integration
        assert vis.chunks is not None and vis.chunks[0] < n_blts
        assert data["flags"].dtype == np.bool_ and data["nsamples"].dtype == np.float32
        # Rows time-major, upper-triangular baselines with autocorrelations first.
        t = hdr["time_array"][()]
        n_bls = hdr["Nbls"][()]
        assert np.all(t[:n_bls] == t[0]) and t[n_bls] > t[0]
        a1, a2 = hdr["ant_1_array"][:n_bls], hdr["ant_2_array"][:n_bls]
        assert np.all(a1 <= a2) and a1[0] == a2[0]
        # The stored float32 UVWs are the same for every integration (HA 0 at one time).
        uvw = hdr["uvw_array"][()]
        np.testing.assert_array_equal(uvw[:n_bls], uvw[-n_bls:])


def test_positive_channel_width_option(tmp_path: Path) -> None:
    out = tmp_path / "pos"
    simulate_blocks(make_config(tmp_path), out, SimulationOptions(
        preset="small", positive_channel_width=True, noise=False, rfi=False,
        faults=Faults(missing=frozenset(range(1, 16)))))
    with h5py.File(next(out.glob("*_sb00.hdf5")), "r") as f:
        assert f["Header/channel_width"][()] > 0
        assert np.all(np.diff(f["Header/freq_array"][0]) < 0)


@pytest.fixture(scope="module")
def lone_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PointSource, dict]:
    """A noiseless, gainless, RFI-free block of all 96 antennas with one source 1.4 deg off
    the phase centre."""
    root = tmp_path_factory.mktemp("lone")
    config = make_config(root, **{"simulation.presets.small.n_antennas": None})
    options = SimulationOptions(preset="small", random_sources=False, noise=False,
                                gains=False, rfi=False,
                                faults=Faults(missing=frozenset(range(1, 15))))
    centre = plan_blocks(config, options)[0].truth
    ra = np.degrees(centre["phase_centre_icrs_ra_rad"][12]) + 1.2
    dec = np.degrees(centre["phase_centre_icrs_dec_rad"][12]) - 0.8
    source = PointSource("LONE", ra, dec, 2.0, 1.4e9, -0.7)
    write_catalog([source], root / "lone.csv")
    out = root / "block"
    simulate_blocks(config, out, dataclasses.replace(options, catalog=root / "lone.csv"))
    truth = read_truth(next(out.glob("*_truth.h5")))
    return out, source, truth


@pytest.mark.parametrize("subband", [0, 15])
def test_lone_source_phases_to_zero_in_pyuvdata(lone_source, subband: int) -> None:
    """pyuvdata, told the true per-integration phase centres, recomputes the UVWs and phases
    to the source: phase < 0.01 deg and amplitude within 1e-4 on every baseline."""
    out, source, truth = lone_source
    uv = read_with_true_phase_centres(next(out.glob(f"*_sb{subband:02d}.hdf5")), truth)
    uv.phase(ra=np.radians(source.ra_deg), dec=np.radians(source.dec_deg), epoch="J2000",
             cat_name="LONE", use_ant_pos=True)
    cross = uv.ant_1_array != uv.ant_2_array
    assert cross.sum() == 4560 * 24
    data = uv.data_array[cross]  # (n_row, n_freq, n_pol)
    assert np.degrees(np.abs(np.angle(data))).max() < 0.01
    # Expected amplitude: flux at each channel times the Airy beam at the source's offset
    # from the pointing (offset from astropy, beam from scipy's J1, both independent of the
    # simulator and the package).
    times = np.unique(uv.time_array)
    pointing = SkyCoord(np.array(truth["phase_centre_icrs_ra_rad"]) * u.rad,
                        np.array(truth["phase_centre_icrs_dec_rad"]) * u.rad)
    offset = SkyCoord(source.ra_deg * u.deg, source.dec_deg * u.deg).separation(pointing).rad
    freq = uv.freq_array
    expected = (source.flux_at(freq)[None, :]
                * airy_power(offset[:, None], freq[None, :]))  # (time, freq)
    t_index = np.searchsorted(times, uv.time_array[cross])
    ratio = np.abs(data) / expected[t_index][:, :, None]
    assert np.abs(ratio - 1).max() < 1e-4
    assert np.ptp(offset) > np.radians(0.5)  # the source drifts through the beam


def test_noise_matches_sefd(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    out = tmp_path / "noise"
    simulate_blocks(config, out, SimulationOptions(
        preset="small", random_sources=False, gains=False, rfi=False, seed=5,
        faults=Faults(missing=frozenset(range(1, 16)))))
    truth = read_truth(next(out.glob("*_truth.h5")))
    with h5py.File(next(out.glob("*_sb00.hdf5")), "r") as f:
        vis = f["Data/visdata"][:, 0]
        a1, a2 = f["Header/ant_1_array"][()], f["Header/ant_2_array"][()]
        width = abs(f["Header/channel_width"][()])
        tau = f["Header/integration_time"][0]
    sigma = 6500.0 / np.sqrt(2 * width * tau)
    assert truth["noise_sigma_jy"] == pytest.approx(sigma)
    cross = vis[a1 != a2]
    assert np.std(cross.real) == pytest.approx(sigma, rel=0.02)
    assert np.std(cross.imag) == pytest.approx(sigma, rel=0.02)
    autos = vis[a1 == a2]
    assert np.mean(autos.real) == pytest.approx(6500.0, rel=0.01)
    assert np.all(autos.imag == 0)


def test_truth_gains_reproduce_the_data(tmp_path: Path) -> None:
    """Noiseless, RFI-free data divided by conj(g1)·g2 from the truth file equal the same sky
    simulated with unit gains."""
    config = make_config(tmp_path)
    common = dict(preset="small", noise=False, rfi=False, seed=2,
                  faults=Faults(missing=frozenset(range(2, 16))))
    simulate_blocks(config, tmp_path / "g", SimulationOptions(**common))
    simulate_blocks(config, tmp_path / "u", SimulationOptions(gains=False, **common))
    with h5py.File(next((tmp_path / "g").glob("*_truth.h5")), "r") as t:
        gt, bp, freq_all = t["time_gains"][()], t["bandpass"][()], t["freq_hz"][()]
    for sb in (0, 1):
        with h5py.File(next((tmp_path / "g").glob(f"*_sb{sb:02d}.hdf5")), "r") as f:
            corrupted = f["Data/visdata"][:, 0]
            a1, a2 = f["Header/ant_1_array"][()], f["Header/ant_2_array"][()]
            n_bls = f["Header/Nbls"][()]
            freq = f["Header/freq_array"][0]
        with h5py.File(next((tmp_path / "u").glob(f"*_sb{sb:02d}.hdf5")), "r") as f:
            clean = f["Data/visdata"][:, 0]
        chans = np.searchsorted(-freq_all, -freq)
        t_index = np.arange(len(a1)) // n_bls
        g1 = gt[a1, t_index][:, None, :] * bp[a1][:, chans]
        g2 = gt[a2, t_index][:, None, :] * bp[a2][:, chans]
        np.testing.assert_allclose(corrupted / (np.conj(g1) * g2), clean, rtol=2e-5,
                                   atol=1e-6 * np.abs(clean).max())
        assert np.abs(corrupted - clean).max() > 0.1 * np.abs(clean).max()  # gains did act


def test_rfi_truth_is_what_was_added(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    common = dict(preset="small", seed=4, faults=Faults(missing=frozenset(range(4, 16))))
    simulate_blocks(config, tmp_path / "rfi", SimulationOptions(**common))
    simulate_blocks(config, tmp_path / "clean", SimulationOptions(rfi=False, **common))
    truth_path = next((tmp_path / "rfi").glob("*_truth.h5"))
    truth = read_truth(truth_path)
    assert truth["rfi"]["bad_antennas"], "the default configuration injects a bad antenna"
    total = 0
    with h5py.File(truth_path, "r") as t:
        for sb in range(4):
            with h5py.File(next((tmp_path / "rfi").glob(f"*_sb{sb:02d}.hdf5")), "r") as f:
                dirty = f["Data/visdata"][:, 0]
            with h5py.File(next((tmp_path / "clean").glob(f"*_sb{sb:02d}.hdf5")), "r") as f:
                clean = f["Data/visdata"][:, 0]
            amplitude = t[f"rfi_amplitude_jy/sb{sb:02d}"][()].astype(float)
            np.testing.assert_allclose(np.abs(dirty - clean), amplitude, rtol=2e-3, atol=0.05)
            total += int((amplitude > 0).sum())
    assert total > 0


def test_same_seed_same_data(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    options = SimulationOptions(preset="small", seed=9,
                                faults=Faults(missing=frozenset(range(1, 16))))
    simulate_blocks(config, tmp_path / "a", options)
    simulate_blocks(config, tmp_path / "b", options)
    with h5py.File(next((tmp_path / "a").glob("*_sb00.hdf5"))) as fa, \
            h5py.File(next((tmp_path / "b").glob("*_sb00.hdf5"))) as fb:
        np.testing.assert_array_equal(fa["Data/visdata"][()], fb["Data/visdata"][()])


def test_consecutive_blocks_drift_and_vary(small_blocks: Path) -> None:
    truths = [read_truth(p) for p in sorted(small_blocks.glob("*_truth.h5"))]
    assert len(truths) == 2
    dt_s = truths[1]["time_unix"][0] - truths[0]["time_unix"][0]
    assert dt_s == pytest.approx(24 * 12.884902, abs=1e-3)
    # The field drifts east with the sky by ~1.29 deg of RA per block.
    dra = truths[1]["phase_centre_icrs_ra_rad"][0] - truths[0]["phase_centre_icrs_ra_rad"][0]
    assert np.degrees(dra) == pytest.approx(dt_s * 360 / 86164.1, rel=1e-3)
    scale0 = {s["name"]: s["flux_scale"] for s in truths[0]["sources"]}
    scale1 = {s["name"]: s["flux_scale"] for s in truths[1]["sources"]}
    variable = [s["name"] for s in truths[0]["sources"] if s["variability_rms"] > 0]
    steady = [s["name"] for s in truths[0]["sources"] if s["variability_rms"] == 0]
    assert all(scale0[n] == 1.0 for n in steady)
    assert any(scale0[n] != scale1.get(n, scale0[n]) for n in variable if n in scale1)
    # File names carry timestamps a few seconds apart; time arrays are identical.
    names = truths[0]["files"]
    stamps = {name[:19] for name in names.values()}
    assert 1 <= len(stamps) <= 4
    times = set()
    for name in names.values():
        with h5py.File(small_blocks / name) as f:
            times.add(float(f["Header/time_array"][0]))
    assert len(times) == 1


def test_calibrator_option(tmp_path: Path) -> None:
    out = tmp_path / "cal"
    simulate_blocks(make_config(tmp_path), out, SimulationOptions(
        preset="small", calibrator=True, random_sources=False,
        faults=Faults(missing=frozenset(range(1, 16)))))
    truth = read_truth(next(out.glob("*_truth.h5")))
    assert [s["name"] for s in truth["sources"]] == ["SIMCAL"]
    assert truth["sources"][0]["flux_jy"] == 20.0


def test_faults(tmp_path: Path) -> None:
    out = tmp_path / "faulty"
    simulate_blocks(make_config(tmp_path), out, SimulationOptions(
        preset="small", faults=Faults(missing=frozenset({7}), truncated=frozenset({3}),
                                      shifted_time=frozenset({5}))))
    names = {p.name[-9:-5] for p in out.glob("*_sb*.hdf5")}
    assert "sb07" not in names and len(names) == 15
    with pytest.raises(OSError):
        h5py.File(next(out.glob("*_sb03.hdf5")), "r")
    with h5py.File(next(out.glob("*_sb05.hdf5"))) as f5, \
            h5py.File(next(out.glob("*_sb04.hdf5"))) as f4:
        shift = (f5["Header/time_array"][0] - f4["Header/time_array"][0]) * 86400
    assert shift == pytest.approx(12.884902, abs=1e-3)
    truth = read_truth(next(out.glob("*_truth.h5")))
    assert truth["faults"] == {"missing": [7], "truncated": [3], "shifted_time": [5]}
    assert json.dumps(truth)  # plain JSON
