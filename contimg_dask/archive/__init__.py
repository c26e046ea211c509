"""The products archive: collections, a searchable metadata index beside the state store,
formats converted on the fly with a cache, reproduction from provenance, monitor-data export
and retention. See docs/archive.md."""
