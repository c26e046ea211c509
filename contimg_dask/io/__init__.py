"""Input/output: UVH5 headers and block discovery; later the block store (zarr, MSv4), the
Measurement Set writer and the UVFITS/MIRIAD/UVH5 exports."""
