"""Metadata extraction: a recorded product (the state store's ProductRecord) and what the
state store knows of its block (figures of the flag, solve and image stages) -> an
:class:`~contimg_dask.archive.records.ArchiveEntry`.

The block's times, pointing, strip and antennas come from its block store's geometry; the
product's centre is the block's fixed ICRS phase centre (the ``rephased`` data group) or,
for an image, its reference pixel (``CRVAL1``/``CRVAL2``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from contimg_dask.archive.fingerprint import content_checksum, fingerprint
from contimg_dask.archive.records import ArchiveEntry, collection_of, product_id
from contimg_dask.errors import ContimgError, InputError
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import ProductRecord

#: Kinds that are parts of another product (the image's quick-looks and its provenance
#: sidecar): served with it (``archive get --format png``), not indexed on their own.
NOT_INDEXED = frozenset({"png", "provenance"})
#: Kinds whose centre is an image's reference pixel.
IMAGE_KINDS = frozenset({"image", "image_pbcor", "residual", "pb", "model", "mosaic", "noise"})


def block_sky(store: str) -> dict[str, Any]:
    """Times (Unix s), centre and strip (deg), antennas of the block store ``store``."""
    from contimg_dask.io.store.block_view import fixed_centre_group, read_geometry

    geometry = read_geometry(store)
    half = 0.5 * geometry.integration_time_s
    try:
        group = fixed_centre_group(Path(store), "rephased")
        ra, dec = math.degrees(group.ra_rad), math.degrees(group.dec_rad)
    except InputError:  # not rephased: the pointing (apparent), at the block's middle
        middle = len(geometry.times_unix) // 2
        ra_rad = (geometry.pointing_ra_rad if geometry.pointing_ra_rad is not None
                  else float(geometry.last[middle]))
        ra, dec = math.degrees(ra_rad) % 360.0, math.degrees(geometry.pointing_dec_rad)
    return {"ra_deg": ra, "dec_deg": dec,
            "strip_dec_deg": math.degrees(geometry.pointing_dec_rad),
            "time_start": float(geometry.times_unix[0] - half),
            "time_end": float(geometry.times_unix[-1] + half),
            "n_antennas": len(geometry.antenna_names)}


def block_store_of(record: ProductRecord) -> str:
    """The block store a product was made from: the product itself, or the first of its
    inputs that is a zarr directory."""
    if record.kind == "block_store":
        return record.path
    for path in record.provenance.get("inputs", []):
        if Path(path, "zarr.json").exists():
            return str(path)
    raise InputError(f"no block store among the inputs of this {record.kind} product",
                     file=record.path, block=record.block_id)


def image_centre(path: str) -> tuple[float, float]:
    """An image's reference direction (CRVAL1, CRVAL2), degrees."""
    from astropy.io import fits

    header = fits.getheader(path)
    return float(header["CRVAL1"]) % 360.0, float(header["CRVAL2"])


def _figure(state: StateStore, block_id: str, stage: str, name: str) -> Any:
    status = state.stage_status(block_id, stage)
    if status is None or not status.result:
        return None
    return status.result.get("figures", {}).get(name)


def input_fingerprints(inputs: list[str]) -> dict[str, str | None]:
    """Each input's fingerprint now (None for one that no longer exists)."""
    out: dict[str, str | None] = {}
    for path in inputs:
        try:
            out[path] = fingerprint(path)
        except InputError:
            out[path] = None
    return out


def entry_for(record: ProductRecord, state: StateStore, *, checksum: bool,
              skies: dict[str, dict[str, Any]] | None = None) -> ArchiveEntry:
    """The archive entry of ``record``; ``checksum``: compute the content checksum when the
    stage recorded none; ``skies``: block metadata already read, by block store (filled in).
    Raises a ContimgError naming the product when its block store or image cannot be read."""
    skies = {} if skies is None else skies
    store = block_store_of(record)
    try:
        if store not in skies:
            skies[store] = block_sky(store)
        sky = dict(skies[store])
        if record.kind in IMAGE_KINDS:
            sky["ra_deg"], sky["dec_deg"] = image_centre(record.path)
    except (OSError, ValueError) as exc:  # unreadable or corrupt files
        raise InputError(f"cannot read the product's metadata: {exc}", file=record.path,
                         block=record.block_id) from exc
    flag = _figure(state, record.block_id, "flag", "flagged_fraction")
    noise = _figure(state, record.block_id, "image", "noise_jy") if (
        record.kind in IMAGE_KINDS) else None
    provenance = {**record.provenance, "stage": record.stage, "token": record.token,
                  "recorded_at": record.recorded_at,
                  "input_fingerprints": input_fingerprints(record.provenance.get("inputs", []))}
    sum_ = record.checksum
    if sum_ is None and checksum:
        sum_ = content_checksum(record.path)  # InputError naming it if it is gone
    return ArchiveEntry(
        product_id=product_id(record.block_id, record.kind), kind=record.kind,
        path=record.path, block_id=record.block_id,
        collection=collection_of(record.kind, sky["strip_dec_deg"], sky["time_start"],
                                 record.block_id),
        ra_deg=sky["ra_deg"], dec_deg=sky["dec_deg"], strip_dec_deg=sky["strip_dec_deg"],
        time_start=sky["time_start"], time_end=sky["time_end"], noise_jy=noise,
        flag_fraction=flag, calibrator=_figure(state, record.block_id, "calibrate_solve",
                                               "calibrator"),
        n_antennas=sky["n_antennas"], stage=record.stage, checksum=sum_,
        provenance=provenance, indexed_at=time.time())


def latest_records(state: StateStore, block_id: str | None = None) -> list[ProductRecord]:
    """The state store's products (of ``block_id`` only, if given), the latest record of
    each (block, kind), indexed kinds only."""
    latest: dict[tuple[str, str], ProductRecord] = {}
    for record in state.products(block_id):
        if record.kind in NOT_INDEXED:
            continue
        key = (record.block_id, record.kind)
        if key not in latest or record.recorded_at >= latest[key].recorded_at:
            latest[key] = record
    return list(latest.values())


def skip_reason(exc: ContimgError) -> str:
    """One line for a product that could not be indexed."""
    return f"{exc.file or '-'}: {exc.message}"
