"""``contimg dashboard``'s ``/health`` and ``/metrics`` over a real redis-server: /metrics
parses with prometheus_client's parser, carries every documented name and the values seeded
into the store; /health answers 200, flips to 503 naming the state store when redis-server
is stopped, and back to 200 when it returns. Read-only: other methods and unknown query
parameters are refused. Another address than loopback is refused without a token."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contimg_dask.errors import ConfigError
from contimg_dask.monitoring.exposition import METRIC_NAMES
from contimg_dask.monitoring.server import DashboardThread, access_token
from contimg_dask.state import open_state_store
from tests.dashboard_support import DashboardProcess, free_port, heartbeats, record_block
from tests.helpers import make_config, without_disk_alerts
from tests.state.redis_process import RedisProcess


@pytest.fixture
def redis_alone(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own (it is stopped and restarted)."""
    settings = make_config(tmp_path, **{"state.redis.appendfsync": "everysec"}).state.redis
    server = RedisProcess(tmp_path / "redis", settings).start()
    yield server
    server.stop()


def wait_for(predicate, timeout_s: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.slow
def test_health_and_metrics_over_redis(tmp_path: Path, redis_alone: RedisProcess) -> None:
    overrides = {"state.backend": "redis", "state.url": redis_alone.url,
                 "state.instance": f"dash-{uuid.uuid4().hex[:8]}"}
    config = make_config(tmp_path, **overrides)
    store = open_state_store(config)
    now = time.time()
    heartbeats(store, now)
    record_block(store, "2026-11-30T10:00:00", now - 400.0, fail_stage="image")
    record_block(store, "2026-11-30T10:05:09", now - 100.0, latency_s=330.0, flagged=0.12)
    store.close()

    dashboard = DashboardProcess(tmp_path, overrides).start()
    try:
        wait_for(lambda: dashboard.status("/health") == 200, 10.0)
        status, body = dashboard.get("/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert set(METRIC_NAMES) <= set(families)
        value = {f.name: f.samples[0].value for f in families.values()
                 if len(f.samples) == 1}
        assert value["contimg_block_latency_seconds"] == 330.0
        assert value["contimg_flag_fraction"] == pytest.approx(0.12)
        assert value["contimg_up"] == 1.0
        stages = {(s.labels["stage"], s.labels["status"]): s.value
                  for s in families["contimg_stages"].samples}
        assert stages[("image", "done")] == 1 and stages[("image", "failed")] == 1
        blocks = {s.labels["status"]: s.value for s in families["contimg_blocks"].samples}
        assert blocks == {"complete": 2}

        # read-only, parameters validated
        assert dashboard.get("/health?verbose=1")[0] == 400
        assert dashboard.status("/metrics?x=1") == 400

        redis_alone.stop()
        took = wait_for(lambda: dashboard.status("/health") == 503, 10.0)
        status, body = dashboard.get("/health")
        report = json.loads(body)
        state = next(c for c in report["checks"] if c["name"] == "state")
        assert report["status"] == "red" and state["status"] == "red"
        assert redis_alone.url.removesuffix("/0").split("//")[1] in state["reason"]
        print(f"/health turned 503 {took:.2f} s after redis-server stopped")
        assert dashboard.status("/metrics") == 200  # still served, contimg_up 0

        redis_alone.start()
        wait_for(lambda: dashboard.status("/health") == 200, 15.0)

        # a store that hangs rather than refuses (SIGSTOP): /health turns 503 once the
        # snapshot is ten intervals old (at least 10 s), and recovers on SIGCONT
        assert redis_alone.process is not None
        redis_alone.process.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: dashboard.status("/health") == 503, 20.0)
            checks = json.loads(dashboard.get("/health")[1])["checks"]
            assert any(c["name"] == "monitor" and c["status"] == "red" for c in checks)
        finally:
            redis_alone.process.send_signal(signal.SIGCONT)
        wait_for(lambda: dashboard.status("/health") == 200, 40.0)
    finally:
        dashboard.stop()


def test_only_loopback_without_a_token(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert access_token(config, "127.0.0.1") is None
    with pytest.raises(ConfigError, match="access_token"):
        access_token(config, "0.0.0.0")
    with_token = make_config(tmp_path, **{"monitoring.dashboard.access_token": "s3cret"})
    assert access_token(with_token, "0.0.0.0") == "s3cret"


@pytest.mark.slow
def test_a_configured_token_is_required_on_every_request(tmp_path: Path) -> None:
    dashboard = DashboardProcess(tmp_path,
                                 {"monitoring.dashboard.access_token": "s3cret"}).start()
    try:
        assert dashboard.status("/health") == 403
        assert dashboard.status("/metrics?token=wrong") == 403
        assert dashboard.status("/metrics?token=s3cret") == 200
        status, body = dashboard.get("/")
        assert status == 403 and b"access token" in body  # redirected to /denied
        status, body = dashboard.get("/?token=s3cret")
        assert status == 200 and b"bokeh" in body.lower()
    finally:
        dashboard.stop()


def test_served_from_a_thread_of_the_caller(tmp_path: Path) -> None:
    """What ``contimg watch --dashboard`` uses: start, answer, stop, port released. The disk
    alert rules (the disk line's bands) are dropped: this machine's free space must not
    decide the answer."""
    config = make_config(tmp_path, **without_disk_alerts(tmp_path))
    store = open_state_store(config)
    heartbeats(store, time.time())
    store.close()
    port = free_port()
    dashboard = DashboardThread(config, "127.0.0.1", port).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            report = json.loads(answer.read())
        assert {c["name"] for c in report["checks"]} == {
            "state", "products_disk", "dask_scheduler", "casa", "dask", "watcher",
            "pipeline", "dask_workers"}
        assert next(c for c in report["checks"] if c["name"] == "state")["status"] == "green"
    finally:
        dashboard.stop()
    with socket.socket() as s:  # nothing listens any more (TIME_WAIT allowed, as tornado does)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
