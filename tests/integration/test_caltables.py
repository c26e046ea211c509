"""CASA calibration tables: ours are applied by CASA's applycal as g_i conj(g_j), CASA's own
tables are read back, and the simulator's true gains calibrate its data through CASA."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from casacore.tables import table

from contimg_dask.casa import run_casa
from contimg_dask.casa.caltables import (
    bandpass_from_table,
    gains_from_table,
    read_caltable,
    write_bandpass_table,
    write_gain_table,
)
from contimg_dask.coords.time import mjd_seconds_to_unix
from contimg_dask.errors import InputError
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.ms_writer import write_ms
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from tests.helpers import make_config, read_truth

pytestmark = pytest.mark.casa

REPO_ROOT = Path(__file__).resolve().parents[2]
N_GAIN_INTERVALS = 6  # of 4 integrations each, in a 24-integration block


@pytest.fixture(scope="module", autouse=True)
def casa_worker_imports_this_module() -> Any:
    """The CASA-side helpers below are pickled by reference: the worker must import them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPO_ROOT))
        yield


def applycal_columns(vis: str, gaintable: list[str], interp: list[str]) -> dict[str, Any]:
    """CASA side: applycal (calwt=False) in place, then the MS columns the checks need."""
    import casatasks
    import casatools

    casatasks.applycal(vis=vis, gaintable=gaintable, interp=interp, calwt=False,
                       flagbackup=False)
    tb = casatools.table()
    tb.open(vis)
    try:  # casatools gives (pol, chan, row): return (row, chan, pol)
        return {name: np.asarray(tb.getcol(name)).T for name in (
            "DATA", "CORRECTED_DATA", "FLAG", "ANTENNA1", "ANTENNA2", "TIME", "DATA_DESC_ID")}
    finally:
        tb.close()


def solve_with_casa(vis: str, btable: str, gtable: str, refant: str) -> None:
    """CASA side: a 1 Jy model, then bandpass (one solution) and gaincal (per integration)."""
    import casatasks

    casatasks.setjy(vis=vis, field="0", standard="manual", fluxdensity=[1.0, 0, 0, 0],
                    usescratch=True)
    casatasks.bandpass(vis=vis, caltable=btable, solint="inf", combine="scan", refant=refant,
                       minsnr=0.0)
    casatasks.gaincal(vis=vis, caltable=gtable, solint="int", refant=refant, gaintype="G",
                      calmode="ap", minsnr=0.0, gaintable=[btable])


@dataclass(frozen=True)
class MsAxes:
    freq_hz: np.ndarray  # all channels, ascending
    time_unix: np.ndarray  # integration centres
    interval_s: float
    antenna_names: list[str]


def ms_axes(ms: Path) -> MsAxes:
    with table(str(ms), ack=False) as main:
        time_unix = mjd_seconds_to_unix(np.unique(main.getcol("TIME")))
        interval = float(main.getcell("INTERVAL", 0))
    with table(f"{ms}/SPECTRAL_WINDOW", ack=False) as spw:
        freq = spw.getcol("CHAN_FREQ").ravel()
    with table(f"{ms}/ANTENNA", ack=False) as ant:
        names = list(ant.getcol("NAME"))
    return MsAxes(freq, time_unix, interval, names)


def block_ms(blocks: Path, root: Path) -> Path:
    """The first simulated block of ``blocks``, ingested (rephased) and written as an MS."""
    truth = read_truth(sorted(blocks.glob("*_truth.h5"))[0])
    files = [blocks / truth["files"][str(sb)] for sb in range(16)]
    store = ingest_block(files, root / f"{blocks.name}.zarr", make_config(root))
    return write_ms(store, root / f"{blocks.name}.ms")


@pytest.fixture(scope="module")
def ms(small_blocks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return block_ms(small_blocks, tmp_path_factory.mktemp("caltables"))


def random_gains(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    amplitude = rng.uniform(0.5, 2.0, shape)
    return (amplitude * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


@dataclass(frozen=True)
class Exported:
    """Random solutions for ``ms`` and the tables they were written to."""

    axes: MsAxes
    bandpass: np.ndarray  # (ant, freq, pol)
    bandpass_flags: np.ndarray
    bandpass_snr: np.ndarray
    gain_times: np.ndarray  # (N_GAIN_INTERVALS,)
    gains: np.ndarray  # (time, ant, pol)
    gain_flags: np.ndarray
    gain_snr: np.ndarray
    btable: Path
    gtable: Path
    refant: int = 4


@pytest.fixture(scope="module")
def exported(ms: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("exported")
    axes = ms_axes(ms)
    rng = np.random.default_rng(11)
    n_ant, n_freq, n_pol = len(axes.antenna_names), len(axes.freq_hz), 2
    bandpass = random_gains(rng, (n_ant, n_freq, n_pol))
    bandpass_flags = np.zeros(bandpass.shape, bool)
    bandpass_flags[3, 10, 0] = True  # one channel of one antenna's X
    bandpass_flags[5, 40:48, 1] = True  # a whole spectral window of one antenna's Y
    gain_times = axes.time_unix.reshape(N_GAIN_INTERVALS, -1).mean(axis=1)
    gains = random_gains(rng, (N_GAIN_INTERVALS, n_ant, n_pol))
    gain_flags = np.zeros(gains.shape, bool)
    gain_flags[2, 7, 1] = True
    bandpass_snr = rng.uniform(5, 50, bandpass.shape)
    gain_snr = rng.uniform(5, 50, gains.shape)
    config = make_config(root)
    refant = Exported.refant
    btable = write_bandpass_table(
        config, ms, root / "ours.B", axes.freq_hz, bandpass, bandpass_flags, bandpass_snr,
        float(axes.time_unix.mean()), axes.interval_s * len(axes.time_unix), refant)
    gtable = write_gain_table(config, ms, root / "ours.G", gain_times, gains, gain_flags,
                              gain_snr, axes.interval_s * 4, refant)
    return Exported(axes, bandpass, bandpass_flags, bandpass_snr, gain_times, gains,
                    gain_flags, gain_snr, btable, gtable)


def casa_apply(ms: Path, tables: list[Path], interp: list[str], work: Path) -> dict[str, Any]:
    copy = work / "applied.ms"
    shutil.copytree(ms, copy)
    return run_casa(make_config(work), applycal_columns, str(copy), [str(t) for t in tables],
                    interp)


def row_gains(columns: dict[str, Any], exported: Exported, gains: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per MS row and channel: g_ant1, g_ant2 (= G(t) B(nu)) and their flags, for the given
    per-row (time-interpolated) G of shape (row, ant, pol)."""
    a1, a2 = columns["ANTENNA1"], columns["ANTENNA2"]
    n_chan = columns["DATA"].shape[1]
    chans = columns["DATA_DESC_ID"][:, None] * n_chan + np.arange(n_chan)
    rows = np.arange(len(a1))
    g1 = gains[rows, a1][:, None] * exported.bandpass[a1[:, None], chans]
    g2 = gains[rows, a2][:, None] * exported.bandpass[a2[:, None], chans]
    f1 = exported.bandpass_flags[a1[:, None], chans]
    f2 = exported.bandpass_flags[a2[:, None], chans]
    return g1, g2, f1, f2


def nearest_interval(columns: dict[str, Any], exported: Exported) -> np.ndarray:
    time_unix = mjd_seconds_to_unix(columns["TIME"])
    return np.abs(time_unix[:, None] - exported.gain_times).argmin(axis=1)


def test_applycal_divides_by_gi_conj_gj_and_flags_flagged_solutions(
        ms: Path, exported: Exported, tmp_path: Path) -> None:
    """CASA applies our B and G tables as CORRECTED = DATA / (g_i conj(g_j)), g = G(t) B(nu)
    for ANTENNA1 = i, ANTENNA2 = j, and flags the data of every flagged solution.

    Measured: max relative error 6.5e-7 (complex64 rounding). The frequency interpolation
    must be 'nearestflag' (or 'linearflag') for flagged bandpass channels to flag the data;
    see the next test for plain 'nearest'."""
    columns = casa_apply(ms, [exported.btable, exported.gtable],
                         ["nearest,nearestflag", "nearest"], tmp_path)
    interval = nearest_interval(columns, exported)
    g1, g2, f1, f2 = row_gains(columns, exported, exported.gains[interval])
    gf1 = exported.gain_flags[interval, columns["ANTENNA1"]][:, None]
    gf2 = exported.gain_flags[interval, columns["ANTENNA2"]][:, None]
    expected_flags = f1 | f2 | gf1 | gf2
    data, corrected = columns["DATA"], columns["CORRECTED_DATA"]
    assert not table(str(ms), ack=False).getcol("FLAG").any()  # all flags come from the tables
    np.testing.assert_array_equal(columns["FLAG"], expected_flags)
    # Both flag baseline 5-7's Y at channels 40-47 in integrations 8-11: 32 counted twice.
    assert expected_flags.sum() == 24 * 12 + 8 * 24 * 12 + 4 * 12 * 128 - 32
    good = ~expected_flags
    expected = data / (g1 * np.conj(g2))
    relative = np.abs(corrected[good] - expected[good]) / np.abs(expected[good])
    assert relative.max() < 1e-5
    assert np.abs(corrected[good] - data[good]).max() > 0.5 * np.abs(data).max()


def test_plain_nearest_fills_flagged_bandpass_channels_from_a_neighbour(
        ms: Path, exported: Exported, tmp_path: Path) -> None:
    """With frequency interp 'nearest' (no 'flag'), CASA does not flag data under a flagged
    bandpass channel: it applies the nearest unflagged channel of the window (here the lower
    of two equidistant ones). A window with no unflagged channel still flags the data."""
    columns = casa_apply(ms, [exported.btable, exported.gtable], ["nearest,nearest", "nearest"],
                         tmp_path)
    a1, a2, spw = columns["ANTENNA1"], columns["ANTENNA2"], columns["DATA_DESC_ID"]
    rows = (a1 == 0) & (a2 == 3) & (spw == 1)  # channel 10 = spw 1, channel 2
    assert not columns["FLAG"][rows, 2, 0].any()
    interval = nearest_interval(columns, exported)[rows]
    g0 = exported.gains[interval, 0, 0] * exported.bandpass[0, 10, 0]
    g3 = exported.gains[interval, 3, 0] * exported.bandpass[3, 9, 0]
    expected = columns["DATA"][rows, 2, 0] / (g0 * np.conj(g3))
    np.testing.assert_allclose(columns["CORRECTED_DATA"][rows, 2, 0], expected, rtol=1e-5)
    whole_window = ((a1 == 5) | (a2 == 5)) & (spw == 5)
    assert columns["FLAG"][whole_window, :, 1].all()


def test_linear_time_interpolation_is_in_amplitude_and_phase(
        ms: Path, exported: Exported, tmp_path: Path) -> None:
    """With interp 'linear', CASA interpolates a G table's amplitude and phase (the shorter
    way round) separately between solution times, not the complex values."""
    columns = casa_apply(ms, [exported.btable, exported.gtable],
                         ["nearest,nearestflag", "linear"], tmp_path)
    time_unix = mjd_seconds_to_unix(columns["TIME"])
    position = np.interp(time_unix, exported.gain_times, np.arange(N_GAIN_INTERVALS))
    lower = np.minimum(np.floor(position).astype(int), N_GAIN_INTERVALS - 2)
    w = (position - lower)[:, None, None]
    g0, g1 = exported.gains[lower], exported.gains[lower + 1]
    amp_phase = ((1 - w) * np.abs(g0) + w * np.abs(g1)) * np.exp(
        1j * (np.angle(g0) + w * np.angle(g1 / g0)))
    complex_linear = (1 - w) * g0 + w * g1
    good = ~columns["FLAG"]
    errors = {}
    for name, interpolated in (("amp_phase", amp_phase), ("complex", complex_linear)):
        gi, gj, _, _ = row_gains(columns, exported, interpolated)
        expected = columns["DATA"] / (gi * np.conj(gj))
        errors[name] = (np.abs(columns["CORRECTED_DATA"][good] - expected[good])
                        / np.abs(expected[good])).max()
    assert errors["amp_phase"] < 1e-5
    assert errors["complex"] > 0.1


def test_our_tables_read_back_unchanged(ms: Path, exported: Exported) -> None:
    axes = exported.axes
    btab, gtab = read_caltable(exported.btable), read_caltable(exported.gtable)
    assert (btab.kind, gtab.kind) == ("B Jones", "G Jones")
    for tab in (btab, gtab):
        assert tab.ms_name == ms.name
        assert tab.antenna_names == axes.antenna_names
        assert set(tab.refant) == {exported.refant}
        assert set(tab.field) == {0}
        assert len(tab.spw_freq_hz) == 16
    np.testing.assert_array_equal(np.concatenate(btab.spw_freq_hz), axes.freq_hz)
    np.testing.assert_allclose(np.concatenate(gtab.spw_freq_hz),
                               axes.freq_hz.reshape(16, -1).mean(axis=1), rtol=1e-12)
    assert np.abs(btab.time_unix - axes.time_unix.mean()).max() < 1e-5

    bandpass, flags = bandpass_from_table(btab, axes.freq_hz)
    np.testing.assert_array_equal(bandpass, exported.bandpass)
    np.testing.assert_array_equal(flags, exported.bandpass_flags)
    subset = axes.freq_hz[5::7]
    np.testing.assert_array_equal(bandpass_from_table(btab, subset)[0],
                                  exported.bandpass[:, 5::7])

    n_chan = len(axes.freq_hz) // 16
    for row in range(len(btab.spw)):
        chans = slice(btab.spw[row] * n_chan, (btab.spw[row] + 1) * n_chan)
        np.testing.assert_allclose(btab.snr[row].T, exported.bandpass_snr[btab.antenna[row],
                                                                          chans], rtol=1e-6)

    assert len(gtab.time_unix) == N_GAIN_INTERVALS * 12 * 16
    spw0 = gtab.spw == 0
    gain_snr = np.array(gtab.snr)[spw0, :, 0].reshape(N_GAIN_INTERVALS, 12, 2)
    np.testing.assert_allclose(gain_snr, exported.gain_snr, rtol=1e-6)
    for spw in (None, 15):
        times, gains, gain_flags = gains_from_table(gtab, spw)
        assert np.abs(times - exported.gain_times).max() < 1e-5
        np.testing.assert_array_equal(gains, exported.gains)
        np.testing.assert_array_equal(gain_flags, exported.gain_flags)


def test_snr_is_written_with_casa_paramerr(exported: Exported) -> None:
    """SNR as given, PARAMERR = |CPARAM| / SNR: the relation CASA's own solvers write."""
    with table(str(exported.gtable), ack=False) as tab:
        cparam, snr, err = (tab.getcol(c) for c in ("CPARAM", "SNR", "PARAMERR"))
    assert snr.min() >= 5
    np.testing.assert_allclose(err, np.abs(cparam) / snr, rtol=1e-6)


def test_reads_tables_casa_made(ms: Path, tmp_path: Path) -> None:
    """Tables from CASA's bandpass and gaincal (not ours) parse: kinds, shapes, frequencies,
    times, antennas, and the reference antenna (name '40' = row 4), whose phase is zero."""
    copy = tmp_path / "solve.ms"
    shutil.copytree(ms, copy)
    btable, gtable = tmp_path / "casa.B", tmp_path / "casa.G"
    run_casa(make_config(tmp_path), solve_with_casa, str(copy), str(btable), str(gtable), "40")
    axes = ms_axes(ms)
    refant = axes.antenna_names.index("40")

    btab = read_caltable(btable)
    assert btab.kind == "B Jones" and btab.ms_name == copy.name
    assert len(btab.cparam) == 12 * 16 and btab.cparam[0].shape == (2, 8)
    assert sorted(zip(btab.spw, btab.antenna, strict=True)) == [
        (s, a) for s in range(16) for a in range(12)]
    assert set(btab.refant) == {refant}
    np.testing.assert_array_equal(np.concatenate(btab.spw_freq_hz), axes.freq_hz)
    bandpass, flags = bandpass_from_table(btab, axes.freq_hz)
    assert bandpass.shape == (12, 128, 2) and not flags.all()
    row = np.flatnonzero((btab.spw == 3) & (btab.antenna == 7))[0]
    np.testing.assert_array_equal(bandpass[7, 24:32], btab.cparam[row].T)
    assert np.abs(np.angle(bandpass[refant][~flags[refant]])).max() < 1e-6
    assert np.abs(np.angle(bandpass[(refant + 1) % 12])).max() > 0.1

    gtab = read_caltable(gtable)
    times, gains, gain_flags = gains_from_table(gtab)
    assert gtab.kind == "G Jones" and gains.shape == (24, 12, 2)
    assert set(gtab.refant) == {refant}
    assert np.abs(times - axes.time_unix).max() < 1e-3
    assert np.abs(np.angle(gains[:, refant][~gain_flags[:, refant]])).max() < 1e-6
    assert np.abs(gains[~gain_flags] - 1).max() > 1e-3  # real solutions, not placeholders


def test_simulator_true_gains_calibrate_its_data_through_casa(tmp_path: Path) -> None:
    """The pipeline's gains go to CASA unchanged: the simulator's true gains (our convention,
    V = conj(g_1) g_2 V_true), exported as B (bandpass) and G (per integration) tables and
    applied by CASA to the MS of a noiseless, RFI-free block, give the MS of the same sky
    simulated with unit gains."""
    config = make_config(tmp_path)
    common = dict(preset="small", noise=False, rfi=False, seed=5)
    simulate_blocks(config, tmp_path / "gains", SimulationOptions(**common))
    simulate_blocks(config, tmp_path / "unit", SimulationOptions(gains=False, **common))
    corrupted_ms = block_ms(tmp_path / "gains", tmp_path)
    clean_ms = block_ms(tmp_path / "unit", tmp_path)

    axes = ms_axes(corrupted_ms)
    truth_path = sorted((tmp_path / "gains").glob("*_truth.h5"))[0]
    with h5py.File(truth_path, "r") as truth:
        time_gains, bandpass, truth_freq = (truth[k][()] for k in (
            "time_gains", "bandpass", "freq_hz"))
    subband = tmp_path / "gains" / read_truth(truth_path)["files"]["0"]
    with h5py.File(subband, "r") as f:
        numbers = dict(zip(f["Header/antenna_names"][()].astype(str),
                           f["Header/antenna_numbers"][()], strict=True))
    antennas = [numbers[name] for name in axes.antenna_names]
    ascending = np.argsort(truth_freq)
    ones = np.ones((len(antennas), len(truth_freq), 2))
    btable = write_bandpass_table(
        config, corrupted_ms, tmp_path / "truth.B", truth_freq[ascending],
        bandpass[antennas][:, ascending], ones == 0, ones, float(axes.time_unix.mean()),
        axes.interval_s * 24, -1)
    gains = np.swapaxes(time_gains[antennas], 0, 1)  # (time, antenna, pol)
    gtable = write_gain_table(config, corrupted_ms, tmp_path / "truth.G", axes.time_unix,
                              gains, np.zeros(gains.shape, bool), np.ones(gains.shape),
                              axes.interval_s, -1)

    columns = casa_apply(corrupted_ms, [btable, gtable], ["nearest,nearestflag", "nearest"],
                         tmp_path)
    with table(str(clean_ms), ack=False) as clean:  # rows in the same order
        np.testing.assert_array_equal(clean.getcol("ANTENNA2"), columns["ANTENNA2"])
        expected = clean.getcol("DATA")
    corrected = columns["CORRECTED_DATA"]
    assert not columns["FLAG"].any()
    scale = np.abs(expected).max()
    assert np.abs(corrected - expected).max() < 2e-5 * scale
    assert np.abs(columns["DATA"] - expected).max() > 0.1 * scale  # the gains did act


def test_wrong_tables_and_frequencies_are_input_errors(ms: Path, exported: Exported,
                                                       tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a CASA calibration table") as info:
        read_caltable(ms)
    assert info.value.file == str(ms)
    with pytest.raises(InputError, match="cannot open"):
        read_caltable(tmp_path / "missing.G")
    for keyword, value, message in (("ParType", "Float", "parameter type 'Float'"),
                                    ("VisCal", "K Jones", "unsupported calibration type")):
        altered = tmp_path / f"{value}.tab"
        shutil.copytree(exported.btable, altered)
        with table(str(altered), readonly=False, ack=False) as tab:
            tab.putkeyword(keyword, value)
        with pytest.raises(InputError, match=message) as info:
            read_caltable(altered)
        assert info.value.file == str(altered)

    btab = read_caltable(exported.btable)
    freq = exported.axes.freq_hz
    missing = f"no channel at {freq[3] + 1e4:.1f} Hz"
    with pytest.raises(InputError, match=re.escape(missing)) as info:
        bandpass_from_table(btab, np.sort(np.append(freq, freq[3] + 1e4)))
    assert info.value.file == str(exported.btable)
    with pytest.raises(InputError, match="a B Jones table where a G Jones table is needed"):
        gains_from_table(btab)
    with pytest.raises(InputError, match=re.escape(f"no channel at {freq[0]:.1f} Hz")):
        write_bandpass_table(make_config(tmp_path), ms, tmp_path / "x.B", freq[1:],
                             exported.bandpass[:, 1:], exported.bandpass_flags[:, 1:],
                             exported.bandpass_snr[:, 1:], 0.0, 1.0, 0)
    assert not (tmp_path / "x.B").exists()
