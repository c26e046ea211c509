"""System utilities for I/O: reused scratch memory, page-cache read-ahead, atomic renames
into place."""
