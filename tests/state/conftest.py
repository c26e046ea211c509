"""Fixtures of the state store tests: every contract test runs against SQLite (a file in a
temporary directory) and Redis (a real redis-server on 127.0.0.1, one per session, a fresh
key prefix per test)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contimg_dask.config import PipelineConfig
from contimg_dask.state import StateStore, open_state_store
from tests.helpers import make_config
from tests.state.redis_process import RedisProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    root = tmp_path_factory.mktemp("redis")
    # appendfsync everysec: these tests are about behaviour, not durability, and an fsync
    # per write costs ~6 ms on the CI disk. test_durability restarts its own server with
    # the shipped setting (always).
    settings = make_config(root, **{"state.redis.appendfsync": "everysec"}).state.redis
    server = RedisProcess(root / "data", settings).start()
    yield server
    server.stop()


def backend_overrides(backend: str, request: pytest.FixtureRequest) -> dict[str, object]:
    if backend == "sqlite":
        return {}
    server = request.getfixturevalue("redis_server")
    return {"state.backend": "redis", "state.url": server.url,
            "state.instance": f"test-{uuid.uuid4().hex[:12]}"}


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_config(backend: str, request: pytest.FixtureRequest,
                 tmp_path: Path) -> Callable[..., PipelineConfig]:
    """A configuration factory for this test's store (same database, extra overrides)."""
    base = backend_overrides(backend, request)

    def configure(**overrides: object) -> PipelineConfig:
        return make_config(tmp_path, **{**base, **overrides})

    return configure


@pytest.fixture
def store(store_config: Callable[..., PipelineConfig]) -> Iterator[StateStore]:
    opened = open_state_store(store_config())
    yield opened
    opened.close()
