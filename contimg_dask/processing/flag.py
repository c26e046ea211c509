"""Stage: flag a block store in place, one subband chunk per Dask task, with flag versions.

Flag versions work like CASA's flagmanager. Each version is a FLAG variable of the
visibility dataset: ``FLAG`` holds the flags as ingested (version ``ingest``); a flagging
run writes ``FLAG_<name>`` completely, then switches every data group's ``flag`` entry to it
(one attribute update: readers never see half-written flags). ``restore`` switches back to any
saved version. Flagged fractions per block, subband, antenna and channel are stored with each
version in the ``contimg`` attribute.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import zarr

from contimg_dask.config.schema import FlaggingConfig
from contimg_dask.errors import InputError
from contimg_dask.io.store.block_store import (
    nearly_constant_codec,
    now_iso,
    quiet_zarr_strings,
)
from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.io.store.data_groups import derived_groups
from contimg_dask.io.store.metadata import store_lock, update_group_attrs
from contimg_dask.io.store.model import FLAG_VERSION
from contimg_dask.io.store.zarr_reads import read_channels
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.flagging import (
    FlagParameters,
    detect_rfi,
    flagged_per_baseline,
    flagged_per_channel,
    screen_subband,
)

log = get_logger(__name__)
INGEST_VERSION = "ingest"
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_version_name(version: str, store: Path | None = None) -> None:
    """Raise InputError unless ``version`` can name a flag version (it names a zarr array:
    letters, digits, ``_ . -``, no path separators) other than the reserved ``ingest``."""
    if not VERSION_NAME.fullmatch(version):
        raise InputError(f"flag version name {version!r} is not allowed: use 1 to 64 letters, "
                         "digits, '_', '.' or '-', starting with a letter or digit",
                         file=store, stage="flag")
    if version == INGEST_VERSION:
        raise InputError(f"'{INGEST_VERSION}' is the version of the ingested flags; choose "
                         "another name", file=store, stage="flag")


def flag_parameters(config: FlaggingConfig) -> FlagParameters:
    """The kernel's parameters from the ``flagging`` configuration section."""
    values = config.model_dump()
    values["sumthreshold_windows"] = tuple(values["sumthreshold_windows"])
    values["background_window"] = tuple(values["background_window"])
    return FlagParameters(**values)


def _versions(attrs: dict, store: Path | None = None) -> dict[str, dict]:
    """The saved flag versions, each checked against the data model (FLAG_VERSION)."""
    versions = attrs["contimg"].get("flag_versions")
    if versions:
        return {name: FLAG_VERSION.check(record, store, f"'{name}'")
                for name, record in versions.items()}
    return {INGEST_VERSION: FLAG_VERSION.build(
        store, variable="FLAG", created=attrs["contimg"]["ingested_at"],
        description="flags as ingested")}


def _active(attrs: dict, store: Path | None = None) -> str:
    variable = attrs["data_groups"]["base"]["flag"]
    return next(n for n, v in _versions(attrs, store).items()
                if v["variable"] == variable)


def list_flag_versions(store: str | Path) -> dict[str, Any]:
    """Saved versions (name -> variable, creation time, fractions) and the active one."""
    view = open_block_view(store, stage="flag")
    return {"active": _active(view.attrs, view.store),
            "versions": _versions(view.attrs, view.store)}


def _switched(attrs: dict, versions: dict[str, dict], version: str) -> dict:
    """``attrs`` with ``versions`` saved and ``version`` the active flags of every data
    group."""
    variable = versions[version]["variable"]
    groups = {g: {**entry, "flag": variable} for g, entry in attrs["data_groups"].items()}
    derived = {g: {**entry, "flag": variable} for g, entry in derived_groups(attrs).items()}
    contimg = {**attrs["contimg"], "flag_versions": versions, "derived_groups": derived}
    return {**attrs, "data_groups": groups, "contimg": contimg}


def _dropped(attrs: dict, version: str, store: Path) -> dict:
    """``attrs`` without the saved ``version`` (the ingest flags active if it was)."""
    versions = _versions(attrs, store)
    if version not in versions:
        return attrs
    active = _active(attrs, store)
    del versions[version]
    return _switched(attrs, versions, INGEST_VERSION if active == version else active)


def _added(attrs: dict, version: str, record: dict, store: Path) -> dict:
    """``attrs`` with ``version`` saved (``record``) and active."""
    return _switched(attrs, {**_versions(attrs, store), version: record}, version)


def restore_flags(store: str | Path, version: str) -> None:
    """Make ``version`` the active flags of every data group."""
    view = open_block_view(store, stage="flag")

    def restored(attrs: dict) -> dict:
        versions = _versions(attrs, view.store)
        if version not in versions:
            raise InputError(f"no flag version '{version}' (saved: {', '.join(versions)})",
                             file=view.store, stage="flag")
        return _switched(attrs, versions, version)

    update_group_attrs(view.store, view.name, restored)
    log.info("restored flag version %s", version)


@dataclass(frozen=True)
class ChunkCounts:
    """Flagged samples of one subband chunk: per baseline (over time, channel, pol) and per
    channel (over time, cross-correlation, pol)."""

    per_baseline: np.ndarray
    per_channel: np.ndarray


def flag_fractions(counts: list[ChunkCounts], ant1: np.ndarray, ant2: np.ndarray,
                   antenna_names: list[str], subbands: list[int], n_time: int, n_pol: int
                   ) -> dict[str, Any]:
    """Flagged fractions of the cross-correlations: block, per subband, antenna, channel,
    from the chunks' counts (chunks in channel order)."""
    cross = ant1 != ant2
    per_channel = np.concatenate([c.per_channel for c in counts]) / (
        n_time * cross.sum() * n_pol)
    per_baseline = np.sum([c.per_baseline for c in counts], axis=0)
    samples_per_baseline = n_time * per_channel.size * n_pol
    per_subband = {f"{sb:02d}": float(c.per_channel.sum() / (n_time * cross.sum() * n_pol
                                                             * c.per_channel.size))
                   for sb, c in zip(subbands, counts, strict=True)}
    per_antenna = {}
    for i, antenna in enumerate(antenna_names):
        rows = cross & ((ant1 == i) | (ant2 == i))
        if rows.any():
            per_antenna[antenna] = float(per_baseline[rows].sum()
                                         / (rows.sum() * samples_per_baseline))
    block = per_baseline[cross].sum() / (cross.sum() * samples_per_baseline)
    return {"block": float(block), "per_subband": per_subband, "per_antenna": per_antenna,
            "per_channel": [float(x) for x in per_channel]}


def flag_chunk(group: Path, data: str, ingest: str, variable: str, channels: slice,
               ant1: np.ndarray, ant2: np.ndarray, params: FlagParameters) -> ChunkCounts:
    """One Dask task: read a subband chunk's visibilities and ingest flags, flag it, write the
    new flags to ``variable`` and return its flagged counts. The visibilities are released
    once screened: RFI detection holds their amplitudes only (half the size)."""
    vis = read_channels(group / data, channels)
    flags = read_channels(group / ingest, channels)
    screened = screen_subband(vis, flags, ant1, ant2, params)
    del vis
    if screened is not None:
        cross, amplitudes = screened
        detect_rfi(amplitudes, flags, cross, params)
    zarr.open_array(group / variable, mode="r+")[:, :, channels, :] = flags
    return ChunkCounts(flagged_per_baseline(flags), flagged_per_channel(flags, ant1 != ant2))


def _create_flags(group: Path, variable: str, like: str, sizes: list[int]) -> None:
    """An empty flag array shaped and encoded as ``like``, chunked so that no zarr chunk
    straddles two subbands (each task writes whole chunks)."""
    template = zarr.open_array(group / like, mode="r")
    chunks = list(template.chunks)
    chunks[2] = math.gcd(chunks[2], *sizes)
    fast = nearly_constant_codec()
    with warnings.catch_warnings():
        quiet_zarr_strings()
        zarr.open_group(group, mode="r+").create_array(
            variable, shape=template.shape, chunks=tuple(chunks), dtype=bool,
            fill_value=False, compressors=[fast], attributes=dict(template.attrs),
            dimension_names=template.metadata.dimension_names, overwrite=True)


def flag_block(store: str | Path, config: FlaggingConfig, version: str = "rfi"
               ) -> dict[str, Any]:
    """Flag the block store as configured, save the result as ``version`` and make it active.

    The flagging starts from the ``ingest`` flags, so a rerun is idempotent; a rerun of a
    saved version first drops it from the saved versions (the ingest flags become active if
    it was), so that its flags are never visible half-written. One Dask task per subband
    chunk reads, flags and writes it and returns its counts. Returns the flagged fractions.

    Raises
    ------
    InputError
        The store is missing or not a block store, or ``version`` is the reserved ``ingest``.
    """
    t0 = time.perf_counter()
    store = Path(store)
    check_version_name(version, store)
    view = open_block_view(store, stage="flag")
    name, node, attrs, ds = view.name, view.node, view.attrs, view.dataset
    prov = view.provenance
    with log_context(block=prov["block_id"], stage="flag"):
        params = flag_parameters(config)
        antennas = node["antenna_xds"].to_dataset(inherit=False).antenna_name.values.tolist()
        index = {a: i for i, a in enumerate(antennas)}
        ant1 = np.array([index[a] for a in ds.baseline_antenna1_name.values.tolist()])
        ant2 = np.array([index[a] for a in ds.baseline_antenna2_name.values.tolist()])
        attrs = update_group_attrs(store, name, lambda a: _dropped(a, version, store))
        versions = _versions(attrs, store)
        group, variable = store / name, f"FLAG_{version}"
        sizes = list(prov["subband_chunks"])
        with store_lock(store):
            _create_flags(group, variable, versions[INGEST_VERSION]["variable"], sizes)
        edges = np.concatenate([[0], np.cumsum(sizes)])
        tasks = [dask.delayed(flag_chunk)(
            group, attrs["data_groups"]["base"]["correlated_data"],
            versions[INGEST_VERSION]["variable"], variable, slice(int(a), int(b)), ant1,
            ant2, params, dask_key_name=f"flag-{prov['block_id']}-{int(a)}")
            for a, b in itertools.pairwise(edges)]
        counts = list(dask.compute(*tasks))
        n_t, _, _, n_p = ds.VISIBILITY.shape
        fractions = flag_fractions(counts, ant1, ant2, antennas, prov["subbands"], n_t, n_p)
        if fractions["block"] == 1.0:
            log.warning("every cross-correlation of the block is flagged (no usable data)")
        record = FLAG_VERSION.build(
            store, variable=variable, created=now_iso(), description="contimg flag",
            parameters=asdict(params), fractions=fractions)
        update_group_attrs(store, name, lambda a: _added(a, version, record, store))
        log.info("flagged %.2f %% of cross-correlations (version %s) in %.1f s",
                 100 * fractions["block"], version, time.perf_counter() - t0)
    return fractions
