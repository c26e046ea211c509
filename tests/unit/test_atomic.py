"""The product writer (io/system/atomic.py): what it may replace, and how it cleans up after dead
writers. Crash injection on real commands is in tests/integration/test_crash_safety.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contimg_dask.errors import OutputError
from contimg_dask.io.system import atomic
from contimg_dask.io.system.atomic import atomic_directory, atomic_file, recover


def _store(tmp: Path, value: int) -> None:
    tmp.mkdir()
    (tmp / "zarr.json").write_text(json.dumps({"attributes": {"type": "processing_set"},
                                               "value": value}))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_same_kind_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "b.zarr"
    for value in (1, 2):
        with atomic_directory(out, "block_store") as tmp:
            _store(tmp, value)
    assert json.loads((out / "zarr.json").read_text())["value"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zarr"]


@pytest.mark.parametrize("kind", ["block_store", "ms", "solutions"])
def test_foreign_directory_is_never_replaced(tmp_path: Path, kind: str) -> None:
    """Defect 1: an --out naming a directory of raw files (or notes) deleted it."""
    raw = tmp_path / "incoming"
    raw.mkdir()
    (raw / "2026-01-01T00:00:00_sb00.hdf5").write_bytes(b"raw")
    (raw / "notes.txt").write_text("keep me")
    with (pytest.raises(OutputError, match=r"refusing to replace .*incoming.*--overwrite"),
          atomic_directory(raw, kind) as tmp):
        _store(tmp, 1)
    assert sorted(p.name for p in raw.iterdir()) == ["2026-01-01T00:00:00_sb00.hdf5",
                                                      "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming"]


def test_other_kind_of_product_is_never_replaced(tmp_path: Path) -> None:
    """Defect 1: `export S.zarr --format ms --out S.zarr` replaced the store by an MS."""
    out = tmp_path / "S.zarr"
    with atomic_directory(out, "block_store") as tmp:
        _store(tmp, 1)
    with pytest.raises(OutputError, match="not a ms"), atomic_directory(out, "ms") as tmp:
        tmp.mkdir()
    assert json.loads((out / "zarr.json").read_text())["value"] == 1


def test_existing_file_is_kept_and_error_is_clear(tmp_path: Path) -> None:
    """Defect 1: `--out existing_file` moved the file aside and failed with a traceback."""
    out = tmp_path / "existing.txt"
    out.write_text("precious")
    for writer in (atomic_directory(out, "block_store"), atomic_file(out, "uvh5")):
        with pytest.raises(OutputError, match="existing file but not a"), writer as tmp:
            tmp.write_text("new")
    assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"]


def test_overwrite_replaces_anything_but_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "existing.txt"
    out.write_text("old")
    with atomic_directory(out, "block_store", overwrite=True) as tmp:
        _store(tmp, 3)
    assert json.loads((out / "zarr.json").read_text())["value"] == 3
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    for target in (Path("."), Path("..")):
        with (pytest.raises(OutputError, match="working directory"),
              atomic_directory(target, "block_store", overwrite=True) as tmp):
            _store(tmp, 4)
    assert (work / "sub").is_dir()


def test_failed_writer_leaves_the_old_product(tmp_path: Path) -> None:
    out = tmp_path / "o.uvh5"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(out, "uvh5", overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.uvh5"]


def test_permission_denied_is_an_output_error(tmp_path: Path) -> None:
    """Defect 5: permission denied was a raw traceback. (Root ignores directory modes: there
    the unwritable directory is /proc.)"""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        locked = Path("/proc")
    with (pytest.raises(OutputError, match=r"cannot write .*(Permission denied|No such file)"),
          atomic_directory(locked / "b.zarr", "block_store") as tmp):
        _store(tmp, 1)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 4: kill -9 left X.tmp-<id> behind forever."""
    out = tmp_path / "b.zarr"
    host = socket.gethostname()
    dead = tmp_path / f"b.zarr.tmp.{_dead_pid()}@{host}.0123456789ab"
    live = tmp_path / f"b.zarr.tmp.{os.getpid()}@{host}.0123456789ac"
    old_remote = tmp_path / "b.zarr.tmp.12@elsewhere.0123456789ad"
    young_remote = tmp_path / "b.zarr.tmp.13@elsewhere.0123456789ae"
    other_product = tmp_path / f"c.zarr.tmp.{_dead_pid()}@{host}.0123456789af"
    for path in (dead, live, old_remote, young_remote, other_product):
        path.mkdir()
        (path / "zarr.json").write_text("{}")
    monkeypatch.setattr(atomic, "STALE_AFTER_S", 0.5)
    time.sleep(1.0)
    (young_remote / "x").write_text("touch")  # its directory's ctime is now recent
    (young_remote / "x").unlink()
    with atomic_directory(out, "block_store") as tmp:
        _store(tmp, 1)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["b.zarr", live.name, young_remote.name, other_product.name])


def test_interrupted_replacement_is_rolled_back(tmp_path: Path) -> None:
    """Defect 4: a crash between the two renames of a replacement left nothing at the
    output path. The state such a crash leaves (old product renamed aside, new one complete
    under its temporary name, writer dead) is rolled back by the next run."""
    out = tmp_path / "b.zarr"
    tag = f"{_dead_pid()}@{socket.gethostname()}.0123456789ab"
    _store(tmp_path / f"b.zarr.old.{tag}", 1)
    _store(tmp_path / f"b.zarr.tmp.{tag}", 2)
    recover(out)
    assert json.loads((out / "zarr.json").read_text())["value"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zarr"]


def test_completed_replacement_leaves_no_old_product(tmp_path: Path) -> None:
    out = tmp_path / "b.zarr"
    _store(out, 2)
    _store(tmp_path / f"b.zarr.old.{_dead_pid()}@{socket.gethostname()}.0123456789ab", 1)
    with atomic_directory(out, "block_store") as tmp:
        _store(tmp, 3)
    assert json.loads((out / "zarr.json").read_text())["value"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zarr"]


def _write_many(args: tuple[str, int]) -> int:
    path, writer = args
    for i in range(25):
        with atomic_directory(Path(path), "block_store") as tmp:
            _store(tmp, 1000 * writer + i)
            (tmp / "payload").write_bytes(os.urandom(4096))
    return writer


def test_concurrent_writers_of_one_output(tmp_path: Path) -> None:
    """Defect 3: two ingests to one output ended in `OSError: Directory not empty` and a
    leftover `.old-*`. Four processes replace one output 25 times each: every write
    succeeds, the output is always one writer's complete product, nothing is left over."""
    import multiprocessing

    out = tmp_path / "b.zarr"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pending = pool.map_async(_write_many, [(str(out), w) for w in range(4)])
        seen = set()
        while not pending.ready():
            if out.exists():
                seen.add(json.loads((out / "zarr.json").read_text())["value"])
            time.sleep(0.001)
        assert sorted(pending.get()) == [0, 1, 2, 3]
    assert json.loads((out / "zarr.json").read_text())["value"] % 1000 == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zarr"]
    assert len(seen) > 1
