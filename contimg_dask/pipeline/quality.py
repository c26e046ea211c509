"""Bad input found by the orchestrator, recorded as failures with the file and the cause.

- Files discovery cannot use (unreadable, truncated, foreign, inconsistent, duplicate) and
  blocks missing more subbands than ``blocks.max_missing_subbands``: recorded as failures of
  the ``discover`` step; the other blocks go on.
- A subband mostly made of non-finite visibilities (NaN/Inf, flagged by ingest): recorded
  as a failure of ``ingest`` naming the subband's file; the block goes on without it (its
  data are flagged).
"""

from __future__ import annotations

import time
from pathlib import Path

from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.io.uvh5.discovery import Block, Discovery
from contimg_dask.state.records import FailureRecord

DISCOVER = "discover"
#: Discovery's problem kinds to the error classes of contimg_dask.errors.
PROBLEM_ERRORS = {"unreadable": "UnreadableFileError", "foreign": "ForeignFileError",
                  "inconsistent": "InconsistentBlockError", "duplicate": "InconsistentBlockError"}


def _failure(block_id: str | None, stage: str, worker: str, error: str, message: str,
             path: str | None) -> FailureRecord:
    return FailureRecord(block_id=block_id, stage=stage, worker=worker, error=error,
                         message=message, transient=False, input=path,
                         traceback_digest=None, at=time.time())


def discovery_failures(discovery: Discovery, max_missing: int, worker: str
                       ) -> list[FailureRecord]:
    """A failure per unusable file and per block too incomplete to process."""
    out = [_failure(None, DISCOVER, worker, PROBLEM_ERRORS.get(p.kind, "InputError"),
                    p.reason, p.path) for p in discovery.problems]
    for block in discovery.blocks:
        out += [_failure(block.block_id, DISCOVER, worker,
                         PROBLEM_ERRORS.get(p.kind, "InputError"), p.reason, p.path)
                for p in block.problems]
        if not block.usable:
            out.append(_failure(
                block.block_id, DISCOVER, worker, "IncompleteBlockError",
                f"block misses {len(block.missing_subbands)} subbands "
                f"({', '.join(f'sb{s:02d}' for s in block.missing_subbands)}), more than "
                f"blocks.max_missing_subbands = {max_missing}: not processed",
                _first_file(block)))
    return out


def _first_file(block: Block) -> str | None:
    return block.files[min(block.files)].path if block.files else None


def nonfinite_failures(block_id: str, store: Path, files: tuple[Path, ...],
                       max_fraction: float, worker: str) -> list[FailureRecord]:
    """A failure per subband whose fraction of non-finite visibilities (as counted by
    ingest, ``contimg.nonfinite_flagged``) exceeds ``max_fraction``."""
    view = open_block_view(store)
    prov = view.provenance
    counts = (prov.get("nonfinite_flagged") or {}).get("per_subband") or {}
    if not counts:
        return []
    n_t, n_bl, _, n_p = view.dataset.VISIBILITY.shape
    channels = dict(zip(prov["subbands"], prov["subband_chunks"], strict=True))
    by_subband = {f"{int(f.name.rpartition('_sb')[2][:2]):02d}": f for f in files
                  if "_sb" in f.name}
    out = []
    for sb, count in sorted(counts.items()):
        total = n_t * n_bl * n_p * channels.get(int(sb), 0)
        fraction = count / total if total else 1.0
        if fraction > max_fraction:
            path = by_subband.get(sb)
            out.append(_failure(
                block_id, "ingest", worker, "InputError",
                f"subband sb{sb}: {100 * fraction:.1f} % of its visibilities are not finite "
                f"(NaN/Inf), above pipeline.max_nonfinite_fraction = "
                f"{100 * max_fraction:.0f} %: flagged, the block goes on without it",
                str(path) if path else str(store)))
    return out
