"""The ``contimg`` command-line interface."""
