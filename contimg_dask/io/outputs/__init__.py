"""Products written from the block store: the Measurement Set writer (with its table-writing
child process) and the UVFITS/MIRIAD/UVH5 exports."""
