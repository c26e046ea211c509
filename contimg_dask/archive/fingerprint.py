"""Two ways to tell whether a product changed.

- :func:`fingerprint`: cheap, from the file system's metadata (every file's relative path,
  size and modification time in ns): what the conversion cache compares on each request.
- :func:`content_checksum`: SHA-256 of every file's bytes (and relative path), in path
  order: what the archive records when it indexes a product and what retention verifies
  before it relies on a product as the surviving copy of its inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from contimg_dask.errors import InputError

CHUNK_BYTES = 1 << 20


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    raise InputError("product does not exist", file=path)


def fingerprint(path: str | Path) -> str:
    """SHA-256 of (relative path, size, mtime ns) of every file of ``path`` (a file or a
    directory product). Raises InputError naming ``path`` if it does not exist."""
    path = Path(path)
    digest = hashlib.sha256()
    for f in _files(path):
        stat = f.stat()
        digest.update(f"{f.relative_to(path) if f != path else f.name}|{stat.st_size}|"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_checksum(path: str | Path) -> str:
    """SHA-256 of the bytes of every file of ``path``, each preceded by its relative path
    (a single file: its bytes alone, the same digest as ``sha256sum``)."""
    path = Path(path)
    digest = hashlib.sha256()
    for f in _files(path):
        if f != path:
            digest.update(f"{f.relative_to(path)}\n".encode())
        with f.open("rb") as stream:
            for chunk in iter(lambda s=stream: s.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    return digest.hexdigest()
