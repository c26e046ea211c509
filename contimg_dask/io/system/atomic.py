"""Products written atomically: built under a temporary name, then renamed into place."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to build a directory product in (a zarr store,
    a Measurement Set, a table). When the block succeeds it becomes ``path``; an existing
    ``path`` is replaced only once the new one is complete. When it fails, the temporary
    directory is removed and ``path`` is left as it was."""
    token = uuid.uuid4().hex[:12]
    tmp = path.with_name(f"{path.name}.tmp-{token}")
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f"{path.name}.old-{token}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
