"""Retention: the configured policies (``archive.retention``) turned into a plan of what to
delete, and the plan applied (``contimg archive retention``: a dry run unless ``--apply``).

A rule names a ``kind`` (``raw``: the raw subband files the state store registered; else a
product kind), an age (the file's modification time) and a condition:

- ``derived_verified``: every recorded product made from the file exists and its content
  matches its recorded checksum (the file's content survives in them);
- ``sources_verified``: every input the product was made from exists, unchanged since the
  product was indexed (the product can be made again).

Whatever the rule, a file that is an input of a recorded product is deleted only when every
such product exists and verifies against its checksum: the only copy of an input to a
recorded product is never deleted. A product without a recorded checksum does not verify.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contimg_dask.archive.fingerprint import content_checksum, fingerprint
from contimg_dask.archive.index import ArchiveIndex
from contimg_dask.archive.metadata import latest_of, record_product_id
from contimg_dask.config.schema import ArchiveRetentionRule
from contimg_dask.errors import InputError
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import ProductRecord

DAY_S = 86400.0


@dataclass(frozen=True)
class Decision:
    """What retention does with one file: ``delete`` or ``keep``, and why."""

    rule: str
    path: str
    action: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Verifier:
    """Whether recorded products exist and match their checksums (each checked once)."""

    def __init__(self, index: ArchiveIndex) -> None:
        self.index = index
        self._seen: dict[str, str | None] = {}

    def problem(self, record: ProductRecord) -> str | None:
        """None if ``record``'s product verifies, else what is wrong with it."""
        if record.path in self._seen:
            return self._seen[record.path]
        entry = self.index.get(record_product_id(record))
        expected = record.checksum or (entry.checksum if entry is not None
                                       and entry.path == record.path else None)
        if not Path(record.path).exists():
            found: str | None = f"the product {record.path} made from it is missing"
        elif expected is None:
            found = f"the product {record.path} made from it has no recorded checksum"
        elif content_checksum(record.path) != expected:
            found = f"the product {record.path} made from it does not match its checksum"
        else:
            found = None
        self._seen[record.path] = found
        return found


def _candidates(rule: ArchiveRetentionRule, state: StateStore) -> list[str]:
    if rule.kind == "raw":
        return sorted({f.path for b in state.blocks() for f in state.files(b.block_id)})
    return sorted({p.path for p in state.products(kind=rule.kind)})


def _sources_problem(path: str, index: ArchiveIndex, records: list[ProductRecord]) -> str | None:
    record = next((r for r in records if r.path == path), None)
    entry = index.get(record_product_id(record)) if record else None
    if entry is None:
        return "not indexed (run `contimg archive sync`): its sources are unknown"
    recorded = entry.provenance.get("input_fingerprints", {})
    if not recorded:
        return "its provenance records no inputs: it could not be made again"
    for source, expected in recorded.items():
        try:
            now = fingerprint(source)
        except InputError:
            return f"its input {source} is gone: it could not be made again"
        if now != expected:
            return f"its input {source} changed since it was made"
    return None


def plan(state: StateStore, index: ArchiveIndex, rules: list[ArchiveRetentionRule],
         now: float | None = None) -> list[Decision]:
    """What each rule would delete and keep (nothing is touched)."""
    now = time.time() if now is None else now
    records = state.products()
    # A product recorded again (a block store after each stage, an hourly mosaic after each
    # block) is verified as its latest record says it is now.
    latest = {r.path: r for r in latest_of(records)}
    made_from: dict[str, list[ProductRecord]] = defaultdict(list)
    for record in records:
        for source in record.provenance.get("inputs", []):
            current = latest.get(record.path, record)
            if current not in made_from[str(source)]:
                made_from[str(source)].append(current)
    verifier = _Verifier(index)
    decisions = []
    for rule in rules:
        for path in _candidates(rule, state):
            if not os.path.lexists(path):
                continue
            age_days = (now - os.lstat(path).st_mtime) / DAY_S
            if age_days < rule.older_than_days:
                continue
            derived = [r for r in made_from.get(path, []) if r.path != path]
            problems = [p for p in (verifier.problem(r) for r in derived) if p]
            if rule.when == "derived_verified" and not derived:
                problems.append("no recorded product was made from it")
            if rule.when == "sources_verified":
                problems += [p for p in [_sources_problem(path, index, records)] if p]
            decisions.append(Decision(
                rule.name, path, "keep" if problems else "delete",
                "; ".join(problems) if problems else
                f"{age_days:.1f} days old, {rule.when.replace('_', ' ')}"))
    return decisions


def apply(decisions: list[Decision], state: StateStore) -> list[str]:
    """Delete the files ``decisions`` mark ``delete`` (a directory is renamed aside first,
    so it never stays half removed under its name); each deletion is an event
    ``retention_deleted`` {path, rule}. Returns the paths deleted."""
    deleted = []
    for decision in decisions:
        if decision.action != "delete":
            continue
        path = Path(decision.path)
        if path.is_dir() and not path.is_symlink():
            aside = path.with_name(f"{path.name}.deleting.{uuid.uuid4().hex[:12]}")
            path.rename(aside)
            shutil.rmtree(aside)
        else:
            path.unlink()
        state.emit("retention_deleted", {"path": decision.path, "rule": decision.rule})
        deleted.append(decision.path)
    return deleted
