"""A CASA task that hangs: killed at its time limit (``casa.task_timeout_s``), retried,
recorded; the ``casa`` circuit breaker opens after repeated failures (image work pauses)
and closes when CASA works again. Real CASA worker processes; the hang is a start-up hook
(casa_hang/sitecustomize.py) in those processes only, switched by a file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.recipes import with_overrides
from contimg_dask.stages import BlockRef
from tests.helpers import make_config

HANG_TIMEOUT_S = 10.0  # the time limit while CASA hangs
WORKING_TIMEOUT_S = 600.0  # once CASA works again: tclean of a small block takes 15-60 s
# here depending on the machine's load, which must not decide the test
IMAGE = {"stage": "image", "set": {"imaging.require_calibration": False,
                                   "imaging.imsize": 512, "imaging.cell_arcsec": 10.0}}
RECIPE = [{"stage": "ingest"}, IMAGE]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_hung_casa_is_killed_retried_and_breaker_opens_then_closes(
        small_blocks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "casa-hangs"
    flag.touch()
    hook = Path(__file__).parent / "casa_hang"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("CONTIMG_TEST_CASA_HANG", str(flag))
    config = make_config(tmp_path, **{
        "casa.task_timeout_s": HANG_TIMEOUT_S, "pipeline.recipes.target": RECIPE,
        "pipeline.recipes.calibrator": RECIPE, "pipeline.retry.attempts": 2,
        "pipeline.breaker.fail_max": 2, "pipeline.breaker.reset_timeout_s": 2.0})
    files = sorted(small_blocks.glob("*_sb*.hdf5"))[:16]
    block = BlockRef(min(f.name[:19] for f in files), tmp_path / "stores" / "b.zarr",
                     tuple(files))
    assert len({f.name.rpartition("_sb")[2] for f in files}) == 16

    seen: list[str] = []

    def casa_recovers_once_breaker_opens() -> bool:
        state = pipeline.breakers.state("casa")
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "open" and flag.exists():
            flag.unlink()  # "CASA works again"
            pipeline.config = with_overrides(pipeline.config, {
                "casa.task_timeout_s": WORKING_TIMEOUT_S})
        return pipeline.settled(block.block_id)

    with Pipeline(config) as pipeline:
        pipeline.submit(block)
        pipeline.work(until=casa_recovers_once_breaker_opens)
        outcome = pipeline.outcome(block.block_id)
        failures = pipeline.state.failures(block_id=block.block_id)
        events = [e.data for e in pipeline.state.events(count=1000) if e.kind == "breaker"]
        image = pipeline.state.stage_status(block.block_id, "image")
        products = pipeline.state.products(block.block_id, kind="image")

    assert outcome.outcome == "done", outcome
    # Two hung attempts, each killed at the time limit and recorded as transient CASA
    # failures; the breaker opened on the second, work paused, then one trial call closed it.
    timeouts = [f for f in failures if f.stage == "image"]
    assert [f.error for f in timeouts] == ["CasaError", "CasaError"]
    assert all(f.transient and f"timed out after {HANG_TIMEOUT_S:.0f} s" in f.message
               for f in timeouts)
    assert [e["state"] for e in events if e["name"] == "casa"] == ["open", "half_open",
                                                                   "closed"]
    assert seen[:2] == ["closed", "open"] and seen[-1] == "closed"
    assert image.status == "done" and image.attempts == 2  # a second lease did it
    hung = [int(p.name.split("-")[1]) for p in tmp_path.glob("hung-*")]
    assert len(hung) == 2 and not any(_alive(pid) for pid in hung)
    # The image recorded once, by the run that made it, and it is that file.
    assert len(products) == 1 and products[0].token == image.token
    path = Path(products[0].path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == products[0].checksum
    data = fits.getdata(path).squeeze()
    assert np.isfinite(data).any() and np.nanmax(data) > 5 * outcome_noise(image)


def outcome_noise(image) -> float:
    """The image noise the stage measured (Jy/beam)."""
    noise = image.result["figures"]["noise_jy"]
    assert np.isfinite(noise) and noise > 0
    return noise
