"""Time scales and celestial frames, in one place.

UVH5 counts Julian dates (UTC), the MSv4 store Unix seconds (UTC), the Measurement Set MJD
seconds (UTC): every conversion goes through :mod:`contimg_dask.coords.time`. Apparent
(of-date, topocentric) positions, sidereal time and Earth orientation come from ERFA in
:mod:`contimg_dask.coords.frames`, with Earth orientation from astropy's bundled IERS tables,
never downloaded.
"""
