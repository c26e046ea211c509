"""Stage: apply calibration solutions to a block.

``apply_solutions`` writes the gains on the block's own grid into its calibration node
(:mod:`contimg_dask.io.store.block_calibration`); readers then compute the corrected data on the
fly. Materialised, it also writes the data group ``corrected`` (VISIBILITY_CORRECTED,
WEIGHT_CORRECTED, and FLAG_CORRECTED when a solution is flagged; UVW, phase centre and
otherwise the flags are shared with the group it corrects): one task per subband chunk reads
its data from the store and writes its corrected chunk straight back; the group is
registered last, so an interrupted run leaves no trace.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import CalibrationConfig
from contimg_dask.errors import CalibrationError
from contimg_dask.io.store.block_calibration import write_block_calibration
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.io.store.block_store import now_iso, quiet_zarr_strings
from contimg_dask.io.store.data_groups import ChannelReader, DataGroup, rotation_path_difference
from contimg_dask.io.store.metadata import consolidate, store_lock, update_group_attrs
from contimg_dask.io.store.solutions import read_solutions
from contimg_dask.io.store.zarr_reads import read_channels
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.calibration import apply_gains, interpolate_in_time
from contimg_dask.processing.calibration_block import CalibrationBlock, open_calibration_block

log = get_logger(__name__)
CORRECTED = "corrected"


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


def _apply_chunk(group_path: Path, group: DataGroup, freq_hz: np.ndarray,
                 dw: np.ndarray | None, sl: slice, gain_t: np.ndarray, bandpass: np.ndarray,
                 ant1: np.ndarray, ant2: np.ndarray, new_flags: bool) -> tuple[int, int]:
    """Correct one subband chunk in the store; returns its (flagged, total) counts."""

    flag = read_channels(group_path / group.names["flag"], sl)
    vis = ChannelReader(group_path, group, freq_hz, dw).read(sl)
    vis, weight, new = apply_gains(vis, read_channels(group_path / group.names["weight"], sl),
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


def _without_corrected(attrs: dict) -> dict:
    groups = {k: v for k, v in attrs["data_groups"].items() if k != CORRECTED}
    return {**attrs, "data_groups": groups}


def _with_calibration(attrs: dict, record: dict, corrected: dict | None) -> dict:
    """``attrs`` with the calibration ``record`` and, when materialised, the ``corrected``
    data group's entry."""
    groups = _without_corrected(attrs)["data_groups"]
    if corrected is not None:
        groups[CORRECTED] = corrected
    return {**attrs, "data_groups": groups,
            "contimg": {**attrs["contimg"], "calibration": record}}


def apply_solutions(store: str | Path, solutions_path: str | Path, config: PipelineConfig,
                    materialise: bool | None = None) -> dict[str, Any]:
    """Apply a solutions store to the block's ``calibration.data_group`` (the original data
    are kept). Returns a summary.

    The gains and bandpass on the block's integrations and channels are written to its
    calibration node (:mod:`contimg_dask.io.store.block_calibration`). With ``materialise``
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
    block = open_calibration_block(store, cal.data_group, "apply")
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
        # Unregister an earlier corrected group first: while the new one is written, no
        # reader sees a group whose data are half-replaced.
        with store_lock(block.store):
            update_group_attrs(block.store, block.name, _without_corrected)
            write_block_calibration(block.store, block.name, g.antenna_names, block.dataset,
                                    gain_t, bandpass, record)
        corrected = None
        if materialise:
            corrected, flagged = _materialise(block, gain_t, bandpass, record)
        else:
            flagged = _flagged_by_solutions(gain_t, bandpass, g)
            with store_lock(block.store):
                for name in ("VISIBILITY_CORRECTED", "WEIGHT_CORRECTED", "FLAG_CORRECTED"):
                    if (group_path / name).is_dir():
                        shutil.rmtree(group_path / name)
                consolidate(block.store)
        record["flagged_fraction"] = flagged
        update_group_attrs(block.store, block.name,
                           lambda attrs: _with_calibration(attrs, record, corrected))
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


def _materialise(block: CalibrationBlock, gain_t: np.ndarray, bandpass: np.ndarray,
                 record: dict[str, Any]) -> tuple[dict[str, str], float]:
    """Write the corrected data group (one task per subband chunk, straight into zarr);
    returns its data_groups entry and the flagged fraction of its data."""
    g = block.geometry
    group_path = block.store / block.name
    # Flags are copied only when a solution is flagged; otherwise the corrected group
    # shares the flags of the group it corrects.
    new_flags = not (np.isfinite(gain_t).all() and np.isfinite(bandpass).all())
    _create_corrected_arrays(block, new_flags)
    # The rotation of a derived group enters the graph once, shared by every chunk's task.
    dw = dask.delayed(rotation_path_difference(block.dataset, block.data_group))
    tasks = [dask.delayed(_apply_chunk)(group_path, block.data_group, g.freq_hz, dw, sl,
                                        gain_t, bandpass[sl], g.ant1, g.ant2, new_flags)
             for sl in g.subband_slices()]
    counts = np.array(dask.compute(*tasks))
    entry = {
        "correlated_data": "VISIBILITY_CORRECTED",
        "flag": "FLAG_CORRECTED" if new_flags else block.names["flag"],
        "weight": "WEIGHT_CORRECTED", "uvw": block.names["uvw"],
        "field_and_source": block.names["field_and_source"],
        "derived_from": record["data_group"],
        "description": f"{record['data_group']} corrected with {record['solutions']} "
                       f"(calibrator {record['calibrator']}, block "
                       f"{record['solutions_block']})",
        "date": now_iso()}
    if not new_flags and (group_path / "FLAG_CORRECTED").is_dir():
        with store_lock(block.store):  # of an earlier apply, now unused
            shutil.rmtree(group_path / "FLAG_CORRECTED")
            consolidate(block.store)
    return entry, float(counts[:, 0].sum() / counts[:, 1].sum())


def _create_corrected_arrays(block: CalibrationBlock, new_flags: bool) -> None:
    """Create (or reuse) the corrected arrays with the codecs and chunks of their sources
    (FLAG_CORRECTED only with ``new_flags``). xarray's append mode resets the group's
    attributes: the write runs under the store's lock, between reading the attributes and
    storing them again."""
    ds = block.dataset
    vis = ds[block.names["correlated_data"]]
    path = block.store / block.name
    zarr_chunks = zarr.open_array(path / "VISIBILITY", mode="r").chunks
    sources = [("VISIBILITY_CORRECTED", vis), ("WEIGHT_CORRECTED", ds[block.names["weight"]])]
    if new_flags:
        sources.append(("FLAG_CORRECTED", ds[block.names["flag"]]))
    new, encoding = {}, {}
    for name, source in sources:
        new[name] = (vis.dims, da.zeros(vis.shape, dtype=source.dtype,
                                        chunks=vis.data.chunks), dict(source.attrs))
        if not (path / name).is_dir():
            codecs = zarr.open_array(path / source.name, mode="r").compressors
            encoding[name] = {"compressors": codecs or None, "chunks": zarr_chunks}

    def write() -> None:
        with warnings.catch_warnings():
            quiet_zarr_strings()
            xr.Dataset(new).to_zarr(block.store, group=block.name, mode="a", zarr_format=3,
                                    consolidated=False, compute=False, encoding=encoding)

    update_group_attrs(block.store, block.name, dict, write=write)
