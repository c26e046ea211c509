"""Shared fixtures: a testing configuration rooted in a temporary directory, simulated blocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest

from contimg_dask.config import PipelineConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

# Astropy must never try to download IERS tables during tests.
os.environ.setdefault("ASTROPY_IERS_AUTO_DOWNLOAD", "0")


def testing_config(root: Path, **overrides: object) -> PipelineConfig:
    """The ``testing`` configuration with ``paths.root`` at ``root`` plus overrides."""
    return load_config(environment="testing", overrides={"paths.root": str(root), **overrides},
                       environ={})


@pytest.fixture
def config(tmp_path: Path) -> PipelineConfig:
    return testing_config(tmp_path)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def small_blocks(session_root: Path) -> Path:
    """Two consecutive `small` blocks with the default sky, gains, noise and RFI (seed 1)."""
    from contimg_dask.simulate import SimulationOptions, simulate_blocks

    out = session_root / "small_blocks"
    simulate_blocks(testing_config(session_root), out,
                    SimulationOptions(preset="small", n_blocks=2, seed=1))
    return out


def read_truth(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["truth_json"])
