"""Linear mosaicking of block images: the output grid (circular statistics, RA-wrap safe),
the PB²/σ² weighted accumulation and the restoring-beam algebra. Plain NumPy on arrays; the
Dask tasks over output tiles and the FITS I/O are in ``contimg_dask/imaging/mosaic_*.py``
(docs/mosaicking.md)."""

from contimg_dask.ops.mosaic.beams import (
    GaussianBeam,
    common_beam,
    contains,
    convolve_to_beam,
)
from contimg_dask.ops.mosaic.grid import MosaicGrid, grid_covering, mean_direction
from contimg_dask.ops.mosaic.weighting import accumulate, finalise

__all__ = ["GaussianBeam", "MosaicGrid", "accumulate", "common_beam", "contains",
           "convolve_to_beam",
           "finalise", "grid_covering", "mean_direction"]
