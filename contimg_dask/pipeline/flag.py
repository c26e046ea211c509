"""Stage: flag a block store in place, one subband chunk per Dask task, with flag versions.

Flag versions work like CASA's flagmanager. Each version is a FLAG variable of the
visibility dataset: ``FLAG`` holds the flags as ingested (version ``ingest``); a flagging
run writes ``FLAG_<name>`` completely, then switches every data group's ``flag`` entry to it
(one attribute update: readers never see half-written flags). ``restore`` switches back to any
saved version. Flagged fractions per block, subband, antenna and channel are stored with each
version in the ``contimg`` attribute.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from contimg_dask.config.schema import FlaggingConfig
from contimg_dask.errors import InputError
from contimg_dask.io.block_store import block_node, now_iso, open_block, quiet_zarr_strings
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.flagging import FlagParameters, flag_subband

log = get_logger(__name__)
INGEST_VERSION = "ingest"


def flag_parameters(config: FlaggingConfig) -> FlagParameters:
    """The kernel's parameters from the ``flagging`` configuration section."""
    values = config.model_dump()
    values["sumthreshold_windows"] = tuple(values["sumthreshold_windows"])
    values["background_window"] = tuple(values["background_window"])
    return FlagParameters(**values)


def _open(store: Path) -> tuple[str, xr.DataTree, dict]:
    """The MSv4 node's name, the node (lazy) and its attributes as stored."""
    tree = open_block(store)
    name = next(iter(tree.children))
    attrs = dict(zarr.open_group(store / name, mode="r").attrs)
    return name, block_node(tree), attrs


def _versions(attrs: dict) -> dict[str, dict]:
    versions = attrs["contimg"].get("flag_versions")
    if versions:
        return dict(versions)
    return {INGEST_VERSION: {"variable": "FLAG", "created": attrs["contimg"]["ingested_at"],
                             "description": "flags as ingested"}}


def _active(attrs: dict) -> str:
    variable = attrs["data_groups"]["base"]["flag"]
    return next(n for n, v in _versions(attrs).items() if v["variable"] == variable)


def list_flag_versions(store: str | Path) -> dict[str, Any]:
    """Saved versions (name -> variable, creation time, fractions) and the active one."""
    _, _, attrs = _open(Path(store))
    return {"active": _active(attrs), "versions": _versions(attrs)}


def _switch(store: Path, name: str, attrs: dict, versions: dict[str, dict],
            version: str) -> None:
    variable = versions[version]["variable"]
    groups = {g: {**entry, "flag": variable} for g, entry in attrs["data_groups"].items()}
    contimg = {**attrs["contimg"], "flag_versions": versions}
    zarr.open_group(store / name, mode="r+").attrs.update(
        {**attrs, "data_groups": groups, "contimg": contimg})
    zarr.consolidate_metadata(store)


def restore_flags(store: str | Path, version: str) -> None:
    """Make ``version`` the active flags of every data group."""
    store = Path(store)
    name, _, attrs = _open(store)
    versions = _versions(attrs)
    if version not in versions:
        raise InputError(f"no flag version '{version}' (saved: {', '.join(versions)})",
                         file=store, stage="flag")
    _switch(store, name, attrs, versions, version)
    log.info("restored flag version %s", version)


def flag_fractions(flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                   antenna_names: list[str], chunk_sizes: list[int],
                   subbands: list[int]) -> dict[str, Any]:
    """Flagged fractions of the cross-correlations: block, per subband, antenna, channel."""
    cross = ant1 != ant2
    f = flags[:, cross]
    per_channel = f.mean(axis=(0, 1, 3))
    edges = np.concatenate([[0], np.cumsum(chunk_sizes)])
    per_subband = {f"{sb:02d}": float(per_channel[a:b].mean())
                   for sb, a, b in zip(subbands, edges[:-1], edges[1:], strict=True)}
    per_antenna = {}
    for i, antenna in enumerate(antenna_names):
        rows = ((ant1 == i) | (ant2 == i))[cross]
        if rows.any():
            per_antenna[antenna] = float(f[:, rows].mean())
    return {"block": float(f.mean()), "per_subband": per_subband,
            "per_antenna": per_antenna, "per_channel": [float(x) for x in per_channel]}


def flag_block(store: str | Path, config: FlaggingConfig, version: str = "rfi"
               ) -> dict[str, Any]:
    """Flag the block store as configured, save the result as ``version`` and make it active.

    The flagging starts from the ``ingest`` flags, so a rerun is idempotent. Returns the
    flagged fractions.

    Raises
    ------
    InputError
        The store is missing or not a block store, or ``version`` is the reserved ``ingest``.
    """
    t0 = time.perf_counter()
    store = Path(store)
    if version == INGEST_VERSION:
        raise InputError(f"'{INGEST_VERSION}' is the version of the ingested flags; choose "
                         "another name", stage="flag")
    name, node, attrs = _open(store)
    ds = node.to_dataset(inherit=False)
    prov = attrs["contimg"]
    with log_context(block=prov["block_id"], stage="flag"):
        params = flag_parameters(config)
        antennas = node["antenna_xds"].to_dataset(inherit=False).antenna_name.values.tolist()
        index = {a: i for i, a in enumerate(antennas)}
        ant1 = np.array([index[a] for a in ds.baseline_antenna1_name.values.tolist()])
        ant2 = np.array([index[a] for a in ds.baseline_antenna2_name.values.tolist()])
        sizes = list(prov["subband_chunks"])
        n_t, n_bl, _, n_p = ds.VISIBILITY.shape
        chunks = (n_t, n_bl, tuple(sizes), n_p)  # one task per subband, all integrations
        vis = ds.VISIBILITY.data.rechunk(chunks)
        ingest_flags = ds.FLAG.data.rechunk(chunks)
        new = da.map_blocks(flag_subband, vis, ingest_flags, ant1=ant1, ant2=ant2,
                            params=params, dtype=bool)
        variable = f"FLAG_{version}"
        fast = zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
        zarr_chunks = zarr.open_array(store / name / "FLAG", mode="r").chunks
        exists = (store / name / variable).is_dir()
        encoding = {} if exists else {variable: {"compressors": [fast], "chunks": zarr_chunks}}
        with warnings.catch_warnings():
            quiet_zarr_strings()
            # xarray's append mode resets the group's attributes: _switch restores them.
            xr.Dataset({variable: (ds.FLAG.dims, new)}).to_zarr(
                store, group=name, mode="a", zarr_format=3, consolidated=False,
                write_empty_chunks=True, encoding=encoding)
        flags = zarr.open_array(store / name / variable, mode="r")[...]
        fractions = flag_fractions(flags, ant1, ant2, antennas, sizes, prov["subbands"])
        if fractions["block"] == 1.0:
            log.warning("every cross-correlation of the block is flagged (no usable data)")
        versions = _versions(attrs)
        versions[version] = {"variable": variable, "created": now_iso(),
                             "description": "contimg flag", "parameters": asdict(params),
                             "fractions": fractions}
        _switch(store, name, attrs, versions, version)
        log.info("flagged %.2f %% of cross-correlations (version %s) in %.1f s",
                 100 * fractions["block"], version, time.perf_counter() - t0)
    return fractions
