"""Write a block store's data group as a CASA Measurement Set (MSv2), with python-casacore.

Conventions (checked by tests against CASA itself):

- The MS sign convention is the opposite of ours (and pyuvdata's): DATA = conj(V) and
  UVW = -uvw for the same ANTENNA1/ANTENNA2, as pyuvdata's MS writer does.
- TIME and TIME_CENTROID are MJD seconds (UTC) at integration centres.
- One spectral window per subband chunk (``per_subband``, as the telescope's current
  pipeline writes) or one window for the whole band (``single``).
- The FIELD directions are ICRS; UVWs have v towards ICRS north.
- OBSERVATION/TELESCOPE_NAME is the name CASA places the array by (``telescope.casa_name``);
  the true telescope name is kept in the main table's ``CONTIMG_TELESCOPE`` keyword.
- A ``corrected`` data group derived from the exported one becomes CORRECTED_DATA beside
  DATA, and its flags and weights (the calibrated ones) become FLAG and WEIGHT. Without
  one, a calibration applied on the fly to the exported group (the block's calibration
  node) is computed here, chunk by chunk, into the same columns.
- WEIGHT is the mean of the store's weights over a row's unflagged channels (as CASA writes
  it); WEIGHT_SPECTRUM is added only when weights differ across the channels of a row.
- For imaging, two optional transforms of each window on its way out (ops/channel_average.py):
  a per-integration, per-channel rescaling of the data (weights divided by its square), and
  a weighted average of ``average_width`` adjacent channels (flagged samples excluded, the
  weights summed), so the engine reads an averaged MS without a second pass over it.
- And a baseline-dependent average in time (``time_averaging``, ops/time_average.py): each
  row then averages that baseline's integrations over its own span; INTERVAL is that span,
  EXPOSURE the part of it with unflagged data (the MS definition: effective, bad data out),
  TIME its midpoint, TIME_CENTROID and UVW the means over its integrations weighted
  by their unflagged weights (per window), WEIGHT_SPECTRUM the summed weights.

The writer streams one frequency chunk at a time (all times), reading the next while a child
process writes the current one with casacore, so memory stays at a few subbands. The MS is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import xarray as xr

from contimg_dask.constants import CASA_CORRELATION_TYPES
from contimg_dask.coords.time import unix_to_mjd_seconds
from contimg_dask.errors import InputError
from contimg_dask.io.outputs.table_writer_process import TableWriterProcess
from contimg_dask.io.store.block_calibration import read_block_calibration
from contimg_dask.io.store.block_view import fixed_centre_group
from contimg_dask.io.store.data_groups import ChannelReader, rotation_path_difference
from contimg_dask.io.store.zarr_reads import read_channels
from contimg_dask.io.system.atomic import atomic_directory
from contimg_dask.io.system.page_cache import ReadAhead, extend_file
from contimg_dask.io.system.scratch import scratch
from contimg_dask.logs import get_logger
from contimg_dask.ops.calibration import apply_gains
from contimg_dask.ops.channel_average import (
    average_channels,
    rescale_visibilities,
    scale_visibilities,
)
from contimg_dask.ops.time_average import (
    TimeAveraging,
    average_rows,
    row_centroids,
    row_exposures,
)
from contimg_dask.telescope.geodesy import geodetic_to_ecef

log = get_logger(__name__)
MEAS_FREQ_TOPO = 5


CONSTANT_COLUMNS = {  # same value in every row: IncrementalStMan stores them as one run
    "FEED1": 0, "FEED2": 0, "FIELD_ID": 0, "ARRAY_ID": 0, "OBSERVATION_ID": 0,
    "PROCESSOR_ID": -1, "STATE_ID": 0, "SCAN_NUMBER": 1,
}
# Constant over runs of rows (a baseline list, a spectral window): IncrementalStMan stores
# one value per run instead of one per row. Bound by data-manager info only, so the columns
# keep the MS definition's units and measures.
RUN_COLUMNS = ("TIME", "TIME_CENTROID", "INTERVAL", "EXPOSURE", "DATA_DESC_ID")


def _column_descs(n_chan: int, n_pol: int, with_corrected: bool,
                  with_weight_spectrum: bool) -> list[dict]:
    from casacore.tables import makearrcoldesc, makescacoldesc

    shape = [n_chan, n_pol]
    descs = [makescacoldesc(name, value, datamanagertype="IncrementalStMan",
                            datamanagergroup="Constants")
             for name, value in CONSTANT_COLUMNS.items()]
    descs += [
        makearrcoldesc("WEIGHT", 0.0, shape=[n_pol], valuetype="float",
                       datamanagertype="TiledColumnStMan", datamanagergroup="RowWeights"),
        makearrcoldesc("SIGMA", 0.0, shape=[n_pol], valuetype="float",
                       datamanagertype="TiledColumnStMan", datamanagergroup="RowSigmas"),
        makearrcoldesc("DATA", 0j, shape=shape, valuetype="complex",
                       datamanagertype="TiledColumnStMan", datamanagergroup="DataTiles",
                       comment="conj of the pipeline's visibilities (MS convention)"),
        makearrcoldesc("FLAG", False, shape=shape, valuetype="boolean",
                       datamanagertype="TiledColumnStMan", datamanagergroup="FlagTiles"),
    ]
    if with_weight_spectrum:
        descs.append(_weight_spectrum_desc(n_chan, n_pol))
    if with_corrected:
        descs.append(makearrcoldesc("CORRECTED_DATA", 0j, shape=shape, valuetype="complex",
                                    datamanagertype="TiledColumnStMan",
                                    datamanagergroup="CorrectedTiles"))
    return descs


def _weight_spectrum_desc(n_chan: int, n_pol: int) -> dict:
    from casacore.tables import makearrcoldesc

    return makearrcoldesc("WEIGHT_SPECTRUM", 0.0, shape=[n_chan, n_pol], valuetype="float",
                          datamanagertype="TiledColumnStMan", datamanagergroup="WeightTiles")


def _visibility_regions(ms: Any, path: Path, n_rows: int, block_rows: int, n_spw: int,
                        tile_rows: int) -> list[tuple[Path, int, int]]:
    """The visibility columns' tile files (DATA, CORRECTED_DATA) of a new, empty MS,
    extended to their final size, as byte ranges per spectral window in writing order
    (for :class:`~contimg_dask.io.system.page_cache.ReadAhead`)."""
    per_spw: list[list[tuple[Path, int, int]]] = [[] for _ in range(n_spw)]
    for info in ms.getdminfo().values():
        if info["NAME"] not in ("DataTiles", "CorrectedTiles"):
            continue
        tile = info["SPEC"]["DEFAULTTILESHAPE"]
        row_bytes = int(tile[0]) * int(tile[1]) * np.dtype(np.complex64).itemsize
        n_tiles = -(-n_rows // tile_rows)
        data_file = path / f"table.f{info['SEQNR']}_TSM0"  # casacore's naming
        if not data_file.is_file() or not extend_file(data_file,
                                                      n_tiles * tile_rows * row_bytes):
            continue  # not as expected: no read-ahead (only speed is lost)
        for s in range(n_spw):
            per_spw[s].append((data_file, s * block_rows * row_bytes,
                               (s + 1) * block_rows * row_bytes))
    return [region for regions in per_spw for region in regions]


def _tile_spec(n_chan: int, n_pol: int, n_rows_per_tile: int) -> dict:
    tile = np.int32([n_pol, n_chan, n_rows_per_tile])
    spec = {group: {"DEFAULTTILESHAPE": tile}
            for group in ("DataTiles", "FlagTiles", "WeightTiles", "CorrectedTiles")}
    for group in ("RowWeights", "RowSigmas"):
        spec[group] = {"DEFAULTTILESHAPE": np.int32([n_pol, 65536])}
    return spec


def _fill_subtables(ms_path: str, ds: xr.Dataset, antenna: xr.Dataset, field_ra: float,
                    field_dec: float, field_name: str, spw_freqs: list[np.ndarray],
                    channel_width: float, telescope_casa_name: str, time_range: list[float],
                    telescope_itrf_m: np.ndarray) -> None:
    from casacore.tables import makearrcoldesc, table

    names = antenna.antenna_name.values.tolist()
    with table(f"{ms_path}/ANTENNA", readonly=False, ack=False) as tab:
        tab.addrows(len(names))
        tab.putcol("NAME", np.array(names))
        tab.putcol("STATION", antenna.station_name.values.astype(str))
        tab.putcol("POSITION", antenna.ANTENNA_POSITION.values)
        tab.putcol("OFFSET", np.zeros((len(names), 3)))
        tab.putcol("DISH_DIAMETER", antenna.ANTENNA_DISH_DIAMETER.values)
        tab.putcol("MOUNT", np.full(len(names), "ALT-AZ"))
        tab.putcol("TYPE", np.full(len(names), "GROUND-BASED"))
        tab.putcol("FLAG_ROW", np.zeros(len(names), bool))
    pols = ds.polarization.values.tolist()
    with table(f"{ms_path}/POLARIZATION", readonly=False, ack=False) as tab:
        tab.addrows(1)
        tab.putcell("NUM_CORR", 0, len(pols))
        tab.putcell("CORR_TYPE", 0, np.array([CASA_CORRELATION_TYPES[p] for p in pols], np.int32))
        receptors = {p[0] for p in pols} | {p[1] for p in pols}
        index = {r: i for i, r in enumerate(sorted(receptors))}
        tab.putcell("CORR_PRODUCT", 0, np.array([[index[p[0]], index[p[1]]] for p in pols],
                                                np.int32).T)
        tab.putcell("FLAG_ROW", 0, False)
    with table(f"{ms_path}/SPECTRAL_WINDOW", readonly=False, ack=False) as tab:
        tab.addrows(len(spw_freqs))
        for i, freq in enumerate(spw_freqs):
            widths = np.full(len(freq), channel_width)
            tab.putcell("NUM_CHAN", i, len(freq))
            tab.putcell("CHAN_FREQ", i, freq)
            tab.putcell("CHAN_WIDTH", i, widths)
            tab.putcell("EFFECTIVE_BW", i, widths)
            tab.putcell("RESOLUTION", i, widths)
            tab.putcell("REF_FREQUENCY", i, float(freq[0]))
            tab.putcell("TOTAL_BANDWIDTH", i, float(channel_width * len(freq)))
            tab.putcell("MEAS_FREQ_REF", i, MEAS_FREQ_TOPO)
            tab.putcell("NET_SIDEBAND", i, 1)
            tab.putcell("NAME", i, f"SB{i:02d}")
            tab.putcell("FREQ_GROUP", i, 0)
            tab.putcell("FREQ_GROUP_NAME", i, "BAND")
            tab.putcell("IF_CONV_CHAIN", i, 0)
            tab.putcell("FLAG_ROW", i, False)
    with table(f"{ms_path}/DATA_DESCRIPTION", readonly=False, ack=False) as tab:
        tab.addrows(len(spw_freqs))
        tab.putcol("SPECTRAL_WINDOW_ID", np.arange(len(spw_freqs), dtype=np.int32))
        tab.putcol("POLARIZATION_ID", np.zeros(len(spw_freqs), np.int32))
        tab.putcol("FLAG_ROW", np.zeros(len(spw_freqs), bool))
    with table(f"{ms_path}/FIELD", readonly=False, ack=False) as tab:
        tab.addrows(1)
        direction = np.array([[[field_ra, field_dec]]])
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            tab.putcol(col, direction)
            measinfo = tab.getcolkeyword(col, "MEASINFO")
            measinfo["Ref"] = "ICRS"
            tab.putcolkeyword(col, "MEASINFO", measinfo)
        tab.putcell("NAME", 0, field_name)
        tab.putcell("CODE", 0, "")
        tab.putcell("NUM_POLY", 0, 0)
        tab.putcell("TIME", 0, time_range[0])
        tab.putcell("SOURCE_ID", 0, 0)
        tab.putcell("FLAG_ROW", 0, False)
    with table(f"{ms_path}/OBSERVATION", readonly=False, ack=False) as tab:
        tab.addrows(1)
        tab.putcell("TELESCOPE_NAME", 0, telescope_casa_name)
        tab.putcell("TIME_RANGE", 0, np.array(time_range))
        tab.putcell("OBSERVER", 0, "DSA-110")
        tab.putcell("PROJECT", 0, "contimg")
        tab.putcell("RELEASE_DATE", 0, time_range[0])
        tab.putcell("SCHEDULE_TYPE", 0, "")
        tab.putcell("FLAG_ROW", 0, False)
        # Not in the MSv2 standard; pyuvdata writes and reads it (else it looks the
        # telescope up by name, online).
        tab.addcols(makearrcoldesc("TELESCOPE_LOCATION", 0.0, shape=[3], valuetype="double"))
        tab.putcell("TELESCOPE_LOCATION", 0, np.asarray(telescope_itrf_m, np.float64))
    receptors = sorted({p[0] for p in pols} | {p[1] for p in pols})
    with table(f"{ms_path}/FEED", readonly=False, ack=False) as tab:
        n = len(names)
        tab.addrows(n)
        tab.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
        tab.putcol("FEED_ID", np.zeros(n, np.int32))
        tab.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, np.int32))
        tab.putcol("TIME", np.full(n, time_range[0]))
        tab.putcol("INTERVAL", np.full(n, time_range[1] - time_range[0]))
        tab.putcol("NUM_RECEPTORS", np.full(n, len(receptors), np.int32))
        tab.putcol("BEAM_ID", np.full(n, -1, np.int32))
        tab.putcol("BEAM_OFFSET", np.zeros((n, len(receptors), 2)))
        tab.putcol("POLARIZATION_TYPE", np.tile(np.array(receptors), (n, 1)))
        tab.putcol("POL_RESPONSE", np.tile(np.eye(len(receptors), dtype=complex), (n, 1, 1)))
        tab.putcol("POSITION", np.zeros((n, 3)))
        tab.putcol("RECEPTOR_ANGLE", np.zeros((n, len(receptors))))
    with table(f"{ms_path}/STATE", readonly=False, ack=False) as tab:
        tab.addrows(1)
        tab.putcell("OBS_MODE", 0, "OBSERVE_TARGET#ON_SOURCE")
        for col in ("SIG", "REF"):
            tab.putcell(col, 0, col == "SIG")
        for col in ("CAL", "LOAD"):
            tab.putcell(col, 0, 0.0)
        tab.putcell("SUB_SCAN", 0, 0)
        tab.putcell("FLAG_ROW", 0, False)


@numba.njit(nogil=True, cache=True)
def _row_weights_and_flags(weight: np.ndarray, flag: np.ndarray, weight_rows: np.ndarray,
                           flag_rows: np.ndarray) -> bool:
    """WEIGHT (per polarization, the mean over the unflagged channels: the weight of one
    good channel, to which SIGMA, the noise of "a channel with unity bandpass response" in
    the MS definition, corresponds; over all channels where all are flagged) and FLAG_ROW
    (every channel and polarization flagged) of (row, channel, polarization) weights and
    flags, in one pass; returns whether the weights differ across the channels of any row."""
    n_r, n_c, n_p = weight.shape
    varies = False
    for r in range(n_r):
        all_flagged = True
        for p in range(n_p):
            first = weight[r, 0, p]
            total = 0.0
            good_total = 0.0
            n_good = 0
            for c in range(n_c):
                value = weight[r, c, p]
                total += value
                varies |= value != first
                if not flag[r, c, p]:
                    good_total += value
                    n_good += 1
            weight_rows[r, p] = good_total / n_good if n_good else total / n_c
            all_flagged &= n_good == 0
        flag_rows[r] = all_flagged
    return varies


def write_ms(store: str | Path, out: str | Path, data_group: str = "rephased",
             spw_layout: str | int = "per_subband", telescope_casa_name: str = "OVRO_MMA",
             overwrite: bool = False, average_width: int = 1,
             visibility_scale: np.ndarray | None = None,
             visibility_offset: Callable[[slice, int], np.ndarray] | None = None,
             time_averaging: TimeAveraging | None = None) -> Path:
    """Write the block store's ``data_group`` as a Measurement Set at ``out`` (replaced).

    ``visibility_scale`` (time, store channel): DATA and CORRECTED_DATA are multiplied by it
    and the weights divided by its square. ``visibility_offset(channels, n_pol)``: visibilities
    (time, baseline, channel, polarization; the store's convention) added, after that scale, to
    the column that is imaged (CORRECTED_DATA when there is one, else DATA) for the store's
    ``channels`` (imaging/drift_model.py). ``average_width``: that many adjacent channels of
    each window are averaged (weighted, flagged samples excluded) into one.
    ``time_averaging``: each baseline's integrations averaged in time as it says, after the
    channel average (ops/time_average.py). ``spw_layout``: one spectral window per subband
    (``per_subband``), one for the band (``single``), or that many windows of whole adjacent
    subbands (an int dividing the subband count).

    One spectral window at a time: this process reads the next window (rotated, for a group
    derived on the fly; calibrated, for a calibration applied on the fly) into a
    shared-memory slot while a child process writes the previous one with casacore
    (io/outputs/table_writer_process.py).

    Raises
    ------
    InputError
        The store lacks the data group (e.g. not rephased yet: an MS needs one phase centre).
    """
    from casacore.tables import default_ms, makedminfo, maketabdesc

    t0 = time.perf_counter()
    store, out = Path(store), Path(out)
    view = fixed_centre_group(store, data_group)
    block = view.block
    node, ds, group = block.node, block.dataset, block.names
    field_ra, field_dec, field_name = view.ra_rad, view.dec_rad, view.field_name
    antenna = node["antenna_xds"].to_dataset(inherit=False)
    vis = ds[group["correlated_data"]]
    corrected_group = ds.attrs["data_groups"].get("corrected")
    corrected = None
    if corrected_group is not None and corrected_group.get("derived_from") == data_group:
        # CASA keeps one FLAG and WEIGHT per row, and applycal updates them: the calibrated
        # ones (solution flags added, weights scaled by the gains) go with CORRECTED_DATA.
        corrected = ds[corrected_group["correlated_data"]]
        group = {**group, "flag": corrected_group["flag"],
                 "weight": corrected_group["weight"]}
    # Calibration applied on the fly: CORRECTED_DATA, FLAG and WEIGHT computed here from the
    # gains on the block's grid (io/store/block_calibration.py).
    calibration = read_block_calibration(node) if corrected is None else None
    if calibration is not None and calibration.data_group != data_group:
        calibration = None
    flag, weight, uvw = ds[group["flag"]], ds[group["weight"]], ds[group["uvw"]]

    n_t, n_bl, _, n_pol = vis.shape
    chunk_sizes = vis.chunks[2]
    subband_edges = np.concatenate([[0], np.cumsum(chunk_sizes)])
    if spw_layout == "per_subband":
        edges = subband_edges
    elif spw_layout == "single":
        edges = np.array([0, vis.shape[2]])
    elif isinstance(spw_layout, int) and spw_layout > 0 and len(chunk_sizes) % spw_layout == 0:
        edges = subband_edges[::len(chunk_sizes) // spw_layout]
    else:
        raise InputError(f"unknown spw layout {spw_layout!r} (per_subband, single or a "
                         f"number of windows dividing the {len(chunk_sizes)} subbands)",
                         stage="export")
    spw_slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    n_chans = {s.stop - s.start for s in spw_slices}
    if len(n_chans) != 1:
        raise InputError("subband chunks differ in size; use --spw-layout single",
                         file=store, stage="export")
    n_in = n_chans.pop()
    if average_width < 1 or n_in % average_width:
        raise InputError(f"channel average {average_width} does not divide the windows' "
                         f"{n_in} channels", file=store, stage="export")
    n_chan = n_in // average_width
    n_spw = len(spw_slices)
    freq = ds.frequency.values
    channel_width = float(ds.frequency.attrs["channel_width"]["data"]) * average_width
    out_freqs = [freq[s].reshape(n_chan, average_width).mean(axis=1) for s in spw_slices]
    geometry = block.geometry
    ant1, ant2 = geometry.ant1.astype(np.int32), geometry.ant2.astype(np.int32)
    interval = float(ds.time.attrs["integration_time"]["data"])
    mjd_s = unix_to_mjd_seconds(ds.time.values)
    time_range = [float(mjd_s[0] - interval / 2), float(mjd_s[-1] + interval / 2)]
    uvw_tb = np.asarray(uvw.values, np.float64)
    if time_averaging is None:
        block_rows = n_t * n_bl
        uvw_rows = uvw_tb.reshape(block_rows, 3)
        ant1_rows, ant2_rows = np.tile(ant1, n_t), np.tile(ant2, n_t)
    else:
        if time_averaging.n_times != n_t or len(time_averaging.factors) != n_bl:
            raise InputError(f"time averaging made for {time_averaging.n_times} integrations "
                             f"x {len(time_averaging.factors)} baselines, the block has "
                             f"{n_t} x {n_bl}", file=store, stage="export")
        block_rows = time_averaging.n_rows
        ant1_rows, ant2_rows = ant1[time_averaging.baseline], ant2[time_averaging.baseline]
        mjd_tb = np.broadcast_to(mjd_s[:, None, None], (n_t, n_bl, 1))
    n_rows = block_rows * n_spw
    weight_rows = np.empty((n_rows, n_pol), np.float32)
    flag_rows = np.empty(n_rows, bool)
    reader = ChannelReader(block.group_path, block.data_group, freq,
                           rotation_path_difference(ds, block.data_group))
    # Per-channel weights (WEIGHT_SPECTRUM) are written only when they differ across the
    # channels of a row: correlator weights (nsamples) rarely do, and the column is 1/3 of
    # the MS. Calibration applied on the fly makes them differ.
    # Averaged weights differ across channels wherever flags differ within the averages.
    direct = average_width == 1 and time_averaging is None  # read straight into the slots
    per_channel = calibration is not None or visibility_scale is not None or not direct
    with_corrected = corrected is not None or calibration is not None
    rows_shape = (block_rows, n_chan, n_pol)
    # Each slot also carries one window's row columns (the same for every window).
    slot_specs = [("data", rows_shape, "complex64"), ("flag", rows_shape, "bool"),
                  ("uvw", (block_rows, 3), "float64"), ("antenna1", (block_rows,), "int32"),
                  ("antenna2", (block_rows,), "int32")]
    if with_corrected:
        slot_specs.append(("corrected", rows_shape, "complex64"))
    if per_channel:
        slot_specs.append(("weight", rows_shape, "float32"))
    if time_averaging is not None:  # per-row times: columns of their own, not runs
        slot_specs += [(name, (block_rows,), "float64")
                       for name in ("time", "time_centroid", "interval", "exposure")]

    def prepare(s: int, slot: dict[str, np.ndarray]) -> tuple[list[tuple[str, str, int]],
                                                               bool]:
        """Read spectral window ``s`` into a writer slot (DATA conjugated; corrected data,
        flags and weights calibrated when calibration is applied on the fly), fill its
        rows of WEIGHT and FLAG_ROW; returns the slot's column writes and whether its
        weights vary across channels."""
        sl, shape = spw_slices[s], (n_t, n_bl, n_chan, n_pol)
        # where the channel average goes: the slot, or a buffer when a time average follows
        averaged = ((lambda name, _: slot[name].reshape(shape)) if time_averaging is None
                    else (lambda name, dtype: scratch(f"ms_{name}_chan", shape, dtype)))
        full = (n_t, n_bl, n_in, n_pol)

        def buffer(name: str, dtype: type) -> np.ndarray:
            return (slot[name].reshape(shape) if direct
                    else scratch(f"ms_{name}_in", full, dtype))

        data, f = buffer("data", np.complex64), buffer("flag", np.bool_)
        reader.read(sl, conjugate=calibration is None, out=data)
        read_channels(block.group_path / flag.name, sl, out=f)
        w = read_channels(block.group_path / weight.name, sl,
                          out=scratch("ms_weight", full, np.float32))
        cdata = None
        if corrected is not None:
            cdata = read_channels(block.group_path / corrected.name, sl,
                                  out=buffer("corrected", np.complex64))
            np.conj(cdata, out=cdata)
        elif calibration is not None:
            calibrated, w, f_cal = apply_gains(data, w, f, calibration.gain_t,
                                               calibration.bandpass[sl], ant1, ant2)
            np.conj(data, out=data)
            cdata = np.conj(calibrated, out=buffer("corrected", np.complex64))
            f[...] = f_cal
        if visibility_scale is not None:
            rescale_visibilities(data, w, visibility_scale[:, sl])
            if cdata is not None:
                scale_visibilities(cdata, visibility_scale[:, sl])
        if visibility_offset is not None:  # conjugated: the MS convention, like the data
            imaged = cdata if cdata is not None else data
            imaged += np.conj(visibility_offset(sl, n_pol))
        if average_width > 1:
            f_in, w_in = f, w
            data, f, w = average_channels(data, f_in, w_in, average_width, out=(
                averaged("data", np.complex64), averaged("flag", np.bool_),
                scratch("ms_weight_out", shape, np.float32)))
            if cdata is not None:  # the same weights and flags as DATA
                cdata = average_channels(cdata, f_in, w_in, average_width, out=(
                    averaged("corrected", np.complex64),
                    scratch("ms_flag_unused", shape, np.bool_),
                    scratch("ms_weight_unused", shape, np.float32)))[0]
        if time_averaging is not None:
            f_in, w_in = f, w
            data, f, w = average_rows(time_averaging, data, f_in, w_in, out=(
                slot["data"], slot["flag"], scratch("ms_weight_rows", rows_shape, np.float32)))
            if cdata is not None:
                average_rows(time_averaging, cdata, f_in, w_in, out=(
                    slot["corrected"], scratch("ms_flag_rows_unused", rows_shape, np.bool_),
                    scratch("ms_weight_rows_unused", rows_shape, np.float32)))
            # MS convention: UVW of opposite sign
            np.negative(row_centroids(time_averaging, uvw_tb, w_in, f_in), out=slot["uvw"])
            slot["time_centroid"][...] = row_centroids(time_averaging, mjd_tb, w_in, f_in)[:, 0]
            slot["time"][...] = time_averaging.midpoints(mjd_s)
            slot["interval"][...] = time_averaging.intervals(interval)
            slot["exposure"][...] = row_exposures(time_averaging, f_in, interval)
        if per_channel:
            slot["weight"][...] = w.reshape(rows_shape)
        start = s * block_rows
        rows = slice(start, start + block_rows)
        varies = _row_weights_and_flags(w.reshape(rows_shape), slot["flag"],
                                        weight_rows[rows], flag_rows[rows])
        puts = [("DATA", "data", start), ("FLAG", "flag", start), ("UVW", "uvw", start),
                ("ANTENNA1", "antenna1", start), ("ANTENNA2", "antenna2", start)]
        if with_corrected:
            puts.append(("CORRECTED_DATA", "corrected", start))
        if per_channel:
            puts.append(("WEIGHT_SPECTRUM", "weight", start))
        if time_averaging is not None:
            puts += [("TIME", "time", start), ("TIME_CENTROID", "time_centroid", start),
                     ("INTERVAL", "interval", start), ("EXPOSURE", "exposure", start)]
        return puts, varies

    with atomic_directory(out, "ms", overwrite) as tmp:
        tile_rows = max(1, 262144 // (n_chan * n_pol))
        tiles = _tile_spec(n_chan, n_pol, tile_rows)
        desc = maketabdesc(_column_descs(n_chan, n_pol, with_corrected, per_channel))
        dminfo = makedminfo(desc, tiles)
        # Time-averaged rows change TIME and INTERVAL from row to row: as runs they would
        # cost one IncrementalStMan insertion per row (minutes for a full block), so they
        # stay with the default storage manager and are written a window at a time.
        run_columns = [c for c in RUN_COLUMNS if time_averaging is None or c == "DATA_DESC_ID"]
        dminfo[f"*{len(dminfo) + 1}"] = {"TYPE": "IncrementalStMan", "NAME": "Runs",
                                         "SPEC": {}, "COLUMNS": run_columns}
        ms = default_ms(str(tmp), desc, dminfo)
        regions = _visibility_regions(ms, tmp, n_rows, block_rows, n_spw, tile_rows)
        ms.close()
        with ReadAhead(regions), TableWriterProcess(tmp, slot_specs) as writer:
            # Rows are added by the writer: tiles it never writes are zero-filled when the
            # table is closed, costing as much as writing them.
            writer.addrows(n_rows)
            # The child process opens the main table while the subtables are filled here.
            site = ds.attrs["contimg"]["telescope_location_wgs84"]
            telescope_itrf = geodetic_to_ecef(site["longitude_rad"], site["latitude_rad"],
                                              site["height_m"])
            _fill_subtables(str(tmp), ds, antenna, field_ra, field_dec, field_name,
                            out_freqs, channel_width, telescope_casa_name,
                            time_range, telescope_itrf)
            # Rows: spectral window, then time, then baseline, so that each subband chunk
            # is one contiguous block written with one call per column (the row columns,
            # the same for every window, travel with each window's slot). Run columns
            # (IncrementalStMan) get one value per run.
            if time_averaging is None:
                integration_starts = np.arange(n_spw * n_t) * n_bl
                for name in ("TIME", "TIME_CENTROID"):
                    writer.put_runs(name, integration_starts, np.tile(mjd_s, n_spw))
                for name in ("INTERVAL", "EXPOSURE"):
                    writer.put_runs(name, [0], [interval])
            # else: TIME, TIME_CENTROID, INTERVAL, EXPOSURE go with each window's slot
            writer.put_runs("DATA_DESC_ID", np.arange(n_spw) * block_rows,
                            np.arange(n_spw, dtype=np.int32))
            for name, value in CONSTANT_COLUMNS.items():
                writer.put_runs(name, [0], np.array([value], np.int32))
            for index in range(2):  # the row columns, the same in every window's slot
                slot = writer.slot(index)
                # MS convention: UVW of opposite sign, same antenna order (time-averaged
                # UVWs are each window's own, written as it is prepared).
                if time_averaging is None:
                    np.negative(uvw_rows, out=slot["uvw"])
                slot["antenna1"][...] = ant1_rows
                slot["antenna2"][...] = ant2_rows
            varies_any = False
            for s in range(n_spw):
                puts, varies = prepare(s, writer.slot(s % 2))
                writer.put_slot(s % 2, puts)
                varies_any |= varies
            if varies_any and not per_channel:
                descs = [_weight_spectrum_desc(n_chan, n_pol)]
                writer.addcols(descs, {"WeightTiles": tiles["WeightTiles"]})
                for s, sl in enumerate(spw_slices):
                    writer.put("WEIGHT_SPECTRUM", read_channels(block.group_path / weight.name, sl)
                               .reshape(rows_shape), startrow=s * block_rows)
            writer.put("WEIGHT", weight_rows)
            writer.put("SIGMA", np.where(weight_rows > 0, 1 / np.sqrt(
                np.maximum(weight_rows, 1e-30)), 1.0).astype(np.float32))
            writer.put("FLAG_ROW", flag_rows)
            writer.keyword("CONTIMG_TELESCOPE", ds.attrs["contimg"]["telescope"])
            writer.keyword("CONTIMG_BLOCK", ds.attrs["contimg"]["block_id"])
    log.info("wrote %s (%d rows, %d spw) in %.1f s", out, n_rows, n_spw,
             time.perf_counter() - t0)
    return out
