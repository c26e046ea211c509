"""The local background and noise of an image on a coarse mesh (photutils ``Background2D``:
sigma-clipped median and MAD-based rms per box; then a 3x3 median filter of the meshes with
scipy's C filter, which does what ``Background2D(filter_size=3)`` does 30x faster), and the
bilinear interpolation of a mesh at any pixel.

Neighbouring pixels of a radio image are correlated over the synthesised beam, so the
statistics are taken on every ``subsample``-th pixel in each direction (4x fewer pixels for
2, at an rms estimate as good as from all pixels when the beam spans several pixels).
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import median_filter

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


def background_meshes(image: NDArray, box_pixels: int, subsample: int = 2
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Background and rms meshes (Jy/beam) of ``image`` (NaN = blanked) for square boxes of
    ``box_pixels`` full-resolution pixels; mesh cell ``[j, i]`` covers rows ``j*box ..`` and
    columns ``i*box ..``. Raises ValueError when no box has enough unblanked pixels."""
    from astropy.stats import SigmaClip
    from astropy.utils.exceptions import AstropyUserWarning
    from photutils.background import Background2D, MADStdBackgroundRMS, MedianBackground

    step = max(1, int(subsample))
    data = np.asarray(image[::step, ::step], np.float64)
    box = max(4, box_pixels // step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        blanked = ~np.isfinite(data)
        bkg = Background2D(data, (box, box), mask=blanked if blanked.any() else None,
                           filter_size=(1, 1),
                           sigma_clip=SigmaClip(sigma=3.0, maxiters=5),
                           bkg_estimator=MedianBackground(),
                           bkg_rms_estimator=MADStdBackgroundRMS(), exclude_percentile=50.0)
        return (median_filter(np.asarray(bkg.background_mesh, np.float64), 3, mode="nearest"),
                median_filter(np.asarray(bkg.background_rms_mesh, np.float64), 3,
                              mode="nearest"))


@_jit
def mesh_at(mesh: NDArray, box: float, px: float, py: float) -> float:
    """Bilinear interpolation of ``mesh`` (cells of ``box`` pixels, values at cell centres)
    at pixel ``(px, py)``; constant beyond the outermost centres."""
    ny, nx = mesh.shape
    fx = min(max((px + 0.5) / box - 0.5, 0.0), nx - 1.0)
    fy = min(max((py + 0.5) / box - 0.5, 0.0), ny - 1.0)
    ix, iy = min(int(fx), nx - 2) if nx > 1 else 0, min(int(fy), ny - 2) if ny > 1 else 0
    tx, ty = fx - ix, fy - iy
    ix1, iy1 = min(ix + 1, nx - 1), min(iy + 1, ny - 1)
    return ((1 - tx) * (1 - ty) * mesh[iy, ix] + tx * (1 - ty) * mesh[iy, ix1]
            + (1 - tx) * ty * mesh[iy1, ix] + tx * ty * mesh[iy1, ix1])


def mesh_values(mesh: NDArray, box: float, x: NDArray, y: NDArray) -> NDArray[np.float64]:
    """:func:`mesh_at` at many pixels."""
    return _mesh_values(np.ascontiguousarray(mesh, np.float64), float(box),
                        np.ascontiguousarray(x, np.float64), np.ascontiguousarray(y, np.float64))


@_jit
def _mesh_values(mesh: NDArray, box: float, x: NDArray, y: NDArray) -> NDArray:
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = mesh_at(mesh, box, x[i], y[i])
    return out
