"""`contimg run` (a real process, a real LocalCluster) on good blocks mixed with bad input:
a truncated subband file, a foreign HDF5 file, a block missing 5 subbands and a NaN-filled
subband. Each bad input is recorded as a failure naming its file and cause; every good block
is done, and the bad data never reach the products."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.integration.test_cli import contimg

STAMP = "%Y-%m-%dT%H:%M:%S"
# Two stages keep this test about the orchestrator, not about imaging (ingest reads every
# file; the NaN check reads what ingest flagged).
RECIPE = "[{stage: ingest}]"


def _copy_block(files: list[Path], incoming: Path, shift_min: float) -> list[Path]:
    """The block's files under names ``shift_min`` minutes later (a new block to discovery)."""
    out = []
    for f in files:
        stamp, _, rest = f.name.partition("_")
        when = dt.datetime.strptime(stamp, STAMP) + dt.timedelta(minutes=shift_min)
        target = incoming / f"{when.strftime(STAMP)}_{rest}"
        shutil.copy(f, target)
        out.append(target)
    return sorted(out, key=lambda p: p.name.rpartition("_sb")[2])


@pytest.mark.slow
def test_bad_inputs_are_failures_and_good_blocks_are_done(small_blocks: Path,
                                                          tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    originals = sorted(small_blocks.glob("*_sb*.hdf5"))
    stamps = sorted({f.name[:19] for f in originals})
    first = dt.datetime.strptime(stamps[0], STAMP)
    blocks = [[f for f in originals
               if abs((dt.datetime.strptime(f.name[:19], STAMP) - s).total_seconds()) < 90]
              for s in (first, first + dt.timedelta(seconds=300))]
    assert [len(b) for b in blocks] == [16, 16]
    good_a = _copy_block(blocks[0], incoming, 0)
    _copy_block(blocks[1], incoming, 0)
    truncated_block = _copy_block(blocks[0], incoming, 20)
    truncated = truncated_block[3]
    with truncated.open("r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    incomplete = _copy_block(blocks[1], incoming, 30)
    for f in incomplete[:5]:
        f.unlink()
    nan_block = _copy_block(blocks[0], incoming, 40)
    nan_file = nan_block[5]
    with h5py.File(nan_file, "r+") as f:
        vis = f["Data"]["visdata"]
        vis[...] = np.full(vis.shape, np.nan + 1j * np.nan, dtype=vis.dtype)
    # An HDF5 file of another application, named like a subband of the first block.
    beside_a = dt.datetime.strptime(good_a[0].name[:19], STAMP) + dt.timedelta(seconds=1)
    foreign = incoming / f"{beside_a.strftime(STAMP)}_sb00.hdf5"
    with h5py.File(foreign, "w") as f:
        f["spectrum"] = np.arange(10.0)

    sets = ["--set", f"paths.root={tmp_path}", "--set", f"pipeline.recipes.target={RECIPE}",
            "--set", f"pipeline.recipes.calibrator={RECIPE}", "--set", "dask.n_workers=1"]
    run = contimg(*sets, "run", str(incoming), "--json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # not every block is done: exit code 1
    outcomes = {o["block_id"]: o for o in map(json.loads, run.stdout.splitlines())}
    ids = sorted(outcomes)
    assert len(ids) == 5
    good, trunc, inc, nan = ids[0], ids[2], ids[3], ids[4]
    for block_id in (good, ids[1], trunc, nan):
        assert outcomes[block_id]["outcome"] == "done", outcomes[block_id]
        kinds = {p["kind"] for p in outcomes[block_id]["products"]}
        assert kinds == {"block_store"}
    assert outcomes[inc]["outcome"] == "failed"

    summary = json.loads(contimg(*sets, "failures", "--json", cwd=tmp_path).stdout)
    by_file = summary["by_file"]
    assert any("cannot read HDF5" in m for m in by_file[str(truncated)])
    assert any("not a UVH5 file" in m for m in by_file[str(foreign)])
    assert any("not finite" in m and "sb05" in m for m in by_file[str(nan_file)])
    assert any("misses 5 subbands" in m for ms in by_file.values() for m in ms)
    causes = summary["by_cause"]
    for cause in ("UnreadableFileError", "ForeignFileError", "IncompleteBlockError",
                  "InputError"):
        assert f"{cause} (permanent)" in causes, causes
    assert summary["by_stage"]["discover"] == 3 and summary["by_stage"]["ingest"] == 1

    # The bad data never reach a product: the truncated block was ingested without its
    # subband 03, and the NaN subband is entirely flagged in its store (the other subbands
    # keep the simulator's data, equal to the good block's they were copied from).
    from contimg_dask.io.store.block_view import open_block_view

    trunc_prov = open_block_view(Path(outcomes[trunc]["products"][0]["path"])).provenance
    assert trunc_prov["missing_subbands"] == [3]
    nan_view = open_block_view(Path(outcomes[nan]["products"][0]["path"]))
    good_view = open_block_view(Path(outcomes[good]["products"][0]["path"]))
    freq = nan_view.dataset.frequency.values
    with h5py.File(nan_file, "r") as f:
        nan_freqs = np.asarray(f["Header"]["freq_array"][()]).ravel()
    in_nan = np.isin(freq, nan_freqs)
    assert in_nan.sum() == nan_freqs.size
    nan_flags = nan_view.dataset.FLAG.values
    assert nan_flags[:, :, in_nan].all()
    np.testing.assert_array_equal(nan_view.dataset.VISIBILITY.values[:, :, ~in_nan],
                                  good_view.dataset.VISIBILITY.values[:, :, ~in_nan])
