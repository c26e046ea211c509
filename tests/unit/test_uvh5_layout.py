"""The baseline-time layout of UVH5 rows: the O(rows) check for the correlator's regular
layout and the general (sorting) path agree; irregular layouts are indexed row by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contimg_dask.errors import InputError
from contimg_dask.io.uvh5.reader import _blt_layout

N_T, ANT1, ANT2 = 4, np.array([0, 0, 1, 2, 1]), np.array([0, 1, 1, 3, 3])


def _regular() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.repeat(2461120.5 + np.arange(N_T) * 1e-4, len(ANT1))
    return times, np.tile(ANT1, N_T), np.tile(ANT2, N_T)


def test_regular_layout() -> None:
    times, a1, a2 = _regular()
    t, ant1, ant2, t_index, b_index = _blt_layout(times, a1, a2, Path("x.hdf5"))
    np.testing.assert_array_equal(t, np.unique(times))
    np.testing.assert_array_equal(ant1, ANT1)
    np.testing.assert_array_equal(ant2, ANT2)
    assert t_index is None and b_index is None


def test_shuffled_rows_are_indexed_and_land_where_the_regular_ones_do() -> None:
    times, a1, a2 = _regular()
    order = np.random.default_rng(3).permutation(len(times))
    t, ant1, ant2, t_index, b_index = _blt_layout(times[order], a1[order], a2[order],
                                                  Path("x.hdf5"))
    np.testing.assert_array_equal(t, np.unique(times))
    assert t_index is not None and b_index is not None
    # Every row's (time, baseline) index points back to its own time and antenna pair.
    np.testing.assert_array_equal(t[t_index], times[order])
    np.testing.assert_array_equal(ant1[b_index], a1[order])
    np.testing.assert_array_equal(ant2[b_index], a2[order])


def test_a_baseline_twice_in_one_integration_is_refused() -> None:
    times, a1, a2 = _regular()
    a2 = a2.copy()
    a2[1] = ANT2[0]  # row 1 repeats row 0's baseline in the first integration
    a1 = a1.copy()
    a1[1] = ANT1[0]
    with pytest.raises(InputError, match="appears twice"):
        _blt_layout(times, a1, a2, Path("x.hdf5"))
