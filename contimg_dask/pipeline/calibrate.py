"""Stage: find calibrators, solve bandpass and gains on a calibrator block, apply solutions.

Solving (``solve_block``) is one Dask task per subband chunk: the chunk's model visibilities
(catalogue sources through the Airy beam, for the data group's own phasing), one pass over
its data into per-baseline sums (:mod:`contimg_dask.ops.calibration`), the chunk's bandpass
(StEFCal per channel over the whole block), and the bandpass-corrected sums the gains need.
The gains (per ``gain_interval_s`` and for the whole block) are solved from the chunks' sums
added together: every channel of the block informs them.

Applying (``apply_solutions``) writes the data group ``corrected`` (VISIBILITY_CORRECTED,
WEIGHT_CORRECTED, and FLAG_CORRECTED when a solution is flagged; UVW, phase centre and
otherwise the flags are shared with the group it corrects):
one task per subband chunk reads its data from the store and writes its corrected chunk
straight back; the group is registered last, so an interrupted run leaves no trace.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from contimg_dask import __version__
from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.config.schema import CalibrationConfig
from contimg_dask.errors import CalibrationError, InputError
from contimg_dask.io.block_calibration import write_block_calibration
from contimg_dask.io.block_geometry import BlockGeometry, geometry_of
from contimg_dask.io.block_store import block_node, now_iso, open_block, quiet_zarr_strings
from contimg_dask.io.solutions import SOLUTIONS_TYPE, read_solutions, write_solutions
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.calibration import (
    GainSolution,
    NormalSums,
    apply_gains,
    fill_small_gaps,
    interpolate_in_time,
    normal_sums,
    reference_to_antenna,
    stefcal,
)
from contimg_dask.science.calibrators import (
    CalibratorCandidate,
    best_calibrator,
    calibrator_candidates,
    load_calibrators,
)
from contimg_dask.science.skymodel import (
    SourceTrack,
    model_chunk,
    path_differences,
    track_sources,
)

log = get_logger(__name__)
CORRECTED = "corrected"


@dataclass(frozen=True)
class _Block:
    """An opened block store and the data group calibration works on."""

    store: Path
    name: str
    node: xr.DataTree
    dataset: xr.Dataset
    group: dict[str, str]
    geometry: BlockGeometry


def _open(store: str | Path, data_group: str, stage: str) -> _Block:
    store = Path(store)
    tree = open_block(store)
    node = block_node(tree)
    ds = node.to_dataset(inherit=False)
    groups = ds.attrs["data_groups"]
    if data_group not in groups:
        raise InputError(f"block store has no data group '{data_group}' (has "
                         f"{sorted(groups)}); run `contimg rephase` first", file=store,
                         stage=stage, key="calibration.data_group")
    return _Block(store, next(iter(tree.children)), node, ds, dict(groups[data_group]),
                  geometry_of(node, store))


def find_calibrators(store: str | Path, config: PipelineConfig,
                     catalog: str | Path | None = None
                     ) -> tuple[Path, list[CalibratorCandidate], CalibratorCandidate | None]:
    """Catalogue sources near the block's field as calibrator candidates, and the best one.
    Returns the catalogue's path too."""
    geometry = geometry_of(block_node(open_block(store)), Path(store))
    path, sources = load_calibrators(config.calibration, catalog)
    candidates = calibrator_candidates(sources, geometry, config.calibration)
    return path, candidates, best_calibrator(candidates)


def model_visibilities(store: str | Path, config: PipelineConfig,
                       catalog: str | Path | None = None) -> da.Array:
    """Model visibilities of the block's ``calibration.data_group`` as a Dask array
    (time, baseline, frequency, polarization), one task per subband chunk: the catalogue's
    sources within ``model_radius_deg`` of the pointing, through the Airy beam, for the
    group's own phasing (Jy, the store's convention)."""
    block = _open(store, config.calibration.data_group, "model")
    g = block.geometry
    _, sources = load_calibrators(config.calibration, catalog)
    tracks = track_sources(sources, g, config.calibration.model_radius_deg)
    dw = path_differences(tracks, g, np.asarray(block.dataset[block.group["uvw"]].values[..., 2]))
    vis = block.dataset[block.group["correlated_data"]].data
    freq = da.from_array(g.freq_hz, chunks=(tuple(g.subband_chunks),))
    return da.map_blocks(_model_block, freq[None, None, :, None], dw=dw, tracks=tracks,
                         diameter=g.dish_diameter_m, n_pol=vis.shape[3],
                         chunks=(vis.shape[0], vis.shape[1], tuple(g.subband_chunks),
                                 vis.shape[3]), dtype=np.complex64)


def _model_block(freq: np.ndarray, dw: np.ndarray, tracks: list[SourceTrack],
                 diameter: float, n_pol: int) -> np.ndarray:
    return model_chunk(freq[0, 0, :, 0], dw, tracks, diameter, n_pol)


def _antenna_flagged_fraction(block: _Block) -> np.ndarray:
    """Flagged fraction of each antenna's cross-correlations (active flags)."""
    flags = block.dataset[block.group["flag"]].data
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
                catalog: str | Path | None = None, calibrator: str | None = None
                ) -> dict[str, Any]:
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
    cal = config.calibration
    block = _open(store, cal.data_group, "calibrate")
    g = block.geometry
    with log_context(block=g.block_id, stage="calibrate"):
        catalog_path, sources = load_calibrators(cal, catalog)
        candidates = calibrator_candidates(sources, g, cal)
        chosen = _choose_calibrator(candidates, calibrator, block.store, catalog_path)
        tracks = track_sources(sources, g, cal.model_radius_deg)
        w_centre = np.asarray(block.dataset[block.group["uvw"]].values[..., 2])
        dw = path_differences(tracks, g, w_centre)
        refant = choose_reference_antenna(g.antenna_names, _antenna_flagged_fraction(block),
                                          cal)
        time_cell, n_cells = _gain_cells(g, cal.gain_interval_s)
        ds = block.dataset
        vis, weight, flag = (ds[block.group[k]].data
                             for k in ("correlated_data", "weight", "flag"))
        shared = dask.delayed({"dw": dw, "tracks": tracks, "geometry": g}, traverse=False)
        tasks = [dask.delayed(_solve_chunk_shared)(
            vis[:, :, sl], weight[:, :, sl], flag[:, :, sl], g.freq_hz[sl], shared,
            time_cell, n_cells, refant, cal) for sl in g.subband_slices()]
        chunks = dask.compute(*tasks)
        solutions = _gather(chunks, g, time_cell, n_cells, refant, cal)
        _check_quality(solutions, block.store)
        solutions.attrs["contimg"] = _provenance(block, chosen, candidates, catalog_path,
                                                 tracks, refant, solutions, config)
        write_solutions(solutions, out)
        summary = {"solutions": str(out), "seconds": time.perf_counter() - t0,
                   **solutions.attrs["contimg"]["quality"],
                   "calibrator": chosen.name, "refant": g.antenna_names[refant]}
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
    ant_f_p = ("antenna_name", "frequency", "polarization")
    t_a_p = ("gain_time", "antenna_name", "polarization")
    return xr.Dataset(
        data_vars={
            "BANDPASS": (ant_f_p, bandpass.transpose(2, 0, 1).astype(np.complex64)),
            "BANDPASS_FLAG": (ant_f_p, bp_flags.transpose(2, 0, 1)),
            "BANDPASS_SNR": (ant_f_p, bp_snr.transpose(2, 0, 1).astype(np.float32)),
            "BANDPASS_CHI2": (("frequency", "polarization"), bp_chi2.astype(np.float32)),
            "GAIN": (t_a_p, gain.transpose(0, 2, 1).astype(np.complex64)),
            "GAIN_FLAG": (t_a_p, gain_flags.transpose(0, 2, 1)),
            "GAIN_SNR": (t_a_p, gain_snr.transpose(0, 2, 1).astype(np.float32)),
            "GAIN_CHI2": (("gain_time", "polarization"),
                          short.chi2_reduced.astype(np.float32)),
            "GAIN_BLOCK": (("antenna_name", "polarization"),
                           block_gain.T.astype(np.complex64)),
            "GAIN_BLOCK_FLAG": (("antenna_name", "polarization"), block_flags.T),
            "GAIN_BLOCK_SNR": (("antenna_name", "polarization"),
                               block_snr.T.astype(np.float32)),
        },
        coords={
            "antenna_name": np.array(g.antenna_names),
            "frequency": ("frequency", g.freq_hz, {"units": "Hz", "observer": "TOPO"}),
            "polarization": np.array(g.polarizations),
            "gain_time": ("gain_time", 0.5 * (starts + ends),
                          {"units": "s", "scale": "utc", "format": "unix"}),
            "gain_time_start": ("gain_time", starts),
            "gain_time_end": ("gain_time", ends),
        },
        attrs={"type": SOLUTIONS_TYPE},
    )


def _check_quality(solutions: xr.Dataset, store: Path) -> None:
    if bool(solutions.BANDPASS_FLAG.all()):
        raise CalibrationError("every bandpass solution is below the SNR limit "
                               "(calibration.bandpass_min_snr) or undetermined", file=store,
                               stage="calibrate", key="calibration.bandpass_min_snr")
    if bool(solutions.GAIN_BLOCK_FLAG.all()):
        raise CalibrationError("every gain solution is below the SNR limit "
                               "(calibration.gain_min_snr) or undetermined", file=store,
                               stage="calibrate", key="calibration.gain_min_snr")


def _provenance(block: _Block, chosen: CalibratorCandidate,
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


def check_applicable(solutions: xr.Dataset, geometry: BlockGeometry,
                     config: CalibrationConfig, source: Path) -> None:
    """Refuse solutions from another declination strip, outside their validity window, or
    for antennas or frequencies the block does not have."""
    prov = solutions.attrs["contimg"]
    ddec = np.degrees(abs(geometry.pointing_dec_rad - prov["pointing_dec_rad"]))
    if ddec > config.dec_tolerance_deg:
        raise CalibrationError(
            f"solutions are for pointing dec {np.degrees(prov['pointing_dec_rad']):.3f} deg, "
            f"block {geometry.block_id} points at {np.degrees(geometry.pointing_dec_rad):.3f}"
            f" deg (tolerance {config.dec_tolerance_deg} deg)", file=source, stage="apply",
            key="calibration.dec_tolerance_deg")
    mid = 0.5 * (prov["block_start_unix"] + prov["block_end_unix"])
    days = abs(geometry.mid_unix - mid) / 86400.0
    if days > config.validity_days:
        raise CalibrationError(
            f"solutions from block {prov['block_id']} are {days:.1f} days from block "
            f"{geometry.block_id} (validity {config.validity_days} days)", file=source,
            stage="apply", key="calibration.validity_days")
    missing = sorted(set(geometry.antenna_names) - set(solutions.antenna_name.values.tolist()))
    if len(missing) == len(geometry.antenna_names):
        raise CalibrationError("solutions share no antenna with the block", file=source,
                               stage="apply")
    if missing:
        log.warning("no solutions for antennas %s: their data will be flagged",
                    ", ".join(missing))


def _bandpass_on(solutions: xr.Dataset, geometry: BlockGeometry, source: Path
                 ) -> np.ndarray:
    """BANDPASS (frequency, antenna, polarization) on the block's channels (nearest solution
    channel within one channel width) and antennas; NaN where flagged or missing."""
    sol_freq = solutions.frequency.values
    idx = np.clip(np.searchsorted(sol_freq, geometry.freq_hz), 1, len(sol_freq) - 1)
    nearest = np.where(np.abs(sol_freq[idx - 1] - geometry.freq_hz)
                       <= np.abs(sol_freq[idx] - geometry.freq_hz), idx - 1, idx)
    if len(sol_freq) == 1:
        nearest = np.zeros(len(geometry.freq_hz), int)
    width = np.median(np.abs(np.diff(sol_freq))) if len(sol_freq) > 1 else np.inf
    far = np.abs(sol_freq[nearest] - geometry.freq_hz) > width
    if far.all():
        raise CalibrationError("the solutions cover none of the block's frequencies",
                               file=source, stage="apply")
    bp = np.where(solutions.BANDPASS_FLAG.values, np.nan, solutions.BANDPASS.values)
    out = _per_block_antenna(bp, solutions, geometry, axis=0)[:, nearest]  # (ant, f, p)
    out[:, far] = np.nan
    return out.transpose(1, 0, 2)


def _per_block_antenna(values: np.ndarray, solutions: xr.Dataset, geometry: BlockGeometry,
                       axis: int) -> np.ndarray:
    """``values`` with its antenna ``axis`` reordered to the block's antennas (NaN for
    antennas without solutions)."""
    names = solutions.antenna_name.values.tolist()
    shape = list(values.shape)
    shape[axis] = len(geometry.antenna_names)
    out = np.full(shape, np.nan, np.complex128)
    for i, name in enumerate(geometry.antenna_names):
        if name in names:
            index = [slice(None)] * len(shape)
            index[axis] = i
            source = [slice(None)] * len(shape)
            source[axis] = names.index(name)
            out[tuple(index)] = values[tuple(source)]
    return out


def gains_on(solutions: xr.Dataset, geometry: BlockGeometry) -> np.ndarray:
    """Gains (time, antenna, polarization) at the block's integrations: the short-interval
    gains interpolated linearly in amplitude and phase where the block lies within their
    span, the whole-block gains elsewhere (another block of the strip). NaN where flagged."""
    short = np.where(solutions.GAIN_FLAG.values, np.nan, solutions.GAIN.values)
    short = _per_block_antenna(short, solutions, geometry, axis=1)
    whole = np.where(solutions.GAIN_BLOCK_FLAG.values, np.nan, solutions.GAIN_BLOCK.values)
    whole = _per_block_antenna(whole, solutions, geometry, axis=0)
    times = geometry.times_unix
    inside = ((times >= solutions.gain_time_start.values[0])
              & (times <= solutions.gain_time_end.values[-1]))
    out = np.broadcast_to(whole[None], (len(times), *whole.shape)).copy()
    if inside.any():
        interp, flags = interpolate_in_time(solutions.gain_time.values, short,
                                            ~np.isfinite(short), times[inside])
        out[inside] = np.where(flags, np.nan, interp)
    return out


def _apply_chunk(group_path: Path, names: dict[str, str], sl: slice, gain_t: np.ndarray,
                 bandpass: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                 new_flags: bool) -> tuple[int, int]:
    """Correct one subband chunk in the store; returns its (flagged, total) counts."""

    def read(name: str) -> np.ndarray:
        return zarr.open_array(group_path / name, mode="r")[:, :, sl, :]

    flag = read(names["flag"])
    vis, weight, new = apply_gains(read(names["correlated_data"]), read(names["weight"]),
                                   flag, gain_t, bandpass, ant1, ant2, write_flags=new_flags)
    outputs = [("VISIBILITY_CORRECTED", vis), ("WEIGHT_CORRECTED", weight)]
    if new_flags:
        outputs.append(("FLAG_CORRECTED", new))
        flag = new
    for name, values in outputs:
        array = zarr.open_array(group_path / name, mode="r+",
                                config={"write_empty_chunks": True})
        array[:, :, sl, :] = values
    return int(flag.sum()), int(flag.size)


def apply_solutions(store: str | Path, solutions_path: str | Path, config: PipelineConfig,
                    materialise: bool | None = None) -> dict[str, Any]:
    """Apply a solutions store to the block's ``calibration.data_group`` (the original data
    are kept). Returns a summary.

    The gains and bandpass on the block's integrations and channels are written to its
    calibration node (:mod:`contimg_dask.io.block_calibration`). With ``materialise``
    (default ``calibration.materialise_corrected``) the corrected data are also written as
    the data group ``corrected``; otherwise readers compute them on the fly (the MS export
    writes CORRECTED_DATA either way).

    Raises
    ------
    CalibrationError
        Solutions from another declination strip, outside their validity window, or sharing
        no antennas or frequencies with the block.
    """
    t0 = time.perf_counter()
    cal = config.calibration
    materialise = cal.materialise_corrected if materialise is None else materialise
    solutions_path = Path(solutions_path)
    block = _open(store, cal.data_group, "apply")
    g = block.geometry
    with log_context(block=g.block_id, stage="apply"):
        solutions = read_solutions(solutions_path)
        check_applicable(solutions, g, cal, solutions_path)
        gain_t = gains_on(solutions, g)
        bandpass = _bandpass_on(solutions, g, solutions_path)
        prov = solutions.attrs["contimg"]
        record = {"solutions": str(solutions_path.resolve()),
                  "solutions_block": prov["block_id"],
                  "calibrator": prov["calibrator"]["name"], "data_group": cal.data_group,
                  "materialised": materialise, "applied": now_iso()}
        group_path = block.store / block.name
        attrs = dict(zarr.open_group(group_path, mode="r").attrs)
        groups = dict(attrs["data_groups"])
        groups.pop(CORRECTED, None)
        # Unregister an earlier corrected group first: while the new one is written, no
        # reader sees a group whose data are half-replaced.
        zarr.open_group(group_path, mode="r+").attrs.update({**attrs, "data_groups": groups})
        write_block_calibration(block.store, block.name, g.antenna_names, block.dataset,
                                gain_t, bandpass, record)
        flagged = _flagged_by_solutions(gain_t, bandpass, g)
        if materialise:
            groups[CORRECTED], flagged = _materialise(block, gain_t, bandpass, record)
        else:
            for name in ("VISIBILITY_CORRECTED", "WEIGHT_CORRECTED", "FLAG_CORRECTED"):
                if (group_path / name).is_dir():
                    shutil.rmtree(group_path / name)
        zarr.open_group(group_path, mode="r+").attrs.update(
            {**attrs, "data_groups": groups,
             "contimg": {**attrs["contimg"], "calibration": record}})
        zarr.consolidate_metadata(block.store)
        summary = {"block_id": g.block_id, "seconds": time.perf_counter() - t0,
                   "flagged_fraction": flagged, "materialised": materialise,
                   "solutions_block": prov["block_id"]}
        log.info("applied %s in %.1f s (%s; %.2f %% of the data flagged by solutions)",
                 solutions_path, summary["seconds"],
                 "materialised" if materialise else "on the fly", 100 * flagged)
    return summary


def _flagged_by_solutions(gain_t: np.ndarray, bandpass: np.ndarray, g: BlockGeometry
                          ) -> float:
    """Fraction of the cross-correlations a flagged solution flags (gains are small:
    evaluated on the (time, channel, baseline, pol) grid without the data)."""
    bad_t = ~np.isfinite(gain_t)  # (t, ant, p)
    bad_f = ~np.isfinite(bandpass)  # (f, ant, p)
    cross = g.ant1 != g.ant2
    a1, a2 = g.ant1[cross], g.ant2[cross]
    by_time = bad_t[:, a1] | bad_t[:, a2]  # (t, bl, p)
    by_channel = bad_f[:, a1] | bad_f[:, a2]  # (f, bl, p)
    return float((by_time[:, None] | by_channel[None]).mean())


def _materialise(block: _Block, gain_t: np.ndarray, bandpass: np.ndarray,
                 record: dict[str, Any]) -> tuple[dict[str, str], float]:
    """Write the corrected data group (one task per subband chunk, straight into zarr);
    returns its data_groups entry and the flagged fraction of its data."""
    g = block.geometry
    group_path = block.store / block.name
    # Flags are copied only when a solution is flagged; otherwise the corrected group
    # shares the flags of the group it corrects.
    new_flags = not (np.isfinite(gain_t).all() and np.isfinite(bandpass).all())
    _create_corrected_arrays(block, new_flags)
    tasks = [dask.delayed(_apply_chunk)(group_path, block.group, sl, gain_t, bandpass[sl],
                                        g.ant1, g.ant2, new_flags)
             for sl in g.subband_slices()]
    counts = np.array(dask.compute(*tasks))
    entry = {
        "correlated_data": "VISIBILITY_CORRECTED",
        "flag": "FLAG_CORRECTED" if new_flags else block.group["flag"],
        "weight": "WEIGHT_CORRECTED", "uvw": block.group["uvw"],
        "field_and_source": block.group["field_and_source"],
        "derived_from": record["data_group"],
        "description": f"{record['data_group']} corrected with {record['solutions']} "
                       f"(calibrator {record['calibrator']}, block "
                       f"{record['solutions_block']})",
        "date": now_iso()}
    if not new_flags and (group_path / "FLAG_CORRECTED").is_dir():
        shutil.rmtree(group_path / "FLAG_CORRECTED")  # of an earlier apply, now unused
    return entry, float(counts[:, 0].sum() / counts[:, 1].sum())


def _create_corrected_arrays(block: _Block, new_flags: bool) -> None:
    """Create (or reuse) the corrected arrays with the codecs and chunks of their sources
    (FLAG_CORRECTED only with ``new_flags``). xarray's append mode
    resets the group's attributes: the caller restores them."""
    ds = block.dataset
    vis = ds[block.group["correlated_data"]]
    path = block.store / block.name
    zarr_chunks = zarr.open_array(path / "VISIBILITY", mode="r").chunks
    sources = [("VISIBILITY_CORRECTED", vis), ("WEIGHT_CORRECTED", ds[block.group["weight"]])]
    if new_flags:
        sources.append(("FLAG_CORRECTED", ds[block.group["flag"]]))
    new, encoding = {}, {}
    for name, source in sources:
        new[name] = (vis.dims, da.zeros(vis.shape, dtype=source.dtype,
                                        chunks=vis.data.chunks), dict(source.attrs))
        if not (path / name).is_dir():
            codecs = zarr.open_array(path / source.name, mode="r").compressors
            encoding[name] = {"compressors": codecs or None, "chunks": zarr_chunks}
    with warnings.catch_warnings():
        quiet_zarr_strings()
        xr.Dataset(new).to_zarr(block.store, group=block.name, mode="a", zarr_format=3,
                                consolidated=False, compute=False, encoding=encoding)
