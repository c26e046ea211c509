"""Reusable scratch arrays, kept per thread, for the streaming readers and writers.

Touching memory for the first time is expensive on virtual machines that hand freed memory
back to the host (virtio-balloon free page reporting, as on this project's 2-core test
machines): about 2.5 s per GB, against about 0.1 s per GB for memory a process already
uses. Measured on a full-size subband (86 MB): read from zarr into a new array in
0.22 s, into a reused one in 0.02-0.03 s. Long-lived processes (Dask workers, the
Measurement Set writer) therefore read one subband after another into the same arrays.

An array from :func:`scratch` is valid until the same thread asks for the same ``name``
again: use it within one task, never return it from a Dask task or keep it.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import DTypeLike

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """An uninitialised C-contiguous, 8-byte aligned array of ``shape`` and ``dtype``,
    reusing this thread's buffer called ``name`` (grown when too small)."""
    pool: dict[str, np.ndarray] = _local.__dict__.setdefault("pool", {})
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = pool.get(name)
    if buffer is None or buffer.nbytes < n_bytes:
        pool.pop(name, None)  # let the old buffer go before allocating the new one
        buffer = pool[name] = np.empty(-(-max(n_bytes, 1) // 8), np.uint64).view(np.uint8)
    return buffer[:n_bytes].view(dtype).reshape(shape)
