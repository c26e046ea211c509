"""Fixtures of the archive tests: the index and the state store on SQLite (the state database
file in a temporary directory) and on Redis (a real redis-server on 127.0.0.1, one per
session, a fresh instance prefix per test), as in tests/state/; ``cli_settings`` gives the
same store to ``contimg`` commands as ``--set`` options."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contimg_dask.archive.index import ArchiveIndex, open_archive_index
from contimg_dask.config import PipelineConfig
from contimg_dask.state import StateStore, open_state_store
from tests.helpers import make_config
from tests.state import conftest as state_fixtures

# The state tests' fixtures: the backend parameter and the redis-server.
backend = state_fixtures.backend
redis_server = state_fixtures.redis_server


@pytest.fixture
def backend_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, object]:
    return state_fixtures.backend_overrides(backend, request)


@pytest.fixture
def store_config(backend_settings: dict[str, object],
                 tmp_path: Path) -> Callable[..., PipelineConfig]:
    def configure(**overrides: object) -> PipelineConfig:
        return make_config(tmp_path, **{**backend_settings, **overrides})

    return configure


@pytest.fixture
def cli_settings(backend_settings: dict[str, object], tmp_path: Path) -> list[str]:
    """``contimg`` options selecting this test's configuration and store."""
    pairs = {"paths.root": str(tmp_path), **backend_settings}
    return ["--env", "testing", *[a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]]


@pytest.fixture
def store(store_config: Callable[..., PipelineConfig]) -> Iterator[StateStore]:
    opened = open_state_store(store_config())
    yield opened
    opened.close()


@pytest.fixture
def index(store_config: Callable[..., PipelineConfig]) -> Iterator[ArchiveIndex]:
    opened = open_archive_index(store_config())
    yield opened
    opened.close()
