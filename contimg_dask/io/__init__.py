"""Input/output, in four rooms: ``uvh5`` (correlator files in, block discovery), ``store``
(the zarr/MSv4 block store's model), ``outputs`` (the Measurement Set writer and exports) and
``system`` (scratch memory, page cache, atomic renames); ``ingest`` fills the store from UVH5."""
