"""Read-modify-write of a block store's attributes under a lock, so that stages running
concurrently on one block (flag versions, calibration apply, rephase) never lose each
other's records.

The lock is a file beside the store (``BLOCK.zarr.lock``, an OS file lock through
``filelock``: released by the kernel when its holder dies, so it never goes stale), held
only around the update: read the group's attributes as stored, change them, write them,
consolidate the store's metadata. Changes of the store's structure (arrays or groups
created, replaced or removed) are made under the same lock, so that a consolidation never
records a half-made node; bulk data are written outside it.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zarr
from filelock import FileLock

from contimg_dask.io.store.block_store import quiet_zarr_strings
from contimg_dask.io.system.atomic import install, temporary_name

Attributes = dict[str, Any]


_LOCKS: dict[Path, FileLock] = {}


def store_lock(store: str | Path) -> FileLock:
    """The lock of the block store ``store``: a file ``<store>.lock`` beside it. One lock
    object per store in a process, so that it can be taken again by a holder (reentrant)."""
    store = Path(store).absolute()
    path = store.with_name(store.name + ".lock")
    if path not in _LOCKS:
        _LOCKS[path] = FileLock(path)
    return _LOCKS[path]


def read_group_attrs(store: str | Path, group: str) -> Attributes:
    """The attributes of ``group`` of ``store`` as stored (not the consolidated copy)."""
    return dict(zarr.open_group(Path(store) / group, mode="r").attrs)


def replace_node(store: str | Path, node: str, write: Callable[[Path], None]) -> None:
    """Replace the node ``node`` (a group path inside the store) so that readers find the
    old node or the new one, never a half-written one: ``write(tmp)`` writes it as a zarr
    group at a temporary name beside the store (outside it: no consolidation sees it), then,
    under the store's lock, it is exchanged with the old node and the store's metadata is
    consolidated."""
    store = Path(store).absolute()
    tmp = temporary_name(store)
    try:
        write(tmp)
        with store_lock(store):
            install(tmp, store / node)
            consolidate(store)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def consolidate(store: str | Path) -> None:
    """Under the store's lock, record the store's structure in its consolidated metadata
    (after arrays were removed, so that readers no longer find them listed)."""
    with store_lock(store), warnings.catch_warnings():
        quiet_zarr_strings()
        zarr.consolidate_metadata(Path(store))


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
