"""CASA calibration tables: export antenna-based gains, import CASA's B and G Jones tables.

Conventions (checked by ``tests/integration/test_caltables.py`` against CASA's applycal):

- CASA's model is DATA_ij = g_i conj(g_j) MODEL_ij for ANTENNA1 = i, ANTENNA2 = j, and applycal
  writes CORRECTED_DATA = DATA / (g_i conj(g_j)). Our block store holds conj(MS DATA) with
  V_store = conj(g_ant1) g_ant2 V_true, so a pipeline gain g is written to CASA unchanged.
- Arrays are indexed by the MS's antenna order (ANTENNA table row = ANTENNA1 value) and its
  polarization receptors in order (X, Y for XX, YY data).
- Times are Unix seconds (UTC) here and MJD seconds (UTC) in the tables.
- A table is created empty by CASA itself (``calibrater.createcaltable``, in a CASA worker
  process), which copies the MS's ANTENNA, FIELD, SPECTRAL_WINDOW and OBSERVATION subtables,
  then its rows are written with python-casacore. Rows are ordered spectral window, time,
  antenna, as CASA's solvers write them; WEIGHT is left undefined, as CASA leaves it, and
  PARAMERR = |CPARAM| / SNR (CASA's SNR is exactly that ratio), 0 where SNR <= 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from contimg_dask.casa import run_casa
from contimg_dask.config.schema import PipelineConfig
from contimg_dask.coords.time import mjd_seconds_to_unix, unix_to_mjd_seconds
from contimg_dask.errors import InputError
from contimg_dask.io.system.atomic import atomic_directory

BANDPASS = "B Jones"
GAIN = "G Jones"
SUPPORTED_KINDS = (BANDPASS, GAIN)
FREQ_MATCH_TOL_HZ = 1.0  # channel frequencies are equal if within this
NO_SCAN = -1  # SCAN_NUMBER of solutions not tied to one scan


@dataclass(frozen=True)
class CalTable:
    """The rows of a CASA calibration table with a Complex parameter (one entry per row).

    ``cparam``, ``flag`` and ``snr`` hold one (n_pol, n_chan) array per row (CASA's cell
    order), n_chan = 1 for G Jones. ``spw_freq_hz[s]`` are spectral window ``s``'s channel
    frequencies (Hz, as in the table's SPECTRAL_WINDOW subtable: a single-channel table
    carries each window's centre frequency). ``antenna`` and ``refant`` are rows of the
    ANTENNA subtable (``antenna_names``); ``refant`` is -1 where there was no reference.
    """

    path: Path
    kind: str
    ms_name: str
    time_unix: NDArray[np.float64]
    interval_s: NDArray[np.float64]
    antenna: NDArray[np.int32]
    refant: NDArray[np.int32]
    spw: NDArray[np.int32]
    field: NDArray[np.int32]
    cparam: list[NDArray[np.complex64]]
    flag: list[NDArray[np.bool_]]
    snr: list[NDArray[np.float32]]
    spw_freq_hz: list[NDArray[np.float64]]
    antenna_names: list[str]

    @property
    def n_ant(self) -> int:
        return len(self.antenna_names)


def create_empty_caltable(ms: str, caltable: str, viscal: str, single_channel: bool) -> None:
    """CASA side: an empty Complex ``viscal`` table for ``ms`` (run in a CASA worker)."""
    import casatools

    cb = casatools.calibrater()
    try:
        cb.open(ms, compress=False, addcorr=False, addmodel=False)
        if not cb.createcaltable(caltable, "Complex", viscal, single_channel):
            raise RuntimeError(f"calibrater.createcaltable failed for {caltable}")
    finally:
        cb.close()


def write_bandpass_table(config: PipelineConfig, ms: Path, out: Path,
                         freq_hz: NDArray[np.float64], bandpass: NDArray[np.complexfloating],
                         flags: NDArray[np.bool_], snr: NDArray[np.floating], time_unix: float,
                         interval_s: float, refant: int, overwrite: bool = False) -> Path:
    """Write a bandpass (CASA 'B Jones') table for ``ms`` at ``out`` (replaced).

    Parameters
    ----------
    freq_hz:
        (n_freq,) frequencies (Hz, the MS's frame) of the bandpass's channels; every channel
        of every spectral window of ``ms`` must be among them.
    bandpass, flags, snr:
        (n_ant, n_freq, n_pol): the complex gain (model DATA_ij = b_i conj(b_j) MODEL_ij),
        whether it is flagged (applycal then flags the data) and its signal-to-noise ratio.
    time_unix, interval_s:
        Centre (Unix seconds, UTC) and length (s) of the solution interval.
    refant:
        The reference antenna's index (ANTENNA row), -1 for none.

    Raises
    ------
    InputError
        Shapes disagree with each other or with the MS, or an MS channel has no frequency.
    """
    ms, out = Path(ms), Path(out)
    bandpass, flags, snr = _checked_solutions(ms, bandpass, flags, snr, refant, "bandpass")
    if bandpass.shape[1] != len(freq_hz):
        raise InputError(f"bandpass has {bandpass.shape[1]} channels but {len(freq_hz)} "
                         f"frequencies", file=out)
    spw_freqs = _ms_spw_freqs(ms)
    channels = [_match_channels(np.asarray(freq_hz, np.float64), f, ms) for f in spw_freqs]
    rows = _Rows()
    for spw, chans in enumerate(channels):
        rows.add(spw, float(time_unix), bandpass[:, chans], flags[:, chans], snr[:, chans])
    return _write_table(config, ms, out, BANDPASS, rows, interval_s, refant, overwrite)


def write_gain_table(config: PipelineConfig, ms: Path, out: Path,
                     time_unix: NDArray[np.float64], gains: NDArray[np.complexfloating],
                     flags: NDArray[np.bool_], snr: NDArray[np.floating], interval_s: float,
                     refant: int, overwrite: bool = False) -> Path:
    """Write frequency-independent gains as a CASA 'G Jones' table for ``ms`` at ``out``.

    Parameters
    ----------
    time_unix:
        (n_time,) solution interval centres, Unix seconds (UTC).
    gains, flags, snr:
        (n_time, n_ant, n_pol): complex gain (model DATA_ij = g_i conj(g_j) MODEL_ij),
        flag and signal-to-noise ratio.
    interval_s:
        Length of each solution interval (s).
    refant:
        The reference antenna's index (ANTENNA row), -1 for none.

    Every solution is written once per spectral window of ``ms`` (same value), as CASA's
    gaincal does without ``combine='spw'``, so applycal needs no ``spwmap``.
    """
    ms, out = Path(ms), Path(out)
    time_unix = np.atleast_1d(np.asarray(time_unix, np.float64))
    gains, flags, snr = (np.asarray(a) for a in (gains, flags, snr))
    if gains.ndim != 3 or len(gains) != len(time_unix):
        raise InputError(f"gains must be (n_time={len(time_unix)}, n_ant, n_pol), got "
                         f"{gains.shape}", file=out)
    _checked_solutions(ms, *(np.swapaxes(a, 0, 1) for a in (gains, flags, snr)), refant,
                       "gains")
    rows = _Rows()
    for spw in range(len(_ms_spw_freqs(ms))):
        for t, when in enumerate(time_unix):
            rows.add(spw, float(when), gains[t][:, None], flags[t][:, None], snr[t][:, None])
    return _write_table(config, ms, out, GAIN, rows, interval_s, refant, overwrite)


class _Rows:
    """Caltable rows accumulated per (spw, time): each adds one row per antenna."""

    def __init__(self) -> None:
        self.spw: list[NDArray[np.int32]] = []
        self.time_unix: list[NDArray[np.float64]] = []
        self.antenna: list[NDArray[np.int32]] = []
        self.cparam: list[NDArray[np.complex64]] = []
        self.flag: list[NDArray[np.bool_]] = []
        self.snr: list[NDArray[np.float32]] = []

    def add(self, spw: int, time_unix: float, values: NDArray[np.complexfloating],
            flags: NDArray[np.bool_], snr: NDArray[np.floating]) -> None:
        """One solution, (n_ant, n_chan, n_pol) arrays: the casacore cell order per row."""
        n_ant = values.shape[0]
        self.spw.append(np.full(n_ant, spw, np.int32))
        self.time_unix.append(np.full(n_ant, time_unix))
        self.antenna.append(np.arange(n_ant, dtype=np.int32))
        self.cparam.append(values.astype(np.complex64))
        self.flag.append(flags.astype(bool))
        self.snr.append(snr.astype(np.float32))

    def columns(self, interval_s: float, refant: int) -> dict[str, NDArray[Any]]:
        cparam, snr = np.concatenate(self.cparam), np.concatenate(self.snr)
        n = len(cparam)
        positive = snr > 0
        paramerr = np.zeros(snr.shape, np.float32)
        paramerr[positive] = np.abs(cparam[positive]) / snr[positive]
        return {
            "TIME": unix_to_mjd_seconds(np.concatenate(self.time_unix)),
            "FIELD_ID": np.zeros(n, np.int32),
            "SPECTRAL_WINDOW_ID": np.concatenate(self.spw),
            "ANTENNA1": np.concatenate(self.antenna),
            "ANTENNA2": np.full(n, refant, np.int32),
            "INTERVAL": np.full(n, float(interval_s)),
            "SCAN_NUMBER": np.full(n, NO_SCAN, np.int32),
            "OBSERVATION_ID": np.zeros(n, np.int32),
            "CPARAM": cparam,
            "PARAMERR": paramerr,
            "FLAG": np.concatenate(self.flag),
            "SNR": snr,
        }


def _checked_solutions(ms: Path, values: NDArray[Any], flags: NDArray[Any], snr: NDArray[Any],
                       refant: int, what: str
                       ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """``values``, ``flags``, ``snr`` as arrays of one (n_ant, ..., n_pol) shape, n_ant the
    MS's antenna count, and ``refant`` one of its antennas or -1."""
    values, flags, snr = np.asarray(values), np.asarray(flags), np.asarray(snr)
    if values.ndim != 3 or flags.shape != values.shape or snr.shape != values.shape:
        raise InputError(f"{what}, flags and snr must share one (antenna, ..., pol) shape; got "
                         f"{values.shape}, {flags.shape}, {snr.shape}", file=ms)
    n_ant = len(_subtable_cells(ms, "ANTENNA", "NAME"))
    if values.shape[0] != n_ant:
        raise InputError(f"{what} has {values.shape[0]} antennas, the MS {n_ant}", file=ms)
    if not -1 <= refant < n_ant:
        raise InputError(f"reference antenna {refant} is not among the MS's {n_ant}", file=ms)
    return values, flags, snr


def _write_table(config: PipelineConfig, ms: Path, out: Path, viscal: str, rows: _Rows,
                 interval_s: float, refant: int, overwrite: bool) -> Path:
    """Create the table with CASA under a temporary name, fill it, rename it to ``out``.
    The CASA process runs in a directory of its own: it is given absolute paths."""
    from casacore.tables import table

    with atomic_directory(out, "caltable", overwrite) as tmp:
        run_casa(config, create_empty_caltable, str(ms.absolute()), str(tmp), viscal,
                 viscal == GAIN,
                 stage="caltable")
        with table(str(tmp), readonly=False, ack=False) as tab:
            columns = rows.columns(interval_s, refant)
            tab.addrows(len(columns["TIME"]))
            for name, values in columns.items():
                tab.putcol(name, values)
        if viscal == GAIN:
            _centre_single_channels(tmp, _ms_spw_freqs(ms))
    return out


def _centre_single_channels(caltable: Path, spw_freqs: list[NDArray[np.float64]]) -> None:
    """Put each window's single channel at the mean of its channel frequencies, as gaincal
    does (createcaltable puts it at channel n_chan // 2, half a channel high for even n_chan).
    """
    from casacore.tables import table

    with table(f"{caltable}/SPECTRAL_WINDOW", readonly=False, ack=False) as tab:
        for spw, freqs in enumerate(spw_freqs):
            tab.putcell("CHAN_FREQ", spw, np.array([freqs.mean()]))


def _ms_spw_freqs(ms: Path) -> list[NDArray[np.float64]]:
    """Channel frequencies (Hz) of each spectral window of ``ms``."""
    return _subtable_cells(ms, "SPECTRAL_WINDOW", "CHAN_FREQ")


def _subtable_cells(path: Path, subtable: str, column: str) -> list[NDArray[Any]]:
    from casacore.tables import table

    try:
        with table(f"{path}/{subtable}", ack=False) as tab:
            return [np.asarray(tab.getcell(column, row)) for row in range(tab.nrows())]
    except RuntimeError as exc:
        raise InputError(f"cannot read {subtable}/{column}: {exc}", file=path) from exc


def _match_channels(freq_hz: NDArray[np.float64], wanted: NDArray[np.float64],
                    source: Path) -> NDArray[np.intp]:
    """Indices into ascending ``freq_hz`` of each of ``wanted`` (within FREQ_MATCH_TOL_HZ)."""
    if np.any(np.diff(freq_hz) <= 0):
        raise InputError("frequencies must be strictly ascending", file=source)
    below = np.clip(np.searchsorted(freq_hz, wanted) - 1, 0, len(freq_hz) - 1)
    above = np.minimum(below + 1, len(freq_hz) - 1)
    index = np.where(np.abs(freq_hz[above] - wanted) < np.abs(freq_hz[below] - wanted),
                     above, below)
    missing = np.abs(freq_hz[index] - wanted) > FREQ_MATCH_TOL_HZ
    if missing.any():
        raise InputError(f"no channel at {wanted[missing][0]:.1f} Hz (and "
                         f"{missing.sum() - 1} more) among the given frequencies", file=source)
    return index


def read_caltable(path: Path) -> CalTable:
    """Read a CASA calibration table (B or G Jones, Complex parameters) with python-casacore.

    Raises
    ------
    InputError
        ``path`` is not a readable calibration table, is of another VisCal type, or its
        parameters are not Complex.
    """
    from casacore.tables import table

    path = Path(path)
    try:
        tab = table(str(path), ack=False)
    except RuntimeError as exc:
        raise InputError(f"cannot open calibration table: {exc}", file=path) from exc
    with tab:
        keywords = tab.getkeywords()
        _check_caltable(path, tab.info().get("type", ""), keywords)
        rows = {name: tab.getcol(name) for name in (
            "TIME", "INTERVAL", "ANTENNA1", "ANTENNA2", "SPECTRAL_WINDOW_ID", "FIELD_ID")}
        cells = {name: _read_cells(tab, name) for name in ("CPARAM", "FLAG", "SNR")}
    return CalTable(
        path=path, kind=keywords["VisCal"], ms_name=str(keywords.get("MSName", "")),
        time_unix=mjd_seconds_to_unix(rows["TIME"]), interval_s=rows["INTERVAL"],
        antenna=rows["ANTENNA1"], refant=rows["ANTENNA2"], spw=rows["SPECTRAL_WINDOW_ID"],
        field=rows["FIELD_ID"], cparam=cells["CPARAM"], flag=cells["FLAG"], snr=cells["SNR"],
        spw_freq_hz=_subtable_cells(path, "SPECTRAL_WINDOW", "CHAN_FREQ"),
        antenna_names=[str(n) for n in _subtable_cells(path, "ANTENNA", "NAME")])


def _read_cells(tab: Any, column: str) -> list[NDArray[Any]]:
    """The (n_pol, n_chan) cells of an array column (casacore gives (n_chan, n_pol))."""
    try:
        cells = list(tab.getcol(column))  # all cells of one shape: one read
    except RuntimeError:
        cells = [tab.getcell(column, row) for row in range(tab.nrows())]
    return [np.asarray(cell).T for cell in cells]


def _check_caltable(path: Path, table_type: str, keywords: dict[str, Any]) -> None:
    if table_type != "Calibration" or "VisCal" not in keywords:
        raise InputError(f"not a CASA calibration table (table type {table_type!r})",
                         file=path)
    if keywords["VisCal"] not in SUPPORTED_KINDS:
        raise InputError(f"unsupported calibration type {keywords['VisCal']!r} (supported: "
                         f"{', '.join(SUPPORTED_KINDS)})", file=path)
    if keywords.get("ParType") != "Complex":
        raise InputError(f"parameter type {keywords.get('ParType')!r}, expected 'Complex'",
                         file=path)


def bandpass_from_table(table: CalTable, freq_hz: NDArray[np.float64]
                        ) -> tuple[NDArray[np.complex64], NDArray[np.bool_]]:
    """A B Jones table's solutions on the ascending frequency axis ``freq_hz`` (Hz).

    Each requested frequency is matched to a table channel (within FREQ_MATCH_TOL_HZ).
    Returns (bandpass, flags), (n_ant, n_freq, n_pol), antennas in the table's ANTENNA order;
    an antenna without rows gets 1 + 0j, flagged.

    Raises
    ------
    InputError
        Not a B Jones table, more than one solution per antenna and window, or a frequency
        the table lacks.
    """
    _require_kind(table, BANDPASS)
    freq_hz = np.asarray(freq_hz, np.float64)
    table_freqs = np.concatenate(table.spw_freq_hz)
    order = np.argsort(table_freqs)
    where = order[_match_channels(table_freqs[order], freq_hz, table.path)]
    spw_starts = np.cumsum([0] + [len(f) for f in table.spw_freq_hz])
    n_pol = table.cparam[0].shape[0]
    values = np.ones((table.n_ant, len(table_freqs), n_pol), np.complex64)
    flags = np.ones(values.shape, bool)
    seen = set()
    for row, (ant, spw) in enumerate(zip(table.antenna, table.spw, strict=True)):
        if (ant, spw) in seen:
            raise InputError(f"more than one bandpass solution for antenna {ant}, spw {spw}",
                             file=table.path)
        seen.add((ant, spw))
        chans = slice(spw_starts[spw], spw_starts[spw + 1])
        values[ant, chans] = table.cparam[row].T
        flags[ant, chans] = table.flag[row].T
    return values[:, where], flags[:, where]


def gains_from_table(table: CalTable, spw: int | None = None
                     ) -> tuple[NDArray[np.float64], NDArray[np.complex64], NDArray[np.bool_]]:
    """A G Jones table's solutions as (time_unix, gains, flags).

    CASA's gaincal solves each spectral window separately; this returns the solutions of one
    window, ``spw``, by default the lowest-numbered one in the table (our writer puts the
    same value in every window). ``time_unix`` (n_time,) are the solution times (Unix
    seconds, UTC); ``gains`` and ``flags`` are (n_time, n_ant, n_pol); an antenna without a
    row at a time gets 1 + 0j, flagged.

    Raises
    ------
    InputError
        Not a G Jones table, ``spw`` absent, or a row with more than one channel.
    """
    _require_kind(table, GAIN)
    spw = int(table.spw.min()) if spw is None else spw
    rows = np.flatnonzero(table.spw == spw)
    if not len(rows):
        raise InputError(f"no solutions for spw {spw}", file=table.path)
    times, t_index = np.unique(table.time_unix[rows], return_inverse=True)
    n_pol = table.cparam[rows[0]].shape[0]
    gains = np.ones((len(times), table.n_ant, n_pol), np.complex64)
    flags = np.ones(gains.shape, bool)
    for row, t in zip(rows, t_index, strict=True):
        if table.cparam[row].shape[1] != 1:
            raise InputError(f"row {row} has {table.cparam[row].shape[1]} channels; G Jones "
                             f"solutions have one", file=table.path)
        gains[t, table.antenna[row]] = table.cparam[row][:, 0]
        flags[t, table.antenna[row]] = table.flag[row][:, 0]
    return times, gains, flags


def _require_kind(table: CalTable, kind: str) -> None:
    if table.kind != kind:
        raise InputError(f"a {table.kind} table where a {kind} table is needed",
                         file=table.path)
