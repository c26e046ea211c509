"""Two ways to tell whether a product changed.

- :func:`fingerprint`: cheap, from the file system's metadata (every file's relative path,
  size and modification time in ns): what the conversion cache compares on each request.
- :func:`content_checksum`: SHA-256 of every file's bytes (and relative path), in path
  order: what the archive records when it indexes a product and what retention verifies
  before it relies on a product as the surviving copy of its inputs.
"""

from __future__ import annotations

import hashlib
import os
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
    directory product), in path order. Raises InputError naming ``path`` if it does not
    exist."""
    root = os.fspath(path)
    if os.path.isfile(root):
        stat = os.stat(root)
        return hashlib.sha256(f"{os.path.basename(root)}|{stat.st_size}|{stat.st_mtime_ns}\n"
                              .encode()).hexdigest()
    if not os.path.isdir(root):
        raise InputError("product does not exist", file=Path(root))
    lines = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        relative = os.path.relpath(directory, root)
        for name in sorted(files):
            stat = os.stat(os.path.join(directory, name))
            lines.append(f"{os.path.join(relative, name)}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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
