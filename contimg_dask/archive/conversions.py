"""``contimg archive get``: a product in the format asked for.

- Visibilities (a block store or any of its exports) as ``ms``, ``uvfits``, ``miriad`` or
  ``uvh5``: an export in its own format is served as it is while it exists; otherwise
  converted on the fly from the block store with the pipeline's exporters
  (io/outputs/exports.py), cached (cache.py), keyed by the product, the format and the
  configuration hash, valid for the block store's fingerprint (a changed store, e.g.
  re-flagged or calibrated, is converted again).
- Images: ``fits`` is the product itself; ``png`` is the image stage's quick-look when it
  exists, else a quick-look made from the FITS image and cached.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from contimg_dask.archive.cache import ConversionCache
from contimg_dask.archive.fingerprint import fingerprint
from contimg_dask.archive.metadata import IMAGE_KINDS
from contimg_dask.archive.records import VISIBILITY_KINDS, ArchiveEntry
from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.errors import InputError
from contimg_dask.io.system.atomic import atomic_directory, atomic_file, register_product_kind

VISIBILITY_FORMATS = ("ms", "uvfits", "miriad", "uvh5")
IMAGE_FORMATS = ("fits", "png")
FORMATS = VISIBILITY_FORMATS + IMAGE_FORMATS
SUFFIXES = {"ms": ".ms", "uvfits": ".uvfits", "miriad": ".uv", "uvh5": ".uvh5",
            "fits": ".fits", "png": ".png"}
GB = 1 << 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(8) == PNG_SIGNATURE


register_product_kind("png", _is_png)


def cache_of(config: PipelineConfig) -> ConversionCache:
    """The configured conversion cache (``archive.cache_dir``, ``archive.cache_max_gb``)."""
    return ConversionCache(config.archive.cache_path(config.paths),
                           int(config.archive.cache_max_gb * GB))


def block_store_for(entry: ArchiveEntry) -> Path:
    """The block store a visibility product is converted from."""
    if entry.kind == "block_store":
        return Path(entry.path)
    for path in entry.provenance.get("inputs", []):
        if Path(path, "zarr.json").exists():
            return Path(path)
    raise InputError(f"the block store this {entry.kind} product was made from is gone "
                     "(its provenance names no existing block store)", file=entry.path,
                     block=entry.block_id)


def _convert(entry: ArchiveEntry, fmt: str, config: PipelineConfig,
             cache: ConversionCache) -> tuple[Path, str]:
    """The product in ``fmt`` and how it was served (``hit``, ``miss``, ``original``)."""
    name = (f"{(entry.block_id or entry.product_id).replace(':', '-').replace('/', '_')}"
            f"{SUFFIXES[fmt]}")
    if fmt in VISIBILITY_FORMATS:
        if entry.kind not in VISIBILITY_KINDS:
            raise InputError(f"a {entry.kind} product has no {fmt} format (visibility "
                             f"formats come from block stores and their exports)",
                             file=entry.path)
        if fmt == entry.kind and Path(entry.path).exists():
            return Path(entry.path), "original"
        from contimg_dask.io.outputs.exports import export_block

        store = block_store_for(entry)
        result = cache.get(f"{entry.product_id}|{fmt}|{config_hash(config)}", name,
                           fingerprint(store),
                           lambda out: export_block(store, out, fmt, config))
        return result.path, "hit" if result.hit else "miss"
    if entry.kind not in IMAGE_KINDS:
        raise InputError(f"a {entry.kind} product has no {fmt} format (fits and png are "
                         "image formats)", file=entry.path)
    source = Path(entry.path)
    if not source.is_file():
        raise InputError("image product is missing", file=source)
    if fmt == "fits":
        return source, "original"
    if source.with_suffix(".png").is_file():
        return source.with_suffix(".png"), "original"
    from contimg_dask.imaging.quicklook import quicklook_png

    result = cache.get(f"{entry.product_id}|png", name, fingerprint(source),
                       lambda out: quicklook_png(source, out, entry.product_id,
                                                 entry.noise_jy or float("nan")))
    return result.path, "hit" if result.hit else "miss"


def _copy(source: Path, out: Path, fmt: str, overwrite: bool) -> None:
    kind = "fits" if fmt == "fits" else fmt
    if source.is_dir():
        with atomic_directory(out, kind, overwrite) as tmp:
            shutil.copytree(source, tmp)
    else:
        with atomic_file(out, kind, overwrite) as tmp:
            shutil.copy2(source, tmp)


def get_product(entry: ArchiveEntry, fmt: str, config: PipelineConfig,
                out: Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Serve ``entry`` in ``fmt`` (converted and cached where needed); copied to ``out``
    (atomically) when given. Returns the served path, how (``hit``, ``miss``, ``original``)
    and the seconds taken."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")
    t0 = time.perf_counter()
    path, how = _convert(entry, fmt, config, cache_of(config))
    if out is not None:
        _copy(path, Path(out), fmt, overwrite)
        path = Path(out)
    return {"product_id": entry.product_id, "format": fmt, "path": str(path), "cache": how,
            "seconds": time.perf_counter() - t0}
