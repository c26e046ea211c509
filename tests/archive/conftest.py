"""Fixtures of the archive tests: the index on SQLite (the state database file in a
temporary directory) and on Redis (a real redis-server on 127.0.0.1, one per session, a fresh
instance prefix per test), as in tests/state/."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from contimg_dask.archive.index import ArchiveIndex, open_archive_index
from contimg_dask.config import PipelineConfig
from tests.state import conftest as state_fixtures

# The state tests' fixtures: the backend parameter, the redis-server, the configuration.
backend = state_fixtures.backend
redis_server = state_fixtures.redis_server
store_config = state_fixtures.store_config
store = state_fixtures.store


@pytest.fixture
def index(store_config: Callable[..., PipelineConfig]) -> Iterator[ArchiveIndex]:
    opened = open_archive_index(store_config())
    yield opened
    opened.close()
