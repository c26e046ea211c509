"""Regridding an input image onto an output tile by interpolation, with the pixel-to-pixel
coordinate map evaluated exactly only on a coarse grid of nodes.

The map from output to input pixels (two celestial projections a few degrees across) is
smooth: evaluated every ``step`` output pixels and interpolated with a bicubic spline it is
within 1e-4 px of the exact transform (measured, tests/unit/test_mosaic_ops.py), while the
exact transform of every pixel (astropy WCS, what ``reproject_interp`` does) dominates the
cost of a mosaic. The values are interpolated with ``scipy.ndimage.map_coordinates`` at the
same spline orders as reproject's ``order`` names. Pixels are 0-based (x, y) = (column, row).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import RectBivariateSpline
from scipy.ndimage import map_coordinates

#: reproject's interpolation names -> spline order.
ORDERS = {"nearest-neighbor": 0, "bilinear": 1, "biquadratic": 2, "bicubic": 3}

PixelTransform = Callable[[NDArray, NDArray], tuple[NDArray, NDArray]]


def pixel_map(transform: PixelTransform, shape: tuple[int, int], step: int
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Input pixel coordinates (x, y) of every pixel of an output tile of ``shape`` (rows,
    columns): ``transform(x_out, y_out) -> (x_in, y_in)`` evaluated every ``step`` pixels
    (and on the last row and column), bicubic spline in between. None when the transform
    is not finite at every node (the caller must use the exact transform)."""
    ny, nx = shape
    yc = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    xc = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    gx, gy = np.meshgrid(xc, yc)
    x_in, y_in = (np.asarray(v, float) for v in transform(gx, gy))
    if not (np.all(np.isfinite(x_in)) and np.all(np.isfinite(y_in))):
        return None
    # Spline degrees along rows (first axis) and columns: at most one less than the nodes.
    degree_rows, degree_cols = min(3, len(yc) - 1), min(3, len(xc) - 1)
    rows, cols = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    if degree_rows == 0 or degree_cols == 0:  # one row or column of nodes: exact transform
        full_x, full_y = np.meshgrid(cols, rows)
        x_full, y_full = transform(full_x, full_y)
        return np.asarray(x_full, float), np.asarray(y_full, float)
    return tuple(RectBivariateSpline(yc, xc, values, kx=degree_rows, ky=degree_cols)(rows, cols)
                 for values in (x_in, y_in))


def sample(plane: NDArray, x_in: NDArray, y_in: NDArray, order: int) -> NDArray[np.float64]:
    """``plane`` interpolated at (``x_in``, ``y_in``) with a spline of ``order``; NaN outside
    the plane (beyond the outer pixels' centres by more than half a pixel) and wherever a NaN
    pixel of ``plane`` takes part."""
    plane = np.asarray(plane, np.float64)
    blank = ~np.isfinite(plane)
    filled = np.where(blank, 0.0, plane) if blank.any() else plane
    coords = np.stack([y_in, x_in])
    out = map_coordinates(filled, coords, order=order, mode="nearest")
    ny, nx = plane.shape
    out[(x_in < -0.5) | (x_in > nx - 0.5) | (y_in < -0.5) | (y_in > ny - 0.5)] = np.nan
    if blank.any():
        out[map_coordinates(blank.astype(np.float64), coords, order=1, mode="nearest") > 0] = (
            np.nan)
    return out
