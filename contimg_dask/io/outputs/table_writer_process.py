"""A child process that owns a casacore table open for writing, fed through shared memory.

python-casacore holds the GIL for the whole of a ``putcol`` (measured: a spinning Python
thread got 4 % of its idle rate while a 340 MB putcol ran), so a thread cannot prepare the
next spectral window while the current one is written. The Measurement Set writer therefore
hands the writing to this process: it prepares a window into one of two shared-memory
slots while the child writes the other slot's arrays into the table.

The child is a fresh interpreter (``python -m contimg_dask.io.outputs.table_writer_process``, so
it never re-imports the caller's script) that imports only NumPy and python-casacore.
Commands travel over a socket pair; bulk arrays stay in the slots (never pickled). Every
command is acknowledged, and an error in the child (or its death) is raised in the parent
naming the table.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import traceback
from collections import deque
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from contimg_dask.errors import ContimgError

ArraySpec = tuple[str, tuple[int, ...], str]  # name, shape, dtype


class TableWriterError(ContimgError):
    """The table-writing child process failed (the message carries its traceback)."""


def slot_layout(specs: list[ArraySpec]) -> tuple[list[int], int]:
    """Byte offsets of the arrays ``specs`` laid out one after the other (64-byte aligned)
    in a slot, and the slot's size."""
    offsets, total = [], 0
    for _, shape, dtype in specs:
        offsets.append(total)
        n_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        total += -(-n_bytes // 64) * 64
    return offsets, total


class SharedSlot:
    """Named arrays laid out in one block of memory shared between processes: POSIX shared
    memory (``/dev/shm``), or a memory-mapped file (``name`` an absolute path) where
    ``/dev/shm`` is too small (containers often get 64 MB)."""

    def __init__(self, specs: list[ArraySpec], name: str | None = None,
                 directory: Path | None = None) -> None:
        self.specs = specs
        offsets, total = slot_layout(specs)
        self.size = max(total, 1)
        self.memory: SharedMemory | None = None
        self.file: Path | None = None
        self._map: mmap.mmap | None = None
        if name is None and directory is None:
            self.memory = SharedMemory(create=True, size=self.size)
        elif name is None:
            handle, file = tempfile.mkstemp(prefix=".slot-", dir=directory)
            os.ftruncate(handle, self.size)
            self.file, self._map = Path(file), mmap.mmap(handle, self.size)
            os.close(handle)
        elif name.startswith("/"):
            with open(name, "r+b") as f:
                self.file, self._map = Path(name), mmap.mmap(f.fileno(), self.size)
        else:
            self.memory = SharedMemory(name=name)
            # Attached, not owned: the creator unlinks it (Python 3.11 would otherwise
            # have this process's resource tracker unlink it too, at exit).
            resource_tracker.unregister(self.memory._name, "shared_memory")
        buffer = self.memory.buf if self.memory is not None else self._map
        self.arrays = {
            key: np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset)
            for (key, shape, dtype), offset in zip(specs, offsets, strict=True)}

    @property
    def name(self) -> str:
        """What another process attaches by: the shared memory's name or the file's path."""
        return str(self.file) if self.file is not None else self.memory.name

    def close(self) -> None:
        self.arrays.clear()
        if self.memory is not None:
            self.memory.close()
        else:
            self._map.close()

    def unlink(self) -> None:
        """Remove the block (its creator, after every process has closed it)."""
        if self.memory is not None:
            self.memory.unlink()
        else:
            self.file.unlink(missing_ok=True)


def shared_memory_free_bytes() -> int:
    """Free space of ``/dev/shm`` (0 where there is none)."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def _serve(path: str, conn: Connection, slot_names: list[str],
           specs: list[ArraySpec]) -> None:
    """The child: open ``path`` for writing and carry out commands until ``close``."""
    from casacore.tables import makedminfo, maketabdesc, table

    slots = [SharedSlot(specs, name) for name in slot_names]
    main = table(path, readonly=False, ack=False)
    try:
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone: the table is abandoned
            try:
                if command == "close":
                    main.close()
                    conn.send(("ok", None))
                    return
                if command == "put_slot":  # (slot, [(column, array name, startrow)])
                    slot, puts = args
                    for column, key, startrow in puts:
                        values = slots[slot].arrays[key]
                        main.putcol(column, values, startrow=startrow, nrow=len(values))
                elif command == "put":  # (column, array, startrow): small arrays, pickled
                    column, values, startrow = args
                    main.putcol(column, values, startrow=startrow, nrow=len(values))
                elif command == "put_runs":  # (column, first rows, values)
                    column, starts, values = args
                    for row, value in zip(starts, values, strict=True):
                        main.putcell(column, int(row), value)
                elif command == "addrows":
                    main.addrows(*args)
                elif command == "keyword":
                    main.putkeyword(*args)
                elif command == "addcols":  # (column descriptions, data manager groups)
                    descs, groups = args
                    desc = maketabdesc(descs)
                    main.addcols(desc, makedminfo(desc, groups))
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", None))
            except Exception:  # reported to the parent, which raises it
                conn.send(("error", traceback.format_exc()))
    finally:
        for slot in slots:
            slot.close()


class TableWriterProcess:
    """Context manager: a child process writing the table at ``path``, with ``n_slots``
    shared-memory slots of the arrays ``specs`` (name, shape, dtype). The slots are POSIX
    shared memory, or (``file_backed``; by default when ``/dev/shm`` has too little room)
    memory-mapped files inside the table's directory, removed when the writer closes."""

    def __init__(self, path: str | Path, specs: list[ArraySpec], n_slots: int = 2,
                 file_backed: bool | None = None) -> None:
        self.path = str(path)
        if file_backed is None:  # /dev/shm too small: memory-mapped files in the table
            file_backed = shared_memory_free_bytes() < 1.2 * n_slots * slot_layout(specs)[1]
        directory = Path(path) if file_backed else None
        self.slots = [SharedSlot(specs, directory=directory) for _ in range(n_slots)]
        self._pending: deque[int | None] = deque()  # unacknowledged commands (their slot)
        parent, child = socket.socketpair()
        self._conn = Connection(parent.detach())
        args = json.dumps({"path": self.path, "slots": [s.name for s in self.slots],
                           "specs": specs, "fd": child.fileno()})
        self._process = subprocess.Popen(
            [sys.executable, "-m", "contimg_dask.io.outputs.table_writer_process", args],
            pass_fds=[child.fileno()])
        child.close()

    def __enter__(self) -> TableWriterProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        closed = False
        try:
            if exc_type is None:
                self._drain()
                self._call("close")
                closed = True
        finally:
            if not closed and self._process.poll() is None:
                self._process.terminate()  # failed: the table is abandoned
            self._process.wait(timeout=60)
            self._conn.close()
            for slot in self.slots:
                slot.close()
                slot.unlink()

    def slot(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of slot ``index``, once the child has finished writing from it."""
        while index in self._pending:
            self._acknowledged()
        return self.slots[index].arrays

    def put_slot(self, index: int, puts: list[tuple[str, str, int]]) -> None:
        """Write slot ``index``'s arrays: (column, array name, first row) each. Returns at
        once; the slot is busy until :meth:`slot` is asked for it again."""
        self._queue(index, "put_slot", index, puts)

    def put(self, column: str, values: np.ndarray, startrow: int = 0) -> None:
        """Write ``values`` (pickled: small arrays) into ``column`` from ``startrow``.
        Returns at once."""
        self._queue(None, "put", column, values, startrow)

    def put_runs(self, column: str, starts: np.ndarray, values: np.ndarray) -> None:
        """Write a scalar column stored by IncrementalStMan as runs: ``values[i]`` from row
        ``starts[i]`` (increasing) up to the next start, or to the last row. The storage
        manager keeps a value put in a row for the rows after it until the next stored
        change, so one put per run suffices (tests read every row back). Returns at once."""
        self._queue(None, "put_runs", column, np.asarray(starts), np.asarray(values))

    def addrows(self, n_rows: int) -> None:
        self._queue(None, "addrows", n_rows)

    def keyword(self, name: str, value: Any) -> None:
        self._queue(None, "keyword", name, value)

    def addcols(self, descs: list[dict], groups: dict) -> None:
        self._queue(None, "addcols", descs, groups)

    def _queue(self, slot: int | None, command: str, *args: Any) -> None:
        """Send a command without waiting; its acknowledgement is awaited later (in order),
        ``slot`` marking the slot it keeps busy."""
        self._send(command, *args)
        self._pending.append(slot)

    def _drain(self) -> None:
        while self._pending:
            self._acknowledged()

    def _acknowledged(self) -> None:
        """Wait for the oldest command's acknowledgement (they come in command order)."""
        self._receive()
        self._pending.popleft()

    def _call(self, command: str, *args: Any) -> None:
        self._send(command, *args)
        self._receive()

    def _send(self, command: str, *args: Any) -> None:
        try:
            self._conn.send((command, *args))
        except (BrokenPipeError, EOFError, OSError) as exc:
            raise TableWriterError(f"table writer process gone: {exc}", file=self.path) from exc

    def _receive(self) -> None:
        try:
            status, detail = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise TableWriterError(
                f"table writer process died (exit code {self._process.poll()})",
                file=self.path) from exc
        if status != "ok":
            raise TableWriterError(f"writing the table failed:\n{detail}", file=self.path)


if __name__ == "__main__":
    _options = json.loads(sys.argv[1])
    _serve(_options["path"], Connection(_options["fd"]), _options["slots"],
           [(name, tuple(shape), dtype) for name, shape, dtype in _options["specs"]])
