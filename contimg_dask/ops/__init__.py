"""Array algorithms (plain NumPy/Numba on in-memory arrays): UVW and phasing, flagging,
calibration. Dask wrappers live beside them and stay thin."""
