"""Health checks that need no state store: the Dask scheduler's reachability (a listening
socket on 127.0.0.1 stands in for the scheduler: the check is whether its address accepts
TCP connections, nothing more), the overall status, and a webhook that cannot be reached
(logged and reported, never raised)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from contimg_dask.monitoring.alerts import post_webhook
from contimg_dask.monitoring.health import AMBER, GREEN, RED, Check, check_scheduler, worst
from tests.dashboard_support import free_port
from tests.helpers import make_config


def test_scheduler_reachable_or_not(tmp_path: Path) -> None:
    assert check_scheduler(make_config(tmp_path)).status == GREEN  # local cluster
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        up = check_scheduler(make_config(
            tmp_path, **{"dask.scheduler_address": f"tcp://127.0.0.1:{port}"}))
    assert up.status == GREEN
    down = check_scheduler(make_config(tmp_path, **{"dask.scheduler_address":
                                                    f"tcp://127.0.0.1:{free_port()}"}))
    assert down.status == RED and "unreachable" in down.reason


def test_overall_status_is_the_worst() -> None:
    assert worst([]) == GREEN
    assert worst([Check("a", GREEN, ""), Check("b", AMBER, "")]) == AMBER
    assert worst([Check("a", RED, ""), Check("b", AMBER, "")]) == RED


def test_an_unreachable_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/alerts"
    with caplog.at_level(logging.WARNING, logger="contimg_dask.monitoring.alerts"):
        assert post_webhook(url, {"rule": "disk_low"}, timeout_s=2.0) is False
    assert any(url in r.getMessage() for r in caplog.records)
