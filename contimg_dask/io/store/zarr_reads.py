"""The one zarr reader of block-store arrays: all times and baselines of a channel slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from zarr.core.buffer.cpu import NDBuffer


def read_channels(array: zarr.Array | Path, channels: slice,
                  out: np.ndarray | None = None) -> np.ndarray:
    """``array[:, :, channels, :]`` of a (time, baseline, frequency, polarization) array (or
    the array at that path), decoded straight into ``out`` if given (C-contiguous, of the
    selection's shape and the array's dtype: a reused buffer costs a tenth of a new one,
    io/system/scratch.py), else into a new array. No Dask graph: for streaming writers and tasks
    that own a subband."""
    if not isinstance(array, zarr.Array):
        array = zarr.open_array(array, mode="r")
    n_t, n_bl, _, n_p = array.shape
    if out is None:
        out = np.empty((n_t, n_bl, channels.stop - channels.start, n_p), array.dtype)
    array.get_basic_selection((slice(None), slice(None), channels, slice(None)),
                              out=NDBuffer.from_numpy_array(out))
    return out
