"""The conversion cache: converted products kept in a size-bounded directory, the least
recently used evicted first, each valid only for the source it was made from.

Layout: ``<cache>/<key digest>/`` holds ``entry.json`` (the key, the source's path and
fingerprint, the size) and the converted product. An entry is built whole under a temporary
name and renamed into place (io/system/atomic.py); its ``entry.json``'s modification time is
its last use. A request whose source fingerprint differs from the entry's rebuilds it.
Concurrent requests for one key wait on that key's file lock (filelock) instead of
converting twice; eviction renames an entry aside before removing it, so a reader never sees
half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from contimg_dask.io.system.atomic import atomic_directory, register_product_kind

ENTRY_FILE = "entry.json"
#: A cache entry directory, recognised by its record: only such a directory is replaced.
CACHE_ENTRY = "archive_cache_entry"
register_product_kind(CACHE_ENTRY, lambda p: (p / ENTRY_FILE).is_file())


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class CacheResult:
    """A converted product: its ``path`` in the cache and whether it was there already."""

    path: Path
    hit: bool
    size_bytes: int


class ConversionCache:
    """Converted products under ``directory``, at most ``max_bytes`` in all (the newest
    entry is kept even when it alone is larger)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _entry(self, key: str) -> Path:
        return self.directory / hashlib.sha256(key.encode()).hexdigest()[:32]

    @staticmethod
    def _record(entry: Path) -> dict | None:
        try:
            return json.loads((entry / ENTRY_FILE).read_text())
        except (OSError, ValueError):
            return None

    def get(self, key: str, name: str, source_fingerprint: str,
            make: Callable[[Path], None]) -> CacheResult:
        """The product ``name`` cached under ``key`` for a source with
        ``source_fingerprint``; ``make(path)`` writes it to ``path`` when it is missing or
        was made from another version of the source."""
        entry = self._entry(key)
        with FileLock(str(entry) + ".lock"):
            record = self._record(entry)
            if (record is not None and record["key"] == key
                    and record["source_fingerprint"] == source_fingerprint
                    and (entry / name).exists()):
                os.utime(entry / ENTRY_FILE)
                return CacheResult(entry / name, True, int(record["size_bytes"]))
            with atomic_directory(entry, CACHE_ENTRY) as tmp:
                tmp.mkdir()
                make(tmp / name)
                size = _size(tmp / name)
                (tmp / ENTRY_FILE).write_text(json.dumps({
                    "key": key, "name": name, "source_fingerprint": source_fingerprint,
                    "size_bytes": size, "created": time.time()}))
        self.evict(keep=entry)
        return CacheResult(entry / name, False, size)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, size in bytes, directory) of every entry, least recently used first."""
        out = []
        for entry in self.directory.iterdir():
            record = self._record(entry) if entry.is_dir() else None
            if record is not None:
                out.append(((entry / ENTRY_FILE).stat().st_mtime, int(record["size_bytes"]),
                            entry))
        return sorted(out)

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries (never ``keep``) until the cache fits."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, entry in entries:
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            aside = entry.with_name(f"{entry.name}.evicted.{uuid.uuid4().hex[:12]}")
            try:
                entry.rename(aside)
            except FileNotFoundError:  # evicted meanwhile by another process
                continue
            shutil.rmtree(aside, ignore_errors=True)
            total -= size
            removed.append(entry)
        return removed
