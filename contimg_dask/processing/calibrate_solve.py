"""Solve bandpass and gains on a calibrator block (the ``calibrate_solve`` stage's work).

Solving (``solve_block``) is one Dask task per subband chunk: the chunk's model visibilities
(catalogue sources through the Airy beam, for the data group's own phasing), one pass over
its data into per-baseline sums (:mod:`contimg_dask.ops.calibration`), the chunk's bandpass
(StEFCal per channel over the whole block), and the bandpass-corrected sums the gains need.
The gains (per ``gain_interval_s`` and for the whole block) are solved from the chunks' sums
added together: every channel of the block informs them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from contimg_dask import __version__
from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.config.schema import CalibrationConfig
from contimg_dask.errors import CalibrationError
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.io.store.block_store import now_iso
from contimg_dask.io.store.model import solutions_dataset
from contimg_dask.io.store.solutions import write_solutions
from contimg_dask.io.system.atomic import check_replaceable
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.calibration import (
    GainSolution,
    NormalSums,
    fill_small_gaps,
    normal_sums,
    reference_to_antenna,
    stefcal,
)
from contimg_dask.processing.calibration_block import CalibrationBlock, open_calibration_block
from contimg_dask.science.calibrators import (
    CalibratorCandidate,
    best_calibrator,
    calibrator_tracks,
)
from contimg_dask.science.skymodel import SourceTrack, model_chunk, path_differences

log = get_logger(__name__)


def _antenna_flagged_fraction(block: CalibrationBlock) -> np.ndarray:
    """Flagged fraction of each antenna's cross-correlations (active flags)."""
    flags = block.dataset[block.names["flag"]].data
    per_baseline = flags.mean(axis=(0, 2, 3)).compute()
    g = block.geometry
    out = np.ones(len(g.antenna_names))
    cross = g.ant1 != g.ant2
    for a in range(len(out)):
        rows = cross & ((g.ant1 == a) | (g.ant2 == a))
        if rows.any():
            out[a] = float(per_baseline[rows].mean())
    return out


def choose_reference_antenna(names: list[str], flagged_fraction: np.ndarray,
                             config: CalibrationConfig) -> int:
    """Index of the reference antenna: the first preferred one present and flagged below
    ``max_reference_flagged_fraction``, else the least-flagged antenna.

    Raises
    ------
    CalibrationError
        Every antenna is flagged beyond the limit.
    """
    limit = config.max_reference_flagged_fraction
    for name in config.reference_antennas:
        if name in names and flagged_fraction[names.index(name)] <= limit:
            return names.index(name)
    best = int(np.argmin(flagged_fraction))
    if flagged_fraction[best] > limit:
        raise CalibrationError(f"no usable reference antenna: every antenna is more than "
                               f"{limit:.0%} flagged", key="calibration.reference_antennas")
    log.warning("no preferred reference antenna usable (%s); using %s (%.1f %% flagged)",
                ", ".join(config.reference_antennas), names[best],
                100 * flagged_fraction[best])
    return best


def _gain_cells(geometry: BlockGeometry, interval_s: float) -> tuple[np.ndarray, int]:
    per_cell = max(1, round(interval_s / geometry.integration_time_s))
    cells = np.arange(len(geometry.times_unix)) // per_cell
    return cells, int(cells[-1]) + 1


@dataclass
class _ChunkSolution:
    """What one subband chunk contributes: its bandpass and the gains' sums."""

    bandpass: np.ndarray  # (frequency, polarization, antenna), referenced
    flags: np.ndarray
    snr: np.ndarray
    chi2: np.ndarray  # (frequency, polarization)
    gain_sums: NormalSums  # (time cell, polarization, baseline), bandpass-corrected


def _bandpass_corrected_sums(sums: NormalSums, bandpass: np.ndarray, flags: np.ndarray,
                             ant1: np.ndarray, ant2: np.ndarray) -> NormalSums:
    """Sums for gains given the bandpass: the model becomes conj(B_a) B_b M, so
    A' = Σ_ν B_a conj(B_b) A and B' = Σ_ν |B_a B_b|² B (flagged channels left out)."""
    good = ~(flags[:, :, ant1] | flags[:, :, ant2])  # (f, p, bl)
    bp = np.nan_to_num(bandpass)
    factor = np.where(good, bp[:, :, ant1] * np.conj(bp[:, :, ant2]), 0.0)
    power = np.abs(factor) ** 2
    keep = good[None]
    return NormalSums(a=(factor[None] * sums.a).sum(axis=1),
                      b=(power[None] * sums.b).sum(axis=1),
                      c=np.where(keep, sums.c, 0.0).sum(axis=1),
                      n=np.where(keep, sums.n, 0).sum(axis=1, dtype=np.int32))


def _solve_chunk(vis: np.ndarray, weight: np.ndarray, flag: np.ndarray, freq: np.ndarray,
                 dw: np.ndarray, tracks: list[SourceTrack], geometry: BlockGeometry,
                 time_cell: np.ndarray, n_cells: int, refant: int,
                 config: CalibrationConfig) -> _ChunkSolution:
    n_ant = len(geometry.antenna_names)
    ant1, ant2 = geometry.ant1, geometry.ant2
    model = model_chunk(freq, dw, tracks, geometry.dish_diameter_m, vis.shape[3])
    sums = normal_sums(vis, model, weight, flag, ant1, ant2, time_cell, n_cells)
    del model
    solution = stefcal(sums.total(0), ant1, ant2, n_ant, config.solver_max_iterations,
                       config.solver_tolerance)
    bandpass = reference_to_antenna(solution.gains, refant)  # (f, p, ant)
    flags = ~np.isfinite(bandpass) | (solution.snr < config.bandpass_min_snr)
    bandpass, flags = fill_small_gaps(bandpass, flags, config.max_interpolated_channels)
    bandpass = np.where(flags, np.nan, bandpass)
    return _ChunkSolution(bandpass, flags, solution.snr, solution.chi2_reduced,
                          _bandpass_corrected_sums(sums, bandpass, flags, ant1, ant2))


def _referenced(solution: GainSolution, refant: int, min_snr: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gains = reference_to_antenna(solution.gains, refant)
    flags = ~np.isfinite(gains) | (solution.snr < min_snr)
    return np.where(flags, np.nan, gains), flags, solution.snr


def solve_block(store: str | Path, config: PipelineConfig, out: str | Path,
                catalog: str | Path | None = None, calibrator: str | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Solve bandpass and gains on a calibrator block and write the solutions store ``out``.

    The model holds every catalogue source within ``calibration.model_radius_deg`` of the
    pointing. ``calibrator`` names the calibrator to use (default: the best candidate).
    Returns a summary (calibrator, reference antenna, quality, seconds).

    Raises
    ------
    CalibrationError
        No usable calibrator, no usable reference antenna, or no solution above the SNR limit.
    """
    t0 = time.perf_counter()
    check_replaceable(Path(out).absolute(), "solutions", overwrite)  # before the work
    cal = config.calibration
    block = open_calibration_block(store, cal.data_group, "calibrate")
    g = block.geometry
    with log_context(block=g.block_id, stage="calibrate"):
        catalog_path, tracks, candidates = calibrator_tracks(g, cal, catalog)
        chosen = _choose_calibrator(candidates, calibrator, block.store, catalog_path)
        w_centre = np.asarray(block.dataset[block.names["uvw"]].values[..., 2])
        dw = path_differences(tracks, g, w_centre)
        refant = choose_reference_antenna(g.antenna_names, _antenna_flagged_fraction(block),
                                          cal)
        time_cell, n_cells = _gain_cells(g, cal.gain_interval_s)
        ds = block.dataset
        vis = block.visibilities
        weight, flag = (ds[block.names[k]].data for k in ("weight", "flag"))
        shared = dask.delayed({"dw": dw, "tracks": tracks, "geometry": g}, traverse=False)
        tasks = [dask.delayed(_solve_chunk_shared)(
            vis[:, :, sl], weight[:, :, sl], flag[:, :, sl], g.freq_hz[sl], shared,
            time_cell, n_cells, refant, cal) for sl in g.subband_slices()]
        chunks = dask.compute(*tasks)
        solutions = _gather(chunks, g, time_cell, n_cells, refant, cal)
        _check_quality(solutions, block.store)
        solutions.attrs["contimg"] = _provenance(block, chosen, candidates, catalog_path,
                                                 tracks, refant, solutions, config)
        write_solutions(solutions, out, overwrite)
        summary = {"solutions": str(out), "seconds": time.perf_counter() - t0,
                   **solutions.attrs["contimg"]["quality"],
                   "calibrator": chosen.name,
                   "calibrator_apparent_flux_jy": chosen.apparent_flux_jy,
                   "refant": g.antenna_names[refant]}
        log.info("solved on %s (refant %s) in %.1f s: bandpass %.1f %% flagged, median SNR "
                 "%.0f", chosen.name, g.antenna_names[refant], summary["seconds"],
                 100 * summary["bandpass_flagged_fraction"], summary["bandpass_median_snr"])
    return summary


def _solve_chunk_shared(vis: np.ndarray, weight: np.ndarray, flag: np.ndarray,
                        freq: np.ndarray, shared: dict, time_cell: np.ndarray, n_cells: int,
                        refant: int, config: CalibrationConfig) -> _ChunkSolution:
    return _solve_chunk(vis, weight, flag, freq, shared["dw"], shared["tracks"],
                        shared["geometry"], time_cell, n_cells, refant, config)


def _choose_calibrator(candidates: list[CalibratorCandidate], name: str | None, store: Path,
                       catalog: Path) -> CalibratorCandidate:
    if name is not None:
        named = [c for c in candidates if c.name == name]
        if not named:
            raise CalibrationError(f"calibrator {name} is not within the model radius of "
                                   f"this block (catalogue {catalog})", file=store,
                                   stage="calibrate")
        return named[0]
    best = best_calibrator(candidates)
    if best is None:
        near = ", ".join(f"{c.name} ({c.reason})" for c in candidates) or "none"
        raise CalibrationError(f"no calibrator transits this block (catalogue {catalog}; "
                               f"sources near the field: {near})", file=store,
                               stage="calibrate")
    return best


def _gather(chunks: tuple[_ChunkSolution, ...], g: BlockGeometry, time_cell: np.ndarray,
            n_cells: int, refant: int, cal: CalibrationConfig) -> xr.Dataset:
    n_ant = len(g.antenna_names)
    bandpass = np.concatenate([c.bandpass for c in chunks])  # (f, p, ant)
    bp_flags = np.concatenate([c.flags for c in chunks])
    bp_snr = np.concatenate([c.snr for c in chunks])
    bp_chi2 = np.concatenate([c.chi2 for c in chunks])
    sums = chunks[0].gain_sums
    for c in chunks[1:]:
        sums = sums + c.gain_sums
    short = stefcal(sums, g.ant1, g.ant2, n_ant, cal.solver_max_iterations,
                    cal.solver_tolerance)  # (cell, p, ant)
    whole = stefcal(sums.total(0), g.ant1, g.ant2, n_ant, cal.solver_max_iterations,
                    cal.solver_tolerance)  # (p, ant)
    gain, gain_flags, gain_snr = _referenced(short, refant, cal.gain_min_snr)
    block_gain, block_flags, block_snr = _referenced(whole, refant, cal.gain_min_snr)
    half = 0.5 * g.integration_time_s
    starts = np.array([g.times_unix[time_cell == c].min() - half for c in range(n_cells)])
    ends = np.array([g.times_unix[time_cell == c].max() + half for c in range(n_cells)])
    return solutions_dataset(
        antenna_names=g.antenna_names, freq_hz=g.freq_hz, polarizations=g.polarizations,
        gain_time_start=starts, gain_time_end=ends,
        bandpass=bandpass.transpose(2, 0, 1), bandpass_flag=bp_flags.transpose(2, 0, 1),
        bandpass_snr=bp_snr.transpose(2, 0, 1), bandpass_chi2=bp_chi2,
        gain=gain.transpose(0, 2, 1), gain_flag=gain_flags.transpose(0, 2, 1),
        gain_snr=gain_snr.transpose(0, 2, 1), gain_chi2=short.chi2_reduced,
        gain_block=block_gain.T, gain_block_flag=block_flags.T, gain_block_snr=block_snr.T)


def _check_quality(solutions: xr.Dataset, store: Path) -> None:
    if bool(solutions.BANDPASS_FLAG.all()):
        raise CalibrationError("every bandpass solution is below the SNR limit "
                               "(calibration.bandpass_min_snr) or undetermined", file=store,
                               stage="calibrate", key="calibration.bandpass_min_snr")
    if bool(solutions.GAIN_BLOCK_FLAG.all()):
        raise CalibrationError("every gain solution is below the SNR limit "
                               "(calibration.gain_min_snr) or undetermined", file=store,
                               stage="calibrate", key="calibration.gain_min_snr")


def _provenance(block: CalibrationBlock, chosen: CalibratorCandidate,
                candidates: list[CalibratorCandidate], catalog: Path,
                tracks: list[SourceTrack], refant: int, solutions: xr.Dataset,
                config: PipelineConfig) -> dict[str, Any]:
    g = block.geometry
    snr = solutions.BANDPASS_SNR.values[~solutions.BANDPASS_FLAG.values]
    gain_snr = solutions.GAIN_SNR.values[~solutions.GAIN_FLAG.values]
    return {
        "block_id": g.block_id,
        "block_store": str(block.store.resolve()),
        "data_group": config.calibration.data_group,
        "block_start_unix": float(g.times_unix[0] - 0.5 * g.integration_time_s),
        "block_end_unix": float(g.times_unix[-1] + 0.5 * g.integration_time_s),
        "pointing_kind": g.pointing_kind,
        "pointing_dec_rad": g.pointing_dec_rad,
        "calibrator": asdict(chosen),
        "candidates": [c.name for c in candidates],
        "catalog": str(catalog),
        "model_sources": [t.source.name for t in tracks],
        "refant": g.antenna_names[refant],
        "gain_interval_s": config.calibration.gain_interval_s,
        "quality": {
            "bandpass_flagged_fraction": float(solutions.BANDPASS_FLAG.mean()),
            "bandpass_median_snr": float(np.median(snr)) if snr.size else 0.0,
            "bandpass_median_chi2": float(np.nanmedian(solutions.BANDPASS_CHI2.values)),
            "gain_flagged_fraction": float(solutions.GAIN_FLAG.mean()),
            "gain_median_snr": float(np.median(gain_snr)) if gain_snr.size else 0.0,
            "gain_median_chi2": float(np.nanmedian(solutions.GAIN_CHI2.values)),
        },
        "package_version": __version__,
        "config_hash": config_hash(config),
        "created": now_iso(),
    }
