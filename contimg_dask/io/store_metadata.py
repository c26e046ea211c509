"""Read-modify-write of a block store's attributes under a lock, so that stages running
concurrently on one block (flag versions, calibration apply, rephase) never lose each
other's records.

The lock is a file beside the store (``BLOCK.zarr.lock``, an OS file lock through
``filelock``: released by the kernel when its holder dies, so it never goes stale), held
only around the update: read the group's attributes as stored, change them, write them,
consolidate the store's metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zarr
from filelock import FileLock

from contimg_dask.io.block_store import quiet_zarr_strings

Attributes = dict[str, Any]


def store_lock(store: str | Path) -> FileLock:
    """The lock of the block store ``store``: a file ``<store>.lock`` beside it."""
    store = Path(store)
    return FileLock(store.with_name(store.name + ".lock"))


def read_group_attrs(store: str | Path, group: str) -> Attributes:
    """The attributes of ``group`` of ``store`` as stored (not the consolidated copy)."""
    return dict(zarr.open_group(Path(store) / group, mode="r").attrs)


def update_group_attrs(store: str | Path, group: str, change: Callable[[Attributes], Attributes],
                       write: Callable[[], None] | None = None) -> Attributes:
    """Under the store's lock: read ``group``'s attributes, run ``write`` (data writes that
    must not interleave with other updates, e.g. an xarray append that resets the group's
    attributes), store ``change(attributes)`` and consolidate the store's metadata.
    Returns the new attributes. ``change`` may raise to abandon the update (nothing
    written)."""
    store = Path(store)
    with store_lock(store):
        attrs = read_group_attrs(store, group)
        new = change(dict(attrs))
        if write is not None:
            write()
        with warnings.catch_warnings():
            quiet_zarr_strings()
            zarr.open_group(store / group, mode="r+").attrs.put(new)
            zarr.consolidate_metadata(store)
    return new
