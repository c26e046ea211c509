"""Adding blocks to an existing mosaic in place: the cost of the new blocks' footprint (the
output tiles they reach), not of the whole mosaic; crash-safe through a journal.

An add, by the holder of the mosaic's file lock (stages/mosaic.py):

1. Stage, in ``<mosaic dir>/.pending/``: the new sums Σ(w·I/PB) and Σw of the tiles the
   new blocks reach, from the current accumulators plus the blocks, written into a zarr
   store of the same grid and chunks that holds only those chunks. The mosaic is untouched.
2. Commit: ``journal.json`` (the new generation, the staged chunk files, the tiles, the
   accumulators' new attributes, the new ``.mosaic.json``) written under a temporary name,
   flushed and renamed into ``.pending/``. From that rename on, the add has happened.
3. Apply, idempotent (replayed from the journal as often as needed): each staged chunk file
   renamed over the accumulators' own (one rename per chunk: a chunk is the old one or the
   new one); the mosaic and noise FITS each copied into ``.pending``, the reached tiles of
   the copy recomputed from the accumulators and written through memory maps, its header
   rewritten (same cards: ``CT_NIN``, ``CT_GEN`` change) and the copy renamed over the
   product; the accumulators' ``zarr.json`` (attributes) renamed into place; the PNG and
   ``.mosaic.json`` renamed into place.
4. The journal removed, then ``.pending``.

A writer killed before the commit leaves ``.pending`` without a journal: :func:`recover`
(run by the next add, under the lock) removes it, and the mosaic is the old one. Killed
after: :func:`recover` replays the journal, and the mosaic is the new one. So after recovery
the mosaic is never a mixture of the two. A reader that does not take the lock sees each
FITS file whole, of the old or the new generation (renamed into place); during step 3 the
mosaic and noise files may be of different generations for a moment: the FITS ``CT_GEN``
and the JSON's ``figures.generation`` name the generation each file holds.

Bytes written per add: the reached chunks of both accumulators (float64, zstd), a copy of
each of the two float32 FITS files, the PNG and the JSON (benchmarks/mosaic.py,
``incremental`` chain, measures them).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contimg_dask.imaging.mosaic_build import (
    MosaicSettings,
    accumulate_all,
    beam_fits,
    coverage_summary,
    prepare,
    read_accumulator_attrs,
    rewrite_fits_header,
    surveys,
    tiles_reached,
    write_fits,
)
from contimg_dask.imaging.mosaic_inputs import MosaicInput
from contimg_dask.imaging.mosaic_writer import (
    MosaicOutcome,
    beam_figures,
    fits_headers,
    mosaic_document,
    mosaic_files,
    render_quicklook,
)
from contimg_dask.io.system.atomic import install, recover_directory, temporary_name
from contimg_dask.logs import get_logger
from contimg_dask.ops.mosaic import GaussianBeam, MosaicGrid

if TYPE_CHECKING:
    from dask.distributed import Client

log = get_logger(__name__)

#: The staging directory of an add in progress, inside the mosaic's directory.
PENDING = ".pending"
JOURNAL = "journal.json"
ARRAYS = ("weighted_sum", "weight_sum")


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = temporary_name(path)
    tmp.write_bytes(data)
    install(tmp, path)


def _stage_store(source: Path, staged: Path) -> None:
    """An empty zarr store with ``source``'s metadata (same grid, chunks, codecs)."""
    for relative in ("zarr.json", *(f"{a}/zarr.json" for a in ARRAYS)):
        (staged / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, staged / relative)


def _flush(paths: list[Path]) -> None:
    """Flush files to disk (before the journal that names them is committed: a power cut
    must not leave a committed journal with staged chunks that never reached the disk)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _chunk_files(staged: Path) -> list[str]:
    """The chunk files of a staged store, relative to it."""
    return sorted(str(p.relative_to(staged)) for a in ARRAYS for p in (staged / a).rglob("*")
                  if p.is_file() and p.name != "zarr.json")


def recover(directory: Path, name: str, settings: MosaicSettings,
            client: Client | None = None) -> str | None:
    """Finish or undo an add that was interrupted in ``directory`` (call under the mosaic's
    lock): ``"replayed"`` (it had committed: now applied), ``"discarded"`` (it had not: the
    mosaic is the one before it), or None (nothing was pending)."""
    accumulators = mosaic_files(directory, name)["accumulators"]
    for where in (directory, accumulators):  # temporaries of a killed writer
        recover_directory(where)
    pending = directory / PENDING
    if not pending.exists():
        return None
    journal = pending / JOURNAL
    outcome = "discarded"
    if journal.exists():
        _apply(directory, name, json.loads(journal.read_text()), settings, client)
        journal.unlink()
        outcome = "replayed"
    shutil.rmtree(pending)
    log.warning("mosaic %s: an interrupted add was %s", directory, outcome)
    return outcome


def _apply(directory: Path, name: str, journal: dict[str, Any], settings: MosaicSettings,
           client: Client | None) -> dict[str, Any]:
    """Step 3 of the module docstring, from the journal (idempotent). Returns the new
    ``.mosaic.json`` document."""
    pending = directory / PENDING
    files = mosaic_files(directory, name)
    accumulators, staged = files["accumulators"], pending / "acc.zarr"
    for relative in journal["chunks"]:
        source = staged / relative
        if source.exists():  # not yet moved by an earlier, interrupted apply
            (accumulators / relative).parent.mkdir(parents=True, exist_ok=True)
            install(source, accumulators / relative)
    grid = MosaicGrid.from_dict(journal["attrs"]["grid"])
    # The FITS products are copied, updated in their reached tiles and renamed into place,
    # so a reader sees the old or the new generation of each file, never a mixture.
    copies = {kind: pending / f"{files[kind].name}.gen{journal['generation']}"
              for kind in ("mosaic", "noise")}
    for kind, copy in copies.items():
        shutil.copyfile(files[kind], copy)
    summary = write_fits(accumulators, grid, copies, settings,
                         int(journal["attrs"]["tile_pixels"]), client,
                         tiles=[tuple(t) for t in journal["tiles"]])
    attrs = dict(journal["attrs"], tile_summary={**journal["attrs"]["tile_summary"], **summary})
    n_inputs = len(attrs["inputs"])
    headers = fits_headers(grid, GaussianBeam(**attrs["beam"]), n_inputs,
                           journal["generation"], settings, name)
    for kind, copy in copies.items():
        rewrite_fits_header(copy, headers[kind])
        install(copy, files[kind])
    meta = json.loads((staged / "zarr.json").read_text())
    meta["attributes"] = attrs
    _write_atomically(accumulators / "zarr.json", json.dumps(meta, indent=2).encode())
    document = journal["document"]
    document["figures"].update(coverage_summary(attrs["tile_summary"]))
    if files["png"].exists():
        png = pending / files["png"].name
        render_quicklook(files["mosaic"], png, name, n_inputs,
                         document["figures"]["mean_weight_noise_jy"])
        install(png, files["png"])
    _write_atomically(files["provenance"],
                      (json.dumps(document, indent=2, default=str) + "\n").encode())
    return document


def add_in_place(directory: Path, new: list[MosaicInput], settings: MosaicSettings, name: str,
                 *, provenance: dict[str, Any], client: Client | None = None,
                 warn: Callable[[str], None] = log.warning) -> MosaicOutcome | None:
    """Add ``new`` inputs to the mosaic ``name`` in ``directory`` (steps 1-4 of the module
    docstring; the caller holds the mosaic's lock). None, with nothing changed, when an
    input's beam does not fit the mosaic's beam (the caller rebuilds with a new common
    beam). An error before the commit leaves the mosaic as it was."""
    recover(directory, name, settings, client)
    t0 = time.perf_counter()
    files = mosaic_files(directory, name)
    attrs = read_accumulator_attrs(files["accumulators"])
    grid, beam = MosaicGrid.from_dict(attrs["grid"]), GaussianBeam(**attrs["beam"])
    if "generation" not in attrs or not all(beam_fits(i.beam, beam, settings.beam_tolerance)
                                            for i in new):
        return None  # a mosaic written before generations were kept is rebuilt once
    pending = directory / PENDING
    pending.mkdir()
    try:
        journal, figures = _stage(files["accumulators"], pending, attrs, grid, beam, new,
                                  settings, name, provenance, client, warn)
        figures["stage_s"] = time.perf_counter() - t0
        _write_atomically(pending / JOURNAL, json.dumps(journal).encode())
    except BaseException:
        shutil.rmtree(pending, ignore_errors=True)
        raise
    t1 = time.perf_counter()
    figures.update(_apply(directory, name, journal, settings, client)["figures"])
    (pending / JOURNAL).unlink()
    shutil.rmtree(pending)
    figures["apply_s"] = time.perf_counter() - t1
    inputs = [MosaicInput.from_dict(d) for d in journal["attrs"]["inputs"]]
    if not files["png"].exists():
        files.pop("png")
    return MosaicOutcome(files, inputs, grid, beam, figures)


def _stage(accumulators: Path, pending: Path, attrs: dict[str, Any], grid: MosaicGrid,
           beam: GaussianBeam, new: list[MosaicInput], settings: MosaicSettings, name: str,
           provenance: dict[str, Any], client: Client | None,
           warn: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Steps 1 and the journal's content of step 2."""
    t0 = time.perf_counter()
    staged = pending / "acc.zarr"
    _stage_store(accumulators, staged)
    scratch = pending / "scratch"
    scratch.mkdir()
    contributions = prepare(new, surveys(new, settings, client), grid, beam, settings,
                            scratch, client, warn)
    tile_pixels = int(attrs["tile_pixels"])
    tiles = [tile for tile, _ in tiles_reached(grid, contributions, tile_pixels)]
    t1 = time.perf_counter()
    samples = accumulate_all(accumulators, grid, contributions, settings, tile_pixels, client,
                             target=staged)
    generation = int(attrs["generation"]) + 1
    inputs = [MosaicInput.from_dict(d) for d in attrs["inputs"]] + list(new)
    figures = {"survey_s": t1 - t0, "accumulate_s": time.perf_counter() - t1,
               "samples_added": samples, "incremental": True, "tiles_updated": len(tiles),
               "convolved_inputs": sum(1 for c in contributions if "beam-convolved" in c.image),
               **beam_figures(grid, beam, len(inputs)), "generation": generation}
    new_attrs = {**attrs, "inputs": [i.to_dict() for i in inputs], "generation": generation}
    document = mosaic_document(name, grid, beam, inputs, settings, provenance, figures)
    chunks = _chunk_files(staged)
    _flush([staged / c for c in chunks])
    journal = {"generation": generation, "chunks": chunks,
               "tiles": [list(t) for t in tiles], "attrs": new_attrs, "document": document}
    return json.loads(json.dumps(journal, default=str)), figures
