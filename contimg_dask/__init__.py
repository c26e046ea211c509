"""contimg-dask: the DSA-110 continuum imaging pipeline, built on Dask."""

__version__ = "0.1.0"
