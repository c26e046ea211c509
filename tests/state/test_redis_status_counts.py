"""The Redis store's status() counts stages without fetching or decoding their results
(one read-only script does the counting on the server): the dashboard asks every second,
and with ~10k stage records decoding them was half a CPU second per call
(benchmarks/results/state.md). A real redis-server; json.loads of the store module is
wrapped (it still decodes) to see what status() decodes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from contimg_dask.state import StateStore, open_state_store
from contimg_dask.state import redis_store as redis_store_module
from tests.state.conftest import backend_overrides
from tests.state.test_contract import BLOCK, result_for


@pytest.fixture
def redis_store(request: pytest.FixtureRequest, tmp_path) -> StateStore:
    from tests.helpers import make_config

    store = open_state_store(make_config(tmp_path, **backend_overrides("redis", request)))
    yield store
    store.close()


def test_status_decodes_no_stage_result(redis_store: StateStore,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for stage in ("ingest", "flag", "image"):
        redis_store.enqueue(BLOCK, stage)
    for _ in range(2):
        lease = redis_store.claim("w", 60)
        redis_store.complete(lease, result_for(lease))
    redis_store.claim("w", 60)
    decoded: list[object] = []
    spy = SimpleNamespace(**{**vars(json), "loads": lambda text, **kw: (
        decoded.append(json.loads(text, **kw)) or decoded[-1])})
    monkeypatch.setattr(redis_store_module, "json", spy)
    status = redis_store.status()
    assert status["stages"] == {"flag": {"done": 1}, "image": {"running": 1},
                                "ingest": {"done": 1}}
    assert [d for d in decoded if isinstance(d, dict) and "provenance" in d] == []
