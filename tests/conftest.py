"""Shared fixtures: a testing configuration rooted in a temporary directory, simulated blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contimg_dask.config import PipelineConfig
from tests.helpers import make_config

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real files from other instruments, kept in the repository with their licence (see README.md).
REAL_DATA = Path(__file__).resolve().parent / "data" / "real"

# Astropy must never try to download IERS tables during tests.
os.environ.setdefault("ASTROPY_IERS_AUTO_DOWNLOAD", "0")


@pytest.fixture
def config(tmp_path: Path) -> PipelineConfig:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def small_blocks(session_root: Path) -> Path:
    """Two consecutive `small` blocks with the default sky, gains, noise and RFI (seed 1)."""
    from contimg_dask.simulate import SimulationOptions, simulate_blocks

    out = session_root / "small_blocks"
    simulate_blocks(make_config(session_root), out,
                    SimulationOptions(preset="small", n_blocks=2, seed=1))
    return out
