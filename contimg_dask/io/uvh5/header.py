"""What a UVH5 file's name and header say about it, parsed and checked in one place.

Discovery (:mod:`contimg_dask.io.uvh5.discovery`, cheap, every file of the incoming
directory) and the reader (:mod:`contimg_dask.io.uvh5.reader`, everything but the
visibilities, for ingest) both start here: the subband identity and timestamp in a DSA-110
file name, and the header's axes (rows, times, frequencies, polarizations), checked against
each other and against the shape of ``Data/visdata``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from contimg_dask.errors import ForeignFileError, InputError

#: A DSA-110 subband file: ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` (the first file's UTC timestamp
#: and the subband number, 00 = highest frequencies).
SUBBAND_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(\d{2})\.hdf5$")
#: The subband number alone, in any file name ending ``_sbNN.hdf5``.
SUBBAND_SUFFIX = re.compile(r"_sb(\d{2})\.hdf5$")
#: Header entries every UVH5 file has (pyuvdata's required header).
REQUIRED_HEADER = ("Nblts", "Nfreqs", "Npols", "Ntimes", "time_array", "freq_array",
                   "ant_1_array", "ant_2_array", "polarization_array")


@dataclass(frozen=True, order=True)
class SubbandName:
    """The identity a DSA-110 subband file's name gives it."""

    timestamp: str  # UTC, YYYY-MM-DDTHH:MM:SS
    subband: int


def parse_subband_name(path: Path) -> SubbandName | None:
    """The timestamp and subband of a file named ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5``, else
    None."""
    match = SUBBAND_NAME.match(path.name)
    return None if match is None else SubbandName(match.group(1), int(match.group(2)))


def subband_number(path: Path) -> int | None:
    """The subband number of a file whose name ends ``_sbNN.hdf5``, else None."""
    match = SUBBAND_SUFFIX.search(path.name)
    return None if match is None else int(match.group(1))


@dataclass(frozen=True)
class HeaderAxes:
    """The axes of a UVH5 file as its header declares them (checked).

    ``time_jd`` is each row's time (JD, UTC, file order: one per baseline-time row),
    ``freq_hz`` each channel's frequency (Hz, file order, topocentric). ``n_times`` is the
    header's ``Ntimes``; ``legacy_spw_axis`` says whether the data carry the length-1
    spectral-window axis of pyuvdata's older layout.
    """

    time_jd: NDArray[np.float64]
    freq_hz: NDArray[np.float64]
    n_times: int
    n_pols: int
    legacy_spw_axis: bool
    vis_dtype: str

    @property
    def n_blts(self) -> int:
        """Baseline-time rows (``Nblts``)."""
        return len(self.time_jd)

    @property
    def n_freqs(self) -> int:
        """Channels (``Nfreqs``)."""
        return len(self.freq_hz)


def _integer(hdr: h5py.Group, key: str) -> int:
    return int(np.asarray(hdr[key][()]).item())


def read_header_axes(f: h5py.File, path: Path) -> HeaderAxes:
    """Read and check the axes of the open UVH5 file ``f`` (at ``path``).

    Raises
    ------
    ForeignFileError
        Not a UVH5 file: no ``Header``/``Data`` groups, no ``Data/visdata``, or a required
        header entry missing.
    InputError
        The header's axes disagree with each other or with the data's shape, or its times or
        frequencies are not finite.

    h5py's own errors (a truncated or unreadable file) propagate: the caller names them.
    """
    if "Header" not in f or "Data" not in f:
        raise ForeignFileError("not a UVH5 file: no Header/Data groups", file=path)
    hdr, data = f["Header"], f["Data"]
    missing = [k for k in REQUIRED_HEADER if k not in hdr]
    if missing:
        raise ForeignFileError(f"UVH5 header lacks {missing}", file=path)
    if "visdata" not in data:
        raise ForeignFileError("UVH5 file has no Data/visdata", file=path)
    n_blts, n_freqs, n_pols, n_times = (_integer(hdr, k)
                                        for k in ("Nblts", "Nfreqs", "Npols", "Ntimes"))
    vis = data["visdata"]
    legacy = vis.ndim == 4
    expected = (n_blts, 1, n_freqs, n_pols) if legacy else (n_blts, n_freqs, n_pols)
    if vis.shape != expected:
        raise InputError(f"Data/visdata has shape {vis.shape}, header says "
                         f"(Nblts={n_blts}, {'1, ' if legacy else ''}Nfreqs={n_freqs}, "
                         f"Npols={n_pols})", file=path)
    for name in ("flags", "nsamples"):
        if name in data and data[name].shape != vis.shape:
            raise InputError(f"Data/{name} has shape {data[name].shape}, visdata "
                             f"{vis.shape}", file=path)
    for name in ("time_array", "ant_1_array", "ant_2_array"):
        if hdr[name].shape != (n_blts,):
            raise InputError(f"{name} has shape {hdr[name].shape}, expected ({n_blts},)",
                             file=path)
    time_jd = np.asarray(hdr["time_array"][()], dtype=np.float64)
    freq_hz = np.asarray(hdr["freq_array"][()], dtype=np.float64).ravel()
    if freq_hz.size != n_freqs:
        raise InputError(f"freq_array has {freq_hz.size} channels, header says "
                         f"Nfreqs={n_freqs}", file=path)
    if not np.all(np.isfinite(time_jd)) or not np.all(np.isfinite(freq_hz)):
        raise InputError("non-finite times or frequencies in the header", file=path)
    return HeaderAxes(time_jd=time_jd, freq_hz=freq_hz, n_times=n_times, n_pols=n_pols,
                      legacy_spw_axis=legacy, vis_dtype=str(vis.dtype))
