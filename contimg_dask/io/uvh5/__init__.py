"""UVH5 input: the correlator files' reader, the direct HDF5 reader under it, and block
discovery."""
