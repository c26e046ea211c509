"""The child process that writes casacore tables from shared memory: round trip, errors
raised in the parent, a dead child, and no shared memory left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from casacore.tables import makearrcoldesc, makedminfo, makescacoldesc, maketabdesc, table

from contimg_dask.io.outputs.table_writer_process import TableWriterError, TableWriterProcess

N_ROWS, N_CHAN, N_POL = 40, 6, 2


def _new_table(path: Path) -> Path:
    desc = maketabdesc([
        makearrcoldesc("DATA", 0j, shape=[N_CHAN, N_POL], valuetype="complex",
                       datamanagertype="TiledColumnStMan", datamanagergroup="Tiles"),
        makescacoldesc("TIME", 0.0, datamanagertype="IncrementalStMan",
                       datamanagergroup="Runs"),
        makescacoldesc("ANTENNA1", 0)])
    table(str(path), desc, nrow=0, dminfo=makedminfo(desc, {
        "Tiles": {"DEFAULTTILESHAPE": np.int32([N_POL, N_CHAN, 16])}}), ack=False).close()
    return path


def _shm_names() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


@pytest.mark.parametrize("file_backed", [False, True])
def test_slots_runs_and_columns_round_trip(tmp_path: Path, file_backed: bool) -> None:
    """Through POSIX shared memory, or memory-mapped files (used where /dev/shm is small):
    the table holds what was put, and nothing is left behind."""
    path = _new_table(tmp_path / "t.tab")
    before = _shm_names()
    files_before = set(path.iterdir())
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((N_ROWS, N_CHAN, N_POL))
            + 1j * rng.standard_normal((N_ROWS, N_CHAN, N_POL))).astype(np.complex64)
    half = N_ROWS // 2
    spec = [("data", (half, N_CHAN, N_POL), "complex64")]
    with TableWriterProcess(path, spec, file_backed=file_backed) as writer:
        assert any(slot.file is not None for slot in writer.slots) == file_backed
        writer.addrows(N_ROWS)
        for index in range(2):  # two slots in flight, then each reused
            writer.slot(index)["data"][...] = data[index * half:(index + 1) * half]
            writer.put_slot(index, [("DATA", "data", index * half)])
        writer.put_runs("TIME", [0, 10, 25], [1.0, 2.0, 3.0])
        writer.put("ANTENNA1", np.tile(np.arange(4, dtype=np.int32), N_ROWS // 4))
        writer.slot(0)["data"][...] = 0  # waits until slot 0 has been written
    with table(str(path), ack=False) as t:
        np.testing.assert_array_equal(t.getcol("DATA"), data)
        np.testing.assert_array_equal(t.getcol("TIME"), np.repeat([1.0, 2.0, 3.0],
                                                                   [10, 15, 15]))
        np.testing.assert_array_equal(t.getcol("ANTENNA1"), np.tile(np.arange(4), 10))
    assert _shm_names() == before
    assert not [f for f in set(path.iterdir()) - files_before if f.name.startswith(".slot")]


def test_an_error_in_the_child_is_raised_in_the_parent(tmp_path: Path) -> None:
    path = _new_table(tmp_path / "t.tab")
    before = _shm_names()
    spec = [("data", (4, N_CHAN, N_POL), "complex64")]
    with pytest.raises(TableWriterError, match="NO_SUCH_COLUMN") as info, \
            TableWriterProcess(path, spec) as writer:
        writer.addrows(4)
        writer.put("NO_SUCH_COLUMN", np.zeros(4))
        writer.keyword("X", 1)
    assert str(path) in str(info.value)
    assert _shm_names() == before


def test_a_dead_child_is_an_error_naming_the_table(tmp_path: Path) -> None:
    path = _new_table(tmp_path / "t.tab")
    spec = [("data", (4, N_CHAN, N_POL), "complex64")]
    with pytest.raises(TableWriterError, match=r"died|gone") as info, \
            TableWriterProcess(path, spec) as writer:
        writer._process.kill()  # as the OS would (out of memory): the child is gone
        writer._process.wait()
        writer.addrows(4)
        writer.keyword("X", 1)
    assert str(path) in str(info.value)
