"""Write UVH5 files exactly as the DSA-110 correlator does.

The correlator writes with h5py in the 2018 UVH5 layout: a ``Header`` group of scalars and
arrays, datasets shaped (Nblts, 1, Nfreqs, Npols) with a length-1 spectral-window axis,
``freq_array`` shaped (1, Nfreqs), and rows appended one integration at a time into
resizable datasets chunked by h5py's automatic chunking (``chunks=True`` on an initially empty
dataset). The chunk layout governs read speed, so it is reproduced faithfully here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray


@dataclass
class CorrelatorHeader:
    """Everything the correlator writes into ``Header/`` (arrays in file order)."""

    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    telescope_name: str
    instrument: str
    antenna_names: list[str]
    antenna_positions: NDArray[np.float64]  # (Nants_telescope, 3) ECEF offsets, m
    antenna_diameters: NDArray[np.float64]
    n_ants_data: int
    ant_1_array: NDArray[np.int64]  # per baseline (one integration)
    ant_2_array: NDArray[np.int64]
    uvw_float32: NDArray[np.float32]  # per baseline, repeated for every integration
    time_jd: NDArray[np.float64]  # integration centres
    integration_time_s: float
    freq_hz: NDArray[np.float64]  # file order (descending)
    channel_width_hz: float
    polarizations: NDArray[np.int64]
    phase_center_dec_rad: float
    applied_delays_ns: NDArray[np.float64]  # (Nants_telescope, 2)
    fs_table: str
    history: str
    extra: dict[str, object] = field(default_factory=dict)


def _string(value: str) -> np.bytes_:
    return np.bytes_(value)


def write_correlator_uvh5(path: Path, header: CorrelatorHeader, visdata: NDArray[np.complex64],
                          nsamples: NDArray[np.float32], flags: NDArray[np.bool_] | None = None
                          ) -> None:
    """Write one subband file.

    ``visdata`` and ``nsamples`` are shaped (Nblts, Nfreqs, Npols), rows time-major (all
    baselines of integration 0, then 1, ...). The file is written under a temporary name and
    renamed when complete, as the correlator does.
    """
    n_bls = len(header.ant_1_array)
    n_times = len(header.time_jd)
    n_freqs = len(header.freq_hz)
    n_pols = len(header.polarizations)
    if visdata.shape != (n_bls * n_times, n_freqs, n_pols):
        raise ValueError(f"visdata shape {visdata.shape} does not match header "
                         f"({n_bls * n_times}, {n_freqs}, {n_pols})")
    tmp = path.with_name(path.stem + "_incomplete.hdf5")
    with h5py.File(tmp, "w") as f:
        hdr = f.create_group("Header")
        data = f.create_group("Data")
        hdr["latitude"] = header.latitude_deg
        hdr["longitude"] = header.longitude_deg
        hdr["altitude"] = header.altitude_m
        hdr["telescope_name"] = _string(header.telescope_name)
        hdr["instrument"] = _string(header.instrument)
        hdr["object_name"] = _string("search")
        hdr["history"] = _string(header.history)
        hdr["phase_type"] = _string("drift")
        hdr["Nants_data"] = header.n_ants_data
        hdr["Nants_telescope"] = len(header.antenna_names)
        hdr["antenna_diameters"] = header.antenna_diameters
        hdr.create_dataset("antenna_names", data=np.array(header.antenna_names, dtype="S4"))
        hdr["antenna_numbers"] = np.arange(len(header.antenna_names))
        hdr["Nbls"] = n_bls
        hdr["Nblts"] = 0
        hdr["Nfreqs"] = n_freqs
        hdr["Npols"] = n_pols
        hdr["Ntimes"] = 0
        hdr["Nspws"] = 1
        hdr["freq_array"] = header.freq_hz[np.newaxis, :]
        hdr["channel_width"] = header.channel_width_hz
        hdr["spw_array"] = np.array([1])
        hdr["polarization_array"] = header.polarizations
        hdr["antenna_positions"] = header.antenna_positions
        hdr["phase_center_app_dec"] = header.phase_center_dec_rad
        extra = hdr.create_group("extra_keywords")
        extra["phase_center_dec"] = header.phase_center_dec_rad
        extra["ha_phase_center"] = 0.0
        extra["phase_center_epoch"] = _string("HADEC")
        extra["fs_table"] = _string(header.fs_table)
        extra["applied_delays_ns"] = _string(
            " ".join(f"{d:.0f}" for d in header.applied_delays_ns.ravel()))
        for key, value in header.extra.items():
            extra[key] = _string(value) if isinstance(value, str) else value

        growable = {
            "ant_1_array": (hdr, (0,), np.int64),
            "ant_2_array": (hdr, (0,), np.int64),
            "uvw_array": (hdr, (0, 3), np.float32),
            "time_array": (hdr, (0,), np.float64),
            "integration_time": (hdr, (0,), np.float64),
            "visdata": (data, (0, 1, n_freqs, n_pols), np.complex64),
            "flags": (data, (0, 1, n_freqs, n_pols), np.bool_),
            "nsamples": (data, (0, 1, n_freqs, n_pols), np.float32),
        }
        dsets = {
            name: group.create_dataset(name, shape, maxshape=(None, *shape[1:]), dtype=dtype,
                                       chunks=True)
            for name, (group, shape, dtype) in growable.items()
        }
        if flags is None:
            flags = np.zeros(visdata.shape, dtype=np.bool_)
        # Arrays, never scalars: h5py broadcasts a scalar chunk by chunk (1000x slower).
        for t in range(n_times):
            lo, hi = t * n_bls, (t + 1) * n_bls
            for dset in dsets.values():
                dset.resize(hi, axis=0)
            dsets["ant_1_array"][lo:hi] = header.ant_1_array
            dsets["ant_2_array"][lo:hi] = header.ant_2_array
            dsets["uvw_array"][lo:hi] = header.uvw_float32
            dsets["time_array"][lo:hi] = header.time_jd[t]
            dsets["integration_time"][lo:hi] = header.integration_time_s
            dsets["visdata"][lo:hi] = visdata[lo:hi, np.newaxis]
            dsets["flags"][lo:hi] = flags[lo:hi, np.newaxis]
            dsets["nsamples"][lo:hi] = nsamples[lo:hi, np.newaxis]
            hdr["Ntimes"][()] = t + 1
            hdr["Nblts"][()] = hi
    tmp.rename(path)
