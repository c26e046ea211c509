"""An incremental add to a mosaic killed (SIGKILL, a real subprocess running the mosaic
stage) while it stages the new tiles, once it has committed its journal, and once it has
renamed the new chunks in (while it rewrites the FITS tiles): after
recovery (what the next add does first, under the lock) the mosaic is exactly the one before
the add, or exactly the one an uninterrupted add gives, never a mixture
(imaging/mosaic_update.py). The kill points are found by watching the mosaic's directory.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from astropy.io import fits

from contimg_dask.imaging.mosaic_build import MosaicSettings
from contimg_dask.imaging.mosaic_inputs import read_input
from contimg_dask.imaging.mosaic_update import JOURNAL, PENDING, add_in_place, recover
from contimg_dask.imaging.mosaic_writer import mosaic_files
from contimg_dask.ops.mosaic import GaussianBeam
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.image import product_directory
from contimg_dask.stages.layout import images_dir, mosaics_dir
from contimg_dask.stages.mosaic import MosaicStage
from contimg_dask.testing.mosaic_images import block_ids, strip
from tests.helpers import make_config

REPO = Path(__file__).resolve().parents[2]
NAME = "mosaic-2026-03-21T080000"
OVERRIDES = {"mosaic.tile_pixels": 64, "mosaic.quicklook": True}
ADD = """
import json, sys
from pathlib import Path
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.mosaic import MosaicStage
from tests.helpers import make_config
config = make_config(Path(sys.argv[1]), **json.loads(sys.argv[3]))
MosaicStage().run(BlockRef(sys.argv[2], Path("/nonexistent/block.zarr")), config)
"""


def _state(directory: Path) -> dict:
    """What a mosaic is: its pixels, noise, headers, accumulators, inputs and generation."""
    files = mosaic_files(directory, NAME)
    group = zarr.open_group(files["accumulators"], mode="r")
    document = json.loads(files["provenance"].read_text())
    return {
        **{kind: fits.getdata(files[kind]).tobytes() for kind in ("mosaic", "noise")},
        **{f"{kind} header": str(fits.getheader(files[kind])) for kind in ("mosaic", "noise")},
        **{name: np.asarray(group[name][:]).tobytes() for name in ("weighted_sum", "weight_sum")},
        "inputs": [i["block_id"] for i in group.attrs["inputs"]],
        "json inputs": [i["block_id"] for i in document["inputs"]],
        "generation": (group.attrs["generation"], document["figures"]["generation"]),
        "covered": document["figures"]["covered_pixels"],
    }


def _staging(directory: Path) -> bool:
    return (directory / PENDING).exists()


def _committed(directory: Path) -> bool:
    return (directory / PENDING / JOURNAL).exists()


def _chunks_moved(directory: Path) -> bool:
    """Committed, and every staged chunk already renamed into the accumulators (the add is
    writing the FITS tiles, headers, PNG, JSON)."""
    staged = directory / PENDING / "acc.zarr"
    return _committed(directory) and not any(
        p.is_file() and p.name != "zarr.json" for p in staged.rglob("*"))


def _add_killed_at(root: Path, block_id: str, directory: Path,
                   reached: Callable[[Path], bool]) -> bool:
    """Run the stage on ``block_id`` in a subprocess and SIGKILL it as soon as
    ``reached(directory)``. True when it was killed (not finished before)."""
    proc = subprocess.Popen([sys.executable, "-c", ADD, str(root), block_id,
                             json.dumps(OVERRIDES)], cwd=REPO)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not reached(directory):
        assert time.monotonic() < deadline, f"the add never reached {reached.__name__}"
        time.sleep(0.0005)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return running and proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # three subprocesses running the stage (42-70 s on a loaded machine)
def test_a_killed_add_leaves_the_mosaic_before_or_after(tmp_path: Path) -> None:
    config = make_config(tmp_path / "root", **OVERRIDES)
    strip(images_dir(config), 3, 30.0, 16.1, seed=9, imsize=200, cell_deg=0.02,
          beam=GaussianBeam(0.12, 0.08, 20.0))
    ids = block_ids(3)
    for block_id in ids[:2]:
        MosaicStage().run(BlockRef(block_id, Path("/nonexistent/block.zarr")), config)
    directory = mosaics_dir(config) / NAME
    saved = tmp_path / "before"
    shutil.copytree(directory, saved)
    before = _state(directory)
    # The uninterrupted add, on a copy.
    settings = MosaicSettings.from_config(config.mosaic)
    reference = tmp_path / "reference"
    shutil.copytree(saved, reference)
    new = read_input(product_directory(images_dir(config), ids[2]))
    assert add_in_place(reference, [new], settings, NAME, provenance={}) is not None
    after = _state(reference)
    assert after["inputs"] == ids and after["generation"] == (3, 3)
    assert before["inputs"] == ids[:2] and before["weight_sum"] != after["weight_sum"]

    for reached, expected, how in ((_staging, before, "discarded"),
                                   (_committed, after, "replayed"),
                                   (_chunks_moved, after, "replayed")):
        shutil.rmtree(directory)
        shutil.copytree(saved, directory)
        assert _add_killed_at(config.paths.root, ids[2], directory, reached), reached
        assert (directory / PENDING).exists()
        assert recover(directory, NAME, settings) == how
        assert not (directory / PENDING).exists()
        recovered = _state(directory)
        assert recovered == expected, (reached, [k for k in expected
                                                 if recovered[k] != expected[k]])
    # After the replay the stage finds the block in: nothing to do.
    again = MosaicStage().run(BlockRef(ids[2], Path("/nonexistent/block.zarr")), config)
    assert again.figures["unchanged"] is True
