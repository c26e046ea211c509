"""Read UVH5 files with h5py: metadata eagerly (small), visibilities one subband at a time.

Handles the DSA-110 correlator's 2018 layout (length-1 spectral-window axis, descending
frequencies, float32 UVWs, ``phase_type = "drift"`` with ``HADEC`` extra keywords) and generic
UVH5 (current layout, integer or complex128 visibilities, any baseline-time ordering,
pyuvdata's ``phase_center_catalog`` or the older ``phase_type`` keywords).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numba
import numpy as np
from numpy.typing import NDArray

from contimg_dask.constants import POLARIZATION_NAMES
from contimg_dask.errors import InputError, UnreadableFileError
from contimg_dask.io.system.scratch import scratch
from contimg_dask.io.uvh5.hdf5_direct import read_datasets
from contimg_dask.io.uvh5.header import read_header_axes


@dataclass(frozen=True)
class PhaseCentre:
    """How a file's visibilities are phased.

    ``kind`` is ``"drift"`` (each integration phased to apparent hour angle 0 at declination
    ``dec_rad``, apparent, as DSA-110 and zenith drift-scan arrays do) or ``"sidereal"`` (a
    fixed ICRS direction ``ra_rad``/``dec_rad``).
    """

    kind: str
    dec_rad: float
    ra_rad: float | None = None
    name: str = ""


@dataclass
class UVH5Meta:
    """Everything about a UVH5 file except its visibilities (arrays in file order)."""

    path: str
    telescope_name: str
    instrument: str
    latitude_rad: float
    longitude_rad: float
    altitude_m: float
    antenna_names: list[str]
    antenna_numbers: NDArray[np.int64]
    antenna_positions: NDArray[np.float64]  # ECEF offsets from the telescope location, m
    antenna_diameters: NDArray[np.float64] | None
    times_jd: NDArray[np.float64]  # unique integration centres, ascending
    integration_time_s: float
    ant1: NDArray[np.int64]  # unique baselines (antenna numbers), file's first-seen order
    ant2: NDArray[np.int64]
    # Per row: index into times_jd and into ant1/ant2; None when the rows are regular
    # (time-major, the same baseline order every integration: the correlator's layout).
    blt_time_index: NDArray[np.int64] | None
    blt_baseline_index: NDArray[np.int64] | None
    freq_hz: NDArray[np.float64]  # file order
    channel_width_hz: NDArray[np.float64]  # per channel, positive
    polarizations: NDArray[np.int64]
    phase_centre: PhaseCentre
    legacy_spw_axis: bool  # datasets carry the length-1 spectral-window axis
    vis_dtype: str
    extra_keywords: dict[str, object] = field(default_factory=dict)

    @property
    def n_times(self) -> int:
        return len(self.times_jd)

    @property
    def n_baselines(self) -> int:
        return len(self.ant1)

    @property
    def polarization_names(self) -> list[str]:
        return [POLARIZATION_NAMES[int(p)] for p in self.polarizations]

    @property
    def time_major_regular(self) -> bool:
        """Rows are all baselines of time 0, then time 1, ... in the same baseline order."""
        return self.blt_time_index is None


def _get(hdr: h5py.Group, key: str, default: object = None) -> object:
    if key not in hdr:
        return default
    value = hdr[key][()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return [v.decode() for v in value]
    return value


def _phase_centre(hdr: h5py.Group, extra: dict[str, object], latitude_rad: float,
                  path: Path) -> PhaseCentre:
    phase_type = _get(hdr, "phase_type")
    if "phase_center_catalog" in hdr:
        catalog = hdr["phase_center_catalog"]
        entries = {}
        for key in catalog:
            group = catalog[key]
            if isinstance(group, h5py.Group):
                entries[key] = {k: _get(group, k) for k in group}
            else:  # older pyuvdata: JSON string datasets
                entries[key] = json.loads(group[()])
        if len(entries) != 1:
            raise InputError(f"{len(entries)} phase centres in one file are not supported",
                             file=path)
        entry = next(iter(entries.values()))
        cat_type = entry.get("cat_type")
        if cat_type == "unprojected":
            return PhaseCentre("drift", latitude_rad, name=str(entry.get("cat_name", "zenith")))
        if cat_type == "sidereal" and entry.get("cat_frame", "icrs") in ("icrs", "fk5"):
            return PhaseCentre("sidereal", float(entry["cat_lat"]), float(entry["cat_lon"]),
                               str(entry.get("cat_name", "")))
        raise InputError(f"phase centre type {cat_type!r} is not supported", file=path)
    if phase_type == "drift":
        epoch = extra.get("phase_center_epoch")
        if epoch == "HADEC" or "ha_phase_center" in extra:
            # DSA-110: fringe-stopped per integration towards apparent HA 0 at this dec.
            dec = extra.get("phase_center_dec", _get(hdr, "phase_center_app_dec"))
            if dec is None:
                raise InputError("drift file with ha_phase_center but no phase_center_dec",
                                 file=path)
            return PhaseCentre("drift", float(dec), name="meridian")
        return PhaseCentre("drift", latitude_rad, name="zenith")
    if phase_type == "phased":
        ra = _get(hdr, "phase_center_ra")
        dec = _get(hdr, "phase_center_dec")
        frame = _get(hdr, "phase_center_frame", "icrs")
        if ra is None or dec is None or frame not in ("icrs", "fk5"):
            raise InputError(f"phased file without a usable ICRS phase centre (frame {frame})",
                             file=path)
        return PhaseCentre("sidereal", float(dec), float(ra),
                           str(_get(hdr, "object_name", "")))
    raise InputError(f"unknown phase_type {phase_type!r}", file=path)


def _blt_layout(time_array: NDArray[np.float64], ant1_blt: NDArray[np.int64],
                ant2_blt: NDArray[np.int64], path: Path
                ) -> tuple[NDArray, NDArray, NDArray, NDArray | None, NDArray | None]:
    """Times (ascending), the baselines' antennas (in the order the file first lists them)
    and, unless rows are time-major regular (every baseline of time 0, then of time 1, ...
    in one order), each row's time and baseline index.

    Raises
    ------
    InputError
        A baseline appears twice in one integration.
    """
    n_blts = len(time_array)
    # Time-major regular, as the correlator writes: checked in O(rows), no sorting.
    n_bl = int(np.argmax(time_array != time_array[0])) or n_blts
    if n_blts % n_bl == 0:
        shape = (n_blts // n_bl, n_bl)
        t2, a1, a2 = (a.reshape(shape) for a in (time_array, ant1_blt, ant2_blt))
        if (np.all(t2 == t2[:, :1]) and np.all(np.diff(t2[:, 0]) > 0)
                and np.all(a1 == a1[:1]) and np.all(a2 == a2[:1])
                and len(np.unique(a1[0] * (1 << 20) + a2[0])) == n_bl):
            return t2[:, 0].copy(), a1[0].copy(), a2[0].copy(), None, None
    times, time_index = np.unique(time_array, return_inverse=True)
    pairs = ant1_blt * (1 << 20) + ant2_blt
    _, first_seen, bl_index = np.unique(pairs, return_index=True, return_inverse=True)
    order = np.argsort(first_seen)  # baselines in the order the file first lists them
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    bl_index = rank[bl_index]
    uniq_first = first_seen[order]
    if len(np.unique(time_index * len(order) + bl_index)) != n_blts:
        raise InputError("a baseline appears twice in one integration", file=path)
    n_bl = len(order)
    regular = (n_blts == len(times) * n_bl
               and np.array_equal(time_index, np.repeat(np.arange(len(times)), n_bl))
               and np.array_equal(bl_index, np.tile(np.arange(n_bl), len(times))))
    if regular:
        return times, ant1_blt[uniq_first], ant2_blt[uniq_first], None, None
    return (times, ant1_blt[uniq_first], ant2_blt[uniq_first], time_index.astype(np.int64),
            bl_index.astype(np.int64))


def read_uvh5_meta(path: str | Path) -> UVH5Meta:
    """Read and check the header of a UVH5 file (its axes by
    :func:`~contimg_dask.io.uvh5.header.read_header_axes`, as discovery reads them).

    Raises
    ------
    UnreadableFileError, ForeignFileError, InputError
        Naming the file and the problem (truncated, not UVH5, inconsistent header).
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            axes = read_header_axes(f, path)
            hdr = f["Header"]
            extra: dict[str, object] = {}
            if "extra_keywords" in hdr:
                extra = {k: _get(hdr["extra_keywords"], k) for k in hdr["extra_keywords"]}
            ant1_blt = np.asarray(hdr["ant_1_array"][()], dtype=np.int64)
            ant2_blt = np.asarray(hdr["ant_2_array"][()], dtype=np.int64)
            width = np.abs(np.broadcast_to(
                np.asarray(hdr["channel_width"][()], dtype=np.float64).ravel(),
                (axes.n_freqs,)))
            int_time = np.asarray(hdr["integration_time"][()], dtype=np.float64).ravel()
            lat = np.radians(float(np.asarray(hdr["latitude"][()]).item()))
            lon = np.radians(float(np.asarray(hdr["longitude"][()]).item()))
            alt = float(np.asarray(hdr["altitude"][()]).item())
            names = _get(hdr, "antenna_names")
            numbers = np.asarray(hdr["antenna_numbers"][()], dtype=np.int64)
            positions = np.asarray(hdr["antenna_positions"][()], dtype=np.float64)
            diameters = (np.asarray(hdr["antenna_diameters"][()], dtype=np.float64)
                         if "antenna_diameters" in hdr else None)
            pols = np.asarray(hdr["polarization_array"][()], dtype=np.int64)
            telescope = str(_get(hdr, "telescope_name", ""))
            instrument = str(_get(hdr, "instrument", ""))
            centre = _phase_centre(hdr, extra, lat, path)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise UnreadableFileError(f"cannot read UVH5 header: {exc}", file=path) from exc

    times, ant1, ant2, time_index, bl_index = _blt_layout(axes.time_jd, ant1_blt, ant2_blt,
                                                          path)
    return UVH5Meta(
        path=str(path), telescope_name=telescope, instrument=instrument,
        latitude_rad=lat, longitude_rad=lon, altitude_m=alt,
        antenna_names=list(names), antenna_numbers=numbers, antenna_positions=positions,
        antenna_diameters=diameters, times_jd=times,
        integration_time_s=float(np.median(int_time)),
        ant1=ant1, ant2=ant2, blt_time_index=time_index, blt_baseline_index=bl_index,
        freq_hz=axes.freq_hz, channel_width_hz=width, polarizations=pols,
        phase_centre=centre, legacy_spw_axis=axes.legacy_spw_axis, vis_dtype=axes.vis_dtype,
        extra_keywords=extra,
    )


def _as_complex64(raw: np.ndarray) -> NDArray[np.complex64]:
    if raw.dtype.names:  # compound (r, i), e.g. HERA's integer correlator output
        out = np.empty(raw.shape, dtype=np.complex64)
        out.real = raw["r"]
        out.imag = raw["i"]
        return out
    return raw.astype(np.complex64, copy=False)


def read_uvh5_visibilities(meta: UVH5Meta, ascending: bool = True,
                           reuse_buffers: bool = False
                           ) -> tuple[NDArray[np.complex64], NDArray[np.bool_],
                                      NDArray[np.float32]]:
    """Visibilities, flags and nsamples on the (time, baseline, frequency, polarization) grid.

    Frequencies are sorted ascending when ``ascending`` (reversed in place: the arrays stay
    C-contiguous). Rows absent from the file (a baseline
    missing in some integration) are flagged with zero weight. With ``reuse_buffers`` the
    file's arrays are read into this thread's scratch buffers (io/system/scratch.py): the results
    are then valid only until the thread's next such read.

    Raises
    ------
    UnreadableFileError
        The data cannot be read (e.g. the file is truncated).
    """
    path = Path(meta.path)
    shape = (meta.n_times, meta.n_baselines, len(meta.freq_hz), len(meta.polarizations))
    try:
        with h5py.File(path, "r") as f:
            data = f["Data"]
            # Read with the raw dtype; complex compound types come back as numpy complex.
            # Uncompressed datasets are read chunk by chunk straight from the file (h5py's
            # per-chunk cost dominates for the correlator's small chunks).
            names = [name for name in ("visdata", "flags", "nsamples") if name in data]
            dsets = [data[name] for name in names]
            outs = ([scratch(f"uvh5_{name}", d.shape, d.dtype) for name, d in
                     zip(names, dsets, strict=True)] if reuse_buffers else None)
            raw = dict(zip(names, read_datasets(dsets, outs), strict=True))
            vis_raw = raw["visdata"]
            flags_raw = raw.get("flags")
            nsamp_raw = raw.get("nsamples")
    except (OSError, KeyError, ValueError) as exc:
        raise UnreadableFileError(f"cannot read visibilities: {exc}", file=path) from exc
    if meta.legacy_spw_axis:
        vis_raw = vis_raw[:, 0]
        flags_raw = None if flags_raw is None else flags_raw[:, 0]
        nsamp_raw = None if nsamp_raw is None else nsamp_raw[:, 0]
    vis_rows = _as_complex64(vis_raw)
    flag_rows = (np.zeros(vis_rows.shape, bool) if flags_raw is None
                 else flags_raw.astype(bool, copy=False))
    nsamp_rows = (np.ones(vis_rows.shape, np.float32) if nsamp_raw is None
                  else nsamp_raw.astype(np.float32, copy=False))
    if meta.time_major_regular:
        vis = vis_rows.reshape(shape)
        flags = flag_rows.reshape(shape)
        nsamples = nsamp_rows.reshape(shape)
    else:
        vis = np.zeros(shape, np.complex64)
        flags = np.ones(shape, bool)
        nsamples = np.zeros(shape, np.float32)
        vis[meta.blt_time_index, meta.blt_baseline_index] = vis_rows
        flags[meta.blt_time_index, meta.blt_baseline_index] = flag_rows
        nsamples[meta.blt_time_index, meta.blt_baseline_index] = nsamp_rows
    if ascending and len(meta.freq_hz) > 1 and meta.freq_hz[0] > meta.freq_hz[-1]:
        # In place, so the arrays stay contiguous: writers then store them without a copy.
        for array in (vis, flags, nsamples):
            _reverse_frequency(array)
    return vis, flags, nsamples


@numba.njit(nogil=True, cache=True)
def _reverse_frequency(array: np.ndarray) -> None:
    """Reverse axis 2 (frequency) of a C-contiguous (time, baseline, frequency,
    polarization) array in place."""
    n_t, n_b, n_f, n_p = array.shape
    for t in range(n_t):
        for b in range(n_b):
            for f in range(n_f // 2):
                g = n_f - 1 - f
                for p in range(n_p):
                    array[t, b, f, p], array[t, b, g, p] = array[t, b, g, p], array[t, b, f, p]
