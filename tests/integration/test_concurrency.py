"""Concurrent stages on one block lose no records (defect 3 of issue 10): 8 processes at
once, six writing flag versions a..f, one applying calibration, one exporting, 20 rounds;
after each round every version and the calibration record are in the store."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from contimg_dask.io.ingest import ingest_block
from contimg_dask.processing.calibrate_solve import solve_block
from contimg_dask.processing.flag import flag_block, list_flag_versions, restore_flags
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from tests.helpers import make_config

pytestmark = pytest.mark.slow
VERSIONS = "abcdef"
ROUNDS = 20


def _stage(job: tuple[str, str, str, str]) -> str:
    """One stage run in a pool process: ``flag`` (a version), ``apply`` or ``export``."""
    import dask

    from contimg_dask.io.outputs.exports import export_block
    from contimg_dask.processing.calibrate_apply import apply_solutions

    kind, root, arg, tag = job
    config = make_config(Path(root))
    store = Path(root) / "block.zarr"
    with dask.config.set(scheduler="synchronous"):
        if kind == "flag":
            flag_block(store, config.flagging, version=arg)
        elif kind == "apply":
            return apply_solutions(store, Path(root) / "solutions.zarr", config,
                                   materialise=False)["solutions_block"]
        else:
            export_block(store, Path(root) / f"export-{tag}.uvh5", "uvh5", config)
    return arg


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("concurrency")
    config = make_config(root)
    summary = simulate_blocks(config, root / "raw", SimulationOptions(
        preset="small", seed=3, transit="3C286"))[0]
    store = ingest_block([Path(f) for f in summary["files"]], root / "block.zarr", config)
    solve_block(store, config, root / "solutions.zarr")
    return root


def test_eight_concurrent_stages_lose_no_records(block: Path) -> None:
    store = block / "block.zarr"
    applied = set()
    # Pool processes fork from a server that imported this module once (no threads there).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(8) as pool:
        for round_ in range(ROUNDS):
            jobs = [("flag", str(block), v, str(round_)) for v in VERSIONS]
            jobs += [("apply", str(block), "", str(round_)),
                     ("export", str(block), "", str(round_))]
            pool.map(_stage, jobs, chunksize=1)
            listing = list_flag_versions(store)
            assert set(listing["versions"]) == {"ingest", *VERSIONS}, f"round {round_}"
            calibration = _calibration_record(store)
            assert calibration is not None, f"round {round_}: calibration record lost"
            applied.add(calibration["applied"])
    assert len(applied) == ROUNDS  # a fresh record each round
    for version in VERSIONS:
        restore_flags(store, version)
        assert list_flag_versions(store)["active"] == version


def _calibration_record(store: Path) -> dict | None:
    from contimg_dask.io.store.block_store import block_node, open_block

    return block_node(open_block(store)).to_dataset(inherit=False).attrs["contimg"].get(
        "calibration")
