"""The whole flagging kernel on one in-memory subband chunk (steps 1-8 in one call), as tests
and benchmarks drive it; the pipeline runs the two halves as separate steps
(``contimg_dask.processing.flag``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from contimg_dask.ops.flagging import FlagParameters, detect_rfi, screen_subband


def flag_subband_inplace(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                         ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                         params: FlagParameters) -> None:
    """Add the new flags of one subband chunk to ``flags``. See the module docstring."""
    screened = screen_subband(vis, flags, ant1, ant2, params)
    if screened is not None:
        detect_rfi(screened[1], flags, screened[0], params)


def flag_subband(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                 ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                 params: FlagParameters) -> NDArray[np.bool_]:
    """New flags for one subband chunk (existing flags kept; ``flags`` is not modified)."""
    out = flags.copy()
    flag_subband_inplace(vis, out, ant1, ant2, params)
    return out
