"""The calibration solutions store: one zarr v3 group per solve (``SOLUTIONS.zarr``).

Variables (g = GAIN(t) · BANDPASS(ν) is the complex voltage gain of an antenna, in the block
store's convention V_ab = conj(g_a) g_b M_ab; phases referenced to ``refant``):

    BANDPASS[_FLAG, _SNR]      (antenna_name, frequency, polarization)
    GAIN[_FLAG, _SNR]          (gain_time, antenna_name, polarization)  short interval
    GAIN_BLOCK[_FLAG, _SNR]    (antenna_name, polarization)             the whole block
    BANDPASS_CHI2              (frequency, polarization)   reduced χ² per visibility
    GAIN_CHI2                  (gain_time, polarization)

Coordinates: frequency (Hz, ascending, TOPO), gain_time (Unix s UTC, interval centres) with
gain_time_start/gain_time_end. Provenance (calibrator, block, times, pointing, reference
antenna, quality, configuration hash, version) is in the ``contimg`` attribute.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import xarray as xr

from contimg_dask.errors import InputError
from contimg_dask.io.store.block_store import quiet_zarr_strings
from contimg_dask.io.store.model import SOLUTIONS, check_solutions
from contimg_dask.io.system.atomic import atomic_directory

SOLUTIONS_TYPE = SOLUTIONS.type


def write_solutions(solutions: xr.Dataset, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``solutions`` atomically (temporary name, then rename; an existing solutions
    store is replaced only once the new one is complete, anything else only with
    ``overwrite``), checked against the data model
    (:data:`contimg_dask.io.store.model.SOLUTIONS`) first."""
    path = Path(path)
    check_solutions(solutions, path)
    with atomic_directory(path, "solutions", overwrite) as tmp, warnings.catch_warnings():
        quiet_zarr_strings()
        solutions.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
    return path


def read_solutions(path: str | Path) -> xr.Dataset:
    """Read a solutions store into memory.

    Raises
    ------
    InputError
        Missing or unreadable; :class:`~contimg_dask.io.store.model.StoreModelError` (an
        InputError) not a solutions store, naming the fields at fault.
    """
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError("no calibration solutions store here (no zarr.json)", file=path)
    with warnings.catch_warnings():
        quiet_zarr_strings()
        try:
            ds = xr.open_zarr(path, zarr_format=3, consolidated=True).load()
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot read calibration solutions: {exc}", file=path) from exc
    return check_solutions(ds, path)
