"""The one way every product is written: under a temporary name in the destination's
directory, flushed to disk (fsync), then renamed into place.

Rules (docs/operations.md):

- An existing output is replaced only when it is the same kind of product, recognised by
  the format's own marker (a block store's ``processing_set`` type, a Measurement Set's
  ``table.info``, a UVFITS primary header...), or when the caller passes
  ``overwrite=True`` (``--overwrite``). Anything else raises :class:`OutputError` and is
  left untouched. A directory that holds the current working directory is never replaced.
- A directory product replaces the old one with one atomic exchange of the two names
  (Linux ``renameat2(RENAME_EXCHANGE)``), so the final name always holds a complete product.
  Where the file system cannot exchange, the old product is first renamed aside to
  ``NAME.old.PID@HOST.TOKEN``; a crash between the two renames is rolled back by the next
  write to that name (the old product is renamed back).
- Temporaries are named ``NAME.tmp.PID@HOST.TOKEN``. The next write to the same name removes
  those whose writer is dead (same host, process gone or pid reused) or that are older than
  :data:`STALE_AFTER_S` (other hosts, whose processes cannot be checked).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from contimg_dask.errors import OutputError

#: Age after which a temporary of a writer on another host is presumed dead (its pid cannot
#: be checked from here). Longer than any product takes to write (a full block: minutes).
STALE_AFTER_S = 6 * 3600.0

_LEFTOVER = re.compile(r"^(?P<name>.+)\.(?P<what>tmp|old)\.(?P<pid>\d+)@(?P<host>[^/]+)"
                       r"\.(?P<token>[0-9a-f]{12})$")


def _zarr_type(path: Path) -> str | None:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return (meta.get("attributes") or {}).get("type")


def _table_type(path: Path) -> str:
    try:
        return (path / "table.info").read_text(errors="replace").partition("\n")[0]
    except OSError:
        return ""


def _fits_header(path: Path) -> bytes:
    if not path.is_file():
        return b""
    with path.open("rb") as handle:
        return handle.read(2880)


def _is_uvh5(path: Path) -> bool:
    import h5py

    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            return "Header" in f and "Data" in f
    except OSError:
        return False


#: Product kind -> test that a path holds a product of that kind (its format's marker).
PRODUCT_KINDS: dict[str, Callable[[Path], bool]] = {
    "block_store": lambda p: _zarr_type(p) == "processing_set",
    "solutions": lambda p: _zarr_type(p) == "calibration_solutions",
    "ms": lambda p: _table_type(p).startswith("Type = Measurement Set"),
    "caltable": lambda p: _table_type(p).startswith("Type = Calibration"),
    "miriad": lambda p: (p / "vartable").is_file() and (p / "header").is_file(),
    "uvfits": lambda p: (_fits_header(p).startswith(b"SIMPLE  =")
                         and re.search(rb"GROUPS  = +T", _fits_header(p)) is not None),
    "uvh5": _is_uvh5,
    "fits": lambda p: _fits_header(p).startswith(b"SIMPLE  ="),
}


def register_product_kind(kind: str, recognise: Callable[[Path], bool]) -> None:
    """Add a product kind: ``recognise(path)`` is True when ``path`` holds one."""
    PRODUCT_KINDS[kind] = recognise


def _owner_tag() -> str:
    return f"{os.getpid()}@{socket.gethostname()}.{uuid.uuid4().hex[:12]}"


def _pid_alive_since(pid: int, since: float) -> bool:
    """True when process ``pid`` of this host exists and started no later than ``since``
    (a later start means the pid was reused by another process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(pid)
    return started is None or started <= since + 1.0


def _process_start(pid: int) -> float | None:
    """Start of process ``pid``, Unix seconds, from /proc (None where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                    .splitlines() if line.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _is_stale(leftover: Path, match: re.Match[str], now: float) -> bool:
    try:
        made = leftover.lstat().st_ctime
    except OSError:
        return False
    if match["host"] == socket.gethostname():
        return not _pid_alive_since(int(match["pid"]), made)
    return now - made > STALE_AFTER_S


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(path: Path) -> list[Path]:
    """Clean up after dead writers of ``path``: roll back a replacement interrupted between
    its renames (the old product renamed back when nothing is at ``path``) and remove their
    temporaries and set-aside old products. Returns what was removed or restored."""
    if not path.parent.is_dir():
        return []
    now = time.time()
    done = []
    leftovers = []
    for entry in path.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match and match["name"] == path.name and _is_stale(entry, match, now):
            leftovers.append((entry, match))
    # Old products first: one may have to go back to ``path``.
    for entry, match in sorted(leftovers, key=lambda e: e[1]["what"] != "old"):
        if match["what"] == "old" and not os.path.lexists(path):
            os.rename(entry, path)
        else:
            _remove(entry)
        done.append(entry)
    return done


def check_replaceable(path: Path, kind: str, overwrite: bool = False) -> None:
    """Raise :class:`OutputError` unless ``path`` may be (re)written as a ``kind`` product:
    nothing there, a product of the same kind, or anything but a directory holding the
    working directory when ``overwrite``."""
    if kind not in PRODUCT_KINDS:
        raise ValueError(f"unknown product kind {kind!r} (known: {', '.join(PRODUCT_KINDS)})")
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink() and Path.cwd().is_relative_to(path.resolve()):
        raise OutputError(f"refusing to replace {path}: it is the working directory or one "
                          "of its parents", file=path)
    if overwrite or PRODUCT_KINDS[kind](path):
        return
    what = "directory" if path.is_dir() else "file"
    raise OutputError(f"refusing to replace {path}: it is an existing {what} but not a "
                      f"{kind.replace('_', ' ')} (choose another output, or --overwrite to "
                      "replace it)", file=path)


def _fsync_tree(path: Path) -> None:
    """Flush ``path`` (a file, or a directory and everything under it) to disk."""
    paths = [path] if not path.is_dir() else [
        Path(root) / name for root, dirs, files in os.walk(path) for name in [*files, *dirs]
    ] + [path]
    for item in paths:
        if item.is_symlink():
            continue
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step; False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _install(tmp: Path, path: Path, tag: str) -> None:
    """Put the complete ``tmp`` at ``path``, replacing what is there."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if not tmp.is_dir() and not path.is_dir():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        _remove(tmp)
        return
    old = path.with_name(f"{path.name}.old.{tag}")
    os.rename(path, old)
    os.rename(tmp, path)
    _remove(old)


def temporary_name(path: Path) -> Path:
    """A temporary name beside ``path``, owned by this process (removed by :func:`recover`
    once this process is gone)."""
    return path.with_name(f"{path.name}.tmp.{_owner_tag()}")


def install(tmp: Path, path: Path) -> None:
    """Flush the complete ``tmp`` and put it at ``path`` in one atomic step where the file
    system allows (what was at ``path`` is removed). For parts of a product that its owner
    replaces under its own lock (a block store's calibration node)."""
    _fsync_tree(tmp)
    _install(tmp, path, tmp.name.rpartition(".tmp.")[2])
    _fsync_dir(path.parent)


def _os_error(exc: OSError, path: Path) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}", file=path,
                       transient=exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO,
                                               errno.EAGAIN))


@contextmanager
def _atomic(path: str | Path, kind: str, overwrite: bool) -> Iterator[Path]:
    path = Path(os.path.abspath(path))
    check_replaceable(path, kind, overwrite)
    tag = _owner_tag()
    tmp = path.with_name(f"{path.name}.tmp.{tag}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover(path)
    except OSError as exc:
        raise _os_error(exc, path) from exc
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise OutputError(f"the writer of {path} produced nothing", file=path)
        # Checked again: another writer may have put something else there meanwhile.
        check_replaceable(path, kind, overwrite)
        _fsync_tree(tmp)
        _install(tmp, path, tag)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _os_error(exc, path) from exc
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
            # Threads of an interrupted writer (Dask tasks) may still be writing into it:
            # removed again once they have been joined, at interpreter exit.
            atexit.register(_remove, tmp)


def atomic_directory(path: str | Path, kind: str, overwrite: bool = False
                     ) -> AbstractContextManager[Path]:
    """Context manager yielding a temporary name beside ``path`` to build a directory
    product of ``kind`` in (a zarr store, a Measurement Set, a table, a MIRIAD data set; the
    writer creates it). When the block succeeds it is flushed and becomes ``path``; when it
    fails it is removed and ``path`` is left as it was.

    Raises
    ------
    OutputError
        ``path`` holds something that is not a ``kind`` product (and not ``overwrite``),
        or it cannot be written (permission, space).
    """
    return _atomic(path, kind, overwrite)


def atomic_file(path: str | Path, kind: str, overwrite: bool = False
                ) -> AbstractContextManager[Path]:
    """Context manager yielding a temporary file name beside ``path`` (nothing created) to
    write a one-file product of ``kind`` to (UVFITS, UVH5, FITS). Same rules as
    :func:`atomic_directory`."""
    return _atomic(path, kind, overwrite)


def process_alive_since(pid: int, since: float) -> bool:
    """Whether process ``pid`` of this host is alive and is the one that existed at
    ``since`` (Unix s): False once it has exited or its pid was reused."""
    return _pid_alive_since(pid, since)


def recover_directory(directory: Path) -> list[Path]:
    """:func:`recover` for every product of ``directory`` that dead writers left
    temporaries or set-aside old versions of. Returns what was removed or restored."""
    if not directory.is_dir():
        return []
    finals = {directory / match["name"] for entry in directory.iterdir()
              if (match := _LEFTOVER.match(entry.name))}
    return [done for final in sorted(finals) for done in recover(final)]
