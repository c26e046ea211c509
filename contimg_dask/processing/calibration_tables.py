"""Solutions stores to and from CASA calibration tables (``contimg calibrate export|import``).

Gains move unchanged between the two (see :mod:`contimg_dask.casa.caltables`): a CASA B table
is our BANDPASS, a CASA G table our short-interval GAIN. CASA's gaincal solves every spectral
window separately; ours are frequency-independent, so an imported G table's gains are the
mean over its windows of the unflagged solutions (mean amplitude, phase of the mean). Its
whole-block gain is the same mean over its solution times, since CASA keeps no such
solution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contimg_dask import __version__
from contimg_dask.casa.caltables import (
    bandpass_from_table,
    gains_from_table,
    read_caltable,
    write_bandpass_table,
    write_gain_table,
)
from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.errors import InputError
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.io.store.block_store import now_iso
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.io.store.model import solutions_dataset
from contimg_dask.io.store.solutions import read_solutions, write_solutions
from contimg_dask.io.system.atomic import check_replaceable


def export_to_casa(solutions_path: str | Path, ms: str | Path, prefix: str | Path,
                   config: PipelineConfig, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<prefix>.B`` (bandpass) and ``<prefix>.G`` (short-interval gains) for the
    Measurement Set ``ms`` (its antennas must be the solutions' antennas, in order)."""
    prefix = Path(prefix).absolute()
    for suffix in (".B", ".G"):  # before the work
        check_replaceable(prefix.with_name(prefix.name + suffix), "caltable", overwrite)
    solutions = read_solutions(solutions_path)
    prov = solutions.attrs["contimg"]
    names = solutions.antenna_name.values.tolist()
    refant = names.index(prov["refant"])
    bandpass = np.where(solutions.BANDPASS_FLAG.values, 1.0, solutions.BANDPASS.values)
    gains = np.where(solutions.GAIN_FLAG.values, 1.0, solutions.GAIN.values)
    mid = 0.5 * (prov["block_start_unix"] + prov["block_end_unix"])
    b_table = write_bandpass_table(
        config, Path(ms), prefix.with_name(prefix.name + ".B"), solutions.frequency.values,
        bandpass, solutions.BANDPASS_FLAG.values, solutions.BANDPASS_SNR.values, mid,
        prov["block_end_unix"] - prov["block_start_unix"], refant, overwrite)
    interval = float(np.median(solutions.gain_time_end.values
                               - solutions.gain_time_start.values))
    g_table = write_gain_table(
        config, Path(ms), prefix.with_name(prefix.name + ".G"), solutions.gain_time.values,
        gains, solutions.GAIN_FLAG.values, solutions.GAIN_SNR.values, interval, refant,
        overwrite)
    return b_table, g_table


def _vector_mean(gains: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over time (axis 0) of the unflagged gains; flagged where none is."""
    weights = (~flags).astype(float)
    count = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.where(flags, 0, gains) * weights).sum(axis=0) / count
        amplitude = (np.abs(np.where(flags, 0, gains)) * weights).sum(axis=0) / count
    return amplitude * np.exp(1j * np.angle(mean)), count == 0


def _mean_over_windows(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A G table's solutions averaged over its spectral windows: (times, gains, flags)."""
    per_window = [gains_from_table(table, spw=int(spw)) for spw in np.unique(table.spw)]
    times = per_window[0][0]
    for other, _, _ in per_window[1:]:
        if len(other) != len(times) or np.abs(other - times).max() > 1.0:
            raise InputError("the table's spectral windows have different solution times",
                             file=table.path)
    gains, flags = _vector_mean(np.stack([g for _, g, _ in per_window]),
                                np.stack([f for _, _, f in per_window]))
    return times, gains, flags


def import_from_casa(bandpass_table: str | Path, gain_table: str | Path, store: str | Path,
                     out: str | Path, config: PipelineConfig, overwrite: bool = False) -> Path:
    """A solutions store from CASA B and G tables, for the blocks of ``store``'s strip.

    Raises
    ------
    InputError
        A table is unreadable or of the wrong type, or its antennas or frequencies do not
        cover the block's.
    """
    geometry = read_geometry(store)
    b_cal, g_cal = read_caltable(Path(bandpass_table)), read_caltable(Path(gain_table))
    bandpass, b_flags = bandpass_from_table(b_cal, geometry.freq_hz)
    times, gains, g_flags = _mean_over_windows(g_cal)
    for table in (b_cal, g_cal):
        if table.antenna_names != geometry.antenna_names:
            raise InputError("the table's antennas differ from the block's "
                             f"({len(table.antenna_names)} vs {len(geometry.antenna_names)})",
                             file=table.path)
    block_gain, block_flags = _vector_mean(gains, g_flags)
    refants = b_cal.refant[b_cal.refant >= 0]
    refant = geometry.antenna_names[int(np.bincount(refants).argmax())] if len(refants) else ""
    half = 0.5 * float(np.median(g_cal.interval_s)) if len(g_cal.interval_s) else 0.0
    solutions = solutions_dataset(
        antenna_names=geometry.antenna_names, freq_hz=geometry.freq_hz,
        polarizations=geometry.polarizations, gain_time_start=times - half,
        gain_time_end=times + half, gain_time=times,
        bandpass=np.where(b_flags, np.nan, bandpass), bandpass_flag=b_flags,
        bandpass_snr=np.full(bandpass.shape, np.inf),
        bandpass_chi2=np.full(bandpass.shape[1:], np.nan),
        gain=np.where(g_flags, np.nan, gains), gain_flag=g_flags,
        gain_snr=np.full(gains.shape, np.inf),
        gain_chi2=np.full((len(times), gains.shape[2]), np.nan),
        gain_block=np.where(block_flags, np.nan, block_gain), gain_block_flag=block_flags,
        gain_block_snr=np.full(block_gain.shape, np.inf))
    solutions.attrs["contimg"] = _import_provenance(b_cal.path, g_cal.path, geometry, times,
                                                    half, refant, config)
    return write_solutions(solutions, out, overwrite)


def _import_provenance(b_path: Path, g_path: Path, geometry: BlockGeometry, times: np.ndarray,
                       half: float, refant: str, config: PipelineConfig) -> dict[str, Any]:
    return {
        "block_id": geometry.block_id,
        "block_store": str(geometry.store.resolve()),
        "data_group": config.calibration.data_group,
        "block_start_unix": float(times.min() - half),
        "block_end_unix": float(times.max() + half),
        "pointing_kind": geometry.pointing_kind,
        "pointing_dec_rad": geometry.pointing_dec_rad,
        "calibrator": {"name": f"CASA tables {b_path.name}, {g_path.name}"},
        "imported_from": [str(b_path.resolve()), str(g_path.resolve())],
        "refant": refant,
        "quality": {},
        "package_version": __version__,
        "config_hash": config_hash(config),
        "created": now_iso(),
    }
