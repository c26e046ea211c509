"""Block discovery: grouping by timestamp, completeness, and bad input reported by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from contimg_dask.errors import InputError
from contimg_dask.io.uvh5.discovery import discover_blocks, read_subband_header
from contimg_dask.io.uvh5.reader import read_uvh5_meta
from contimg_dask.simulate import Faults, SimulationOptions, simulate_blocks
from tests.helpers import make_config


@pytest.fixture
def incoming(tmp_path: Path, small_blocks: Path) -> Path:
    """A private copy of the two simulated blocks that tests may damage."""
    target = tmp_path / "incoming"
    shutil.copytree(small_blocks, target)
    return target


def test_two_complete_blocks(small_blocks: Path, config) -> None:
    result = discover_blocks(small_blocks, config.blocks)
    assert [b.status for b in result.blocks] == ["complete", "complete"]
    assert all(len(b.files) == 16 and b.usable for b in result.blocks)
    assert result.blocks[0].block_id == "2026-03-21T08:00:00"
    assert not result.problems
    first = result.blocks[0].files[0]
    assert first.n_times == 24 and first.n_pols == 2 and first.n_baselines == 78


def test_missing_subband_is_reported(tmp_path: Path, config) -> None:
    out = tmp_path / "gap"
    simulate_blocks(config, out, SimulationOptions(preset="small", n_blocks=2,
                                                   faults=Faults(missing=frozenset({7}))))
    result = discover_blocks(out, config.blocks)
    for block in result.blocks:
        assert block.missing_subbands == [7]
        assert block.status == "incomplete" and block.usable  # within max_missing_subbands


def test_too_many_missing_is_unusable(incoming: Path, config) -> None:
    for sb in (1, 2, 3):
        next(incoming.glob(f"2026-03-21T08:0[0-2]:*_sb{sb:02d}.hdf5")).unlink()
    block = discover_blocks(incoming, config.blocks).blocks[0]
    assert block.missing_subbands == [1, 2, 3]
    assert not block.usable


def test_bad_files_are_named_and_do_not_stop_discovery(incoming: Path, config) -> None:
    truncated, garbage, foreign_layout = (
        next(incoming.glob(f"2026-03-21T08:0[0-2]:*_sb{sb:02d}.hdf5")) for sb in (3, 4, 5))
    with truncated.open("r+b") as handle:
        handle.truncate(truncated.stat().st_size // 2)
    garbage.write_bytes(b"this is not HDF5" * 100)
    foreign_layout.unlink()
    with h5py.File(foreign_layout, "w") as f:
        f["something"] = np.arange(3)
    (incoming / "readme.hdf5").write_bytes(b"")
    (incoming / "notes.txt").write_text("ignored")

    result = discover_blocks(incoming, config.blocks)
    assert [b.status for b in result.blocks] == ["incomplete", "complete"]
    problems = {Path(p.path).name: p for p in result.blocks[0].problems}
    assert problems[truncated.name].kind == "unreadable"
    assert "truncated" in problems[truncated.name].reason
    assert problems[garbage.name].kind == "unreadable"
    assert problems[foreign_layout.name].kind == "foreign"
    assert "Header" in problems[foreign_layout.name].reason
    assert [Path(p.path).name for p in result.problems] == ["readme.hdf5"]
    assert result.blocks[0].missing_subbands == [3, 4, 5]


def test_different_time_axis_is_inconsistent(tmp_path: Path, config) -> None:
    out = tmp_path / "shifted"
    simulate_blocks(config, out, SimulationOptions(
        preset="small", faults=Faults(shifted_time=frozenset({5}))))
    block = discover_blocks(out, config.blocks).blocks[0]
    assert block.missing_subbands == [5]
    (problem,) = block.problems
    assert problem.kind == "inconsistent" and "time axis" in problem.reason
    assert problem.path.endswith("_sb05.hdf5")


def test_wrong_shape_is_named(incoming: Path, config) -> None:
    path = next(incoming.glob("2026-03-21T08:0[0-2]:*_sb02.hdf5"))
    with h5py.File(path, "r+") as f:
        f["Header/Nfreqs"][()] = 9
    with pytest.raises(InputError, match="Nfreqs=9") as info:
        read_subband_header(path)
    assert info.value.file == str(path)
    block = discover_blocks(incoming, config.blocks).blocks[0]
    assert any(p.path == str(path) and p.kind == "inconsistent" for p in block.problems)


def test_discovery_and_reader_read_one_header(small_blocks: Path, incoming: Path) -> None:
    """Discovery and the reader share one header parser: for a good file they report the
    same times and frequencies, and they refuse a bad header with the same message."""
    path = sorted(small_blocks.glob("*_sb03.hdf5"))[0]
    found, meta = read_subband_header(path), read_uvh5_meta(path)
    assert (found.n_times, found.n_baselines, found.n_freqs, found.n_pols) == (
        meta.n_times, meta.n_baselines, len(meta.freq_hz), len(meta.polarizations))
    assert (found.time_first_jd, found.time_last_jd) == (meta.times_jd[0], meta.times_jd[-1])
    assert (found.freq_first_hz, found.freq_last_hz) == (meta.freq_hz[0], meta.freq_hz[-1])
    damaged = next(incoming.glob("*_sb03.hdf5"))
    with h5py.File(damaged, "r+") as f:
        f["Header/freq_array"][..., 0] = np.nan
    messages = set()
    for read in (read_subband_header, read_uvh5_meta):
        with pytest.raises(InputError, match="non-finite times or frequencies") as info:
            read(damaged)
        assert info.value.file == str(damaged)
        messages.add(info.value.message)
    assert len(messages) == 1


def test_duplicate_subband_is_reported(incoming: Path, config) -> None:
    original = next(incoming.glob("2026-03-21T08:0[0-2]:*_sb09.hdf5"))
    stamp = "2026-03-21T08:00:30"
    shutil.copy(original, incoming / f"{stamp}_sb09.hdf5")
    block = discover_blocks(incoming, config.blocks).blocks[0]
    assert any(p.kind == "duplicate" for p in block.problems)


def test_stray_duplicate_sorting_first_does_not_win(incoming: Path, config) -> None:
    """Defect 8 of issue 10: a stray file of another block, named so that it sorts first,
    took the subband and its timestamp named the block; the good file was dropped."""
    good = discover_blocks(incoming, config.blocks).blocks[0]
    stray_source = next(incoming.glob("2026-03-21T08:0[5-7]:*_sb05.hdf5"))  # block 2
    stray = incoming / "2026-03-21T07:59:59_sb05.hdf5"
    shutil.copy(stray_source, stray)
    block = discover_blocks(incoming, config.blocks).blocks[0]
    assert block.block_id == good.block_id == "2026-03-21T08:00:00"
    assert block.status == "complete"
    assert block.files[5].path == good.files[5].path
    assert [(p.path, p.kind) for p in block.problems] == [(str(stray), "duplicate")]


def test_tolerance_splits_blocks(small_blocks: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"blocks.timestamp_tolerance_s": 1.0})
    result = discover_blocks(small_blocks, config.blocks)
    assert len(result.blocks) > 2  # filename jitter of a few seconds splits them


def test_missing_directory_is_an_error(tmp_path: Path, config) -> None:
    with pytest.raises(InputError, match="not a directory"):
        discover_blocks(tmp_path / "nope", config.blocks)
