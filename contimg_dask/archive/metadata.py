"""Metadata extraction: a recorded product (the state store's ProductRecord) and what the
state store knows of its block (figures of the flag, solve and image stages) -> an
:class:`~contimg_dask.archive.records.ArchiveEntry`.

The block's times, pointing, strip and antennas come from its block store's geometry; the
product's centre is the block's fixed ICRS phase centre (the ``rephased`` data group) or,
for an image, its reference pixel (``CRVAL1``/``CRVAL2``).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from contimg_dask.archive.fingerprint import content_checksum, fingerprint
from contimg_dask.archive.records import ArchiveEntry, collection_of, product_id, unit_vector
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


def record_product_id(record: ProductRecord) -> str:
    """The archive's id of a recorded product: ``<block>/<kind>``, or ``<kind>/<collection>``
    for a product of a collection (records.product_id)."""
    if record.collection:
        return product_id(None, record.kind, record.collection)
    return product_id(record.block_id, record.kind)


def inputs_sky(record: ProductRecord, known: dict[str, ArchiveEntry]) -> dict[str, Any]:
    """Times, centre, strip and antennas of a product made from other products (a mosaic
    from images, a light-curve table from measurement tables): the span of its inputs'
    entries (``known``: entries by product path), their mean direction, their median strip.
    Raises InputError naming the product when none of its inputs is in the archive."""
    found = [known[str(p)] for p in record.provenance.get("inputs", []) if str(p) in known]
    if not found:
        raise InputError(f"no block store among the inputs of this {record.kind} product, "
                         "and none of them is a product in the archive (those are indexed "
                         "first: `contimg archive sync`)", file=record.path,
                         block=record.block_id)
    x, y, z = (sum(v) for v in zip(*(unit_vector(e.ra_deg, e.dec_deg) for e in found),
                                    strict=True))
    antennas = [e.n_antennas for e in found if e.n_antennas is not None]
    return {"ra_deg": math.degrees(math.atan2(y, x)) % 360.0,
            "dec_deg": math.degrees(math.atan2(z, math.hypot(x, y))),
            "strip_dec_deg": statistics.median(e.strip_dec_deg for e in found),
            "time_start": min(e.time_start for e in found),
            "time_end": max(e.time_end for e in found),
            "n_antennas": max(antennas) if antennas else None}


def _sky(record: ProductRecord, skies: dict[str, dict[str, Any]],
         known: dict[str, ArchiveEntry]) -> dict[str, Any]:
    try:
        store = block_store_of(record)
    except InputError:
        if record.kind == "block_store" or not record.provenance.get("inputs"):
            raise
        sky = inputs_sky(record, known)
    else:
        if store not in skies:
            skies[store] = block_sky(store)
        sky = dict(skies[store])
    if record.kind in IMAGE_KINDS:
        sky["ra_deg"], sky["dec_deg"] = image_centre(record.path)
    return sky


def entry_for(record: ProductRecord, state: StateStore, *, checksum: bool,
              skies: dict[str, dict[str, Any]] | None = None,
              known: dict[str, ArchiveEntry] | None = None) -> ArchiveEntry:
    """The archive entry of ``record``; ``checksum``: compute the content checksum when the
    stage recorded none; ``skies``: block metadata already read, by block store (filled in);
    ``known``: entries of other products by path, for products made from products rather
    than from a block store (inputs_sky), and for the content checksums of inputs that are
    archived products (``provenance.input_checksums``). Raises a ContimgError naming the
    product when its block store, image or inputs cannot be read."""
    skies, known = ({} if skies is None else skies), ({} if known is None else known)
    try:
        sky = _sky(record, skies, known)
    except (OSError, ValueError) as exc:  # unreadable or corrupt files
        raise InputError(f"cannot read the product's metadata: {exc}", file=record.path,
                         block=record.block_id) from exc
    of_block = not record.collection
    flag = _figure(state, record.block_id, "flag", "flagged_fraction") if of_block else None
    if record.kind == "mosaic":
        noise = _figure(state, record.block_id, record.stage, "mean_weight_noise_jy")
    elif record.kind in IMAGE_KINDS and of_block:
        noise = _figure(state, record.block_id, "image", "noise_jy")
    else:
        noise = None
    provenance = {**record.provenance, "stage": record.stage, "token": record.token,
                  "recorded_at": record.recorded_at, "recorded_by_block": record.block_id,
                  "input_fingerprints": input_fingerprints(record.provenance.get("inputs", [])),
                  "input_checksums": {str(p): known[str(p)].checksum
                                      for p in record.provenance.get("inputs", [])
                                      if str(p) in known}}
    sum_ = record.checksum
    if sum_ is None and checksum:
        sum_ = content_checksum(record.path)  # InputError naming it if it is gone
    block_id = record.block_id if of_block else None
    return ArchiveEntry(
        product_id=record_product_id(record), kind=record.kind, path=record.path,
        block_id=block_id,
        collection=collection_of(record.kind, sky["strip_dec_deg"], sky["time_start"],
                                 block_id),
        ra_deg=sky["ra_deg"], dec_deg=sky["dec_deg"], strip_dec_deg=sky["strip_dec_deg"],
        time_start=sky["time_start"], time_end=sky["time_end"], noise_jy=noise,
        flag_fraction=flag,
        calibrator=_figure(state, record.block_id, "calibrate_solve", "calibrator")
        if of_block else None,
        n_antennas=sky["n_antennas"], stage=record.stage, checksum=sum_,
        provenance=provenance, indexed_at=time.time())


def latest_of(records: list[ProductRecord]) -> list[ProductRecord]:
    """The latest record of each product (record_product_id), in recording order."""
    latest: dict[str, ProductRecord] = {}
    for record in records:
        key = record_product_id(record)
        if key not in latest or record.recorded_at >= latest[key].recorded_at:
            latest[key] = record
    return sorted(latest.values(), key=lambda r: r.recorded_at)


def latest_records(state: StateStore, block_id: str | None = None) -> list[ProductRecord]:
    """The state store's products (of ``block_id`` only, if given), the latest record of
    each, indexed kinds only, each after the products it was made from (so that their
    entries are known when it is indexed)."""
    records = [r for r in latest_of(state.products(block_id)) if r.kind not in NOT_INDEXED]
    by_path = {r.path: r for r in records}
    depth: dict[str, int] = {}

    def depth_of(record: ProductRecord, seen: frozenset[str]) -> int:
        if record.path not in depth:
            inputs = [by_path[str(p)] for p in record.provenance.get("inputs", [])
                      if str(p) in by_path and str(p) not in seen and str(p) != record.path]
            depth[record.path] = 1 + max((depth_of(r, seen | {record.path}) for r in inputs),
                                         default=-1)
        return depth[record.path]

    return sorted(records, key=lambda r: depth_of(r, frozenset()))


def skip_reason(exc: ContimgError) -> str:
    """One line for a product that could not be indexed."""
    return f"{exc.file or '-'}: {exc.message}"
