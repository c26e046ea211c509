"""What the watcher makes of the files on the incoming directory: which names are subband
files, which are still being written, which are foreign.

The correlator writes ``<name>_incomplete.hdf5`` and renames it when done; copies over the
network (rsync, scp) write dotfiles or grow a file in place. A file is taken as complete
only when two looks at least ``settle_s`` apart find the same size and modification time:
the modification time alone is not trusted, because a network file system stamps it with
the server's clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from contimg_dask.io.uvh5.header import parse_subband_name


class FileKind(Enum):
    """What a name on the incoming directory is."""

    SUBBAND = "subband"   # YYYY-MM-DDTHH:MM:SS_sbNN.hdf5
    IGNORED = "ignored"   # being written (*_incomplete.hdf5, dotfiles) or not ours (*.h5, logs)
    FOREIGN = "foreign"   # an .hdf5 file with a name no correlator writes


def classify(name: str) -> FileKind:
    """Classify a file name (not its content: ingest reads the headers)."""
    if name.startswith(".") or name.endswith("_incomplete.hdf5") or not name.endswith(".hdf5"):
        return FileKind.IGNORED
    return FileKind.SUBBAND if parse_subband_name(Path(name)) else FileKind.FOREIGN


@dataclass(frozen=True)
class _Look:
    size: int
    mtime_ns: int
    at: float  # monotonic seconds of the first look that found this size and mtime


class SettleTracker:
    """Remembers the last look at each candidate file; a file is settled once its size and
    mtime have not changed for ``settle_s`` seconds (two looks at least that far apart).

    ``clock`` is a monotonic clock in seconds (tests pass their own)."""

    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self._clock = clock
        self._looks: dict[Path, _Look] = {}

    def look(self, paths: Iterable[Path]) -> list[Path]:
        """Look at ``paths`` now; return those that have settled (and forget them). A file
        that vanished is forgotten."""
        now = self._clock()
        settled = []
        for path in paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._looks.pop(path, None)
                continue
            before = self._looks.get(path)
            if before is None or (before.size, before.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._looks[path] = _Look(st.st_size, st.st_mtime_ns, now)
            elif now - before.at >= self.settle_s:
                del self._looks[path]
                settled.append(path)
        return settled

    def pending(self) -> list[Path]:
        """Files looked at once and not settled yet."""
        return list(self._looks)

    def seconds_to_next_look(self) -> float | None:
        """Seconds until the earliest pending file can settle (None: nothing pending)."""
        if not self._looks:
            return None
        first = min(look.at for look in self._looks.values())
        return max(first + self.settle_s - self._clock(), 0.0)
