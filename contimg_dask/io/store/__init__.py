"""The block store's model: the zarr/MSv4 store, its geometry, data groups, the calibration
node and the solutions store."""
