"""Recovery policies and recipes on their own: breakers per dependency (pybreaker),
retries with backoff (tenacity), the free-space guard, recipe overrides and skipped
stages."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import BreakerConfig, RetryConfig
from contimg_dask.errors import CasaError, ConfigError, InputError, OutputError
from contimg_dask.monitoring.event_tail import EventTail
from contimg_dask.monitoring.health import DASK_BREAKER, GREEN, RED, check_breaker
from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.cluster import ClusterUnavailableError
from contimg_dask.pipeline.recipes import (
    CALIBRATOR,
    TARGET,
    log_skipped_stages,
    recipe,
    with_overrides,
)
from contimg_dask.pipeline.recovery import (
    Breakers,
    DiskSpaceError,
    check_free_space,
    retrying,
)
from tests.helpers import make_config


def _raise(exc: Exception) -> None:
    raise exc


def test_breaker_opens_on_its_dependency_only_then_closes_after_a_good_trial() -> None:
    changes: list[tuple[str, str]] = []
    breakers = Breakers(BreakerConfig(fail_max=2, reset_timeout_s=0.3),
                        lambda name, state: changes.append((name, state)))
    for exc in (InputError("bad file"), CasaError("tclean timed out"),
                OutputError("disk full", transient=True)):
        with pytest.raises(type(exc)):
            breakers.call(["casa", "disk"], lambda e=exc: _raise(e))
    # A permanent error counts for nothing; a CASA error only against casa, a transient
    # write error only against disk: neither has failed twice yet.
    assert (breakers.state("casa"), breakers.state("disk")) == ("closed", "closed")
    with pytest.raises(CasaError):
        breakers.call(["casa"], lambda: _raise(CasaError("tclean timed out")))
    assert breakers.state("casa") == "open" and breakers.state("disk") == "closed"
    assert not breakers.available(["casa"]) and breakers.available(["disk", "state"])
    assert 0 < breakers.seconds_until_trial(["casa", "disk"]) <= 0.3
    time.sleep(0.35)
    assert breakers.available(["casa"])
    assert breakers.call(["casa"], lambda: 42) == 42
    assert changes == [("casa", "open"), ("casa", "half_open"), ("casa", "closed")]


def test_dask_breaker_opens_on_a_lost_cluster_pauses_cluster_stages_then_closes(
        tmp_path: Path) -> None:
    """The orchestrator's breakers on a lost cluster (a fake failure: the error
    ``on_cluster`` raises when the scheduler is gone; the real one is in
    tests/e2e/test_cluster.py): ``dask`` opens after ``fail_max`` of them and nothing else
    does, every stage (all need the cluster) is paused, the ``breaker`` events are in the
    state store, and one good trial closes it."""
    config = make_config(tmp_path, **{"pipeline.breaker.fail_max": 2,
                                      "pipeline.breaker.reset_timeout_s": 0.5})
    lost = ClusterUnavailableError("the Dask client is closed: no scheduler to run flag on",
                                   stage="flag")
    with Pipeline(config) as pipeline:
        deps = pipeline._deps("flag")
        assert "dask" in deps and "flag" in pipeline._claimable()
        for _ in range(2):
            with pytest.raises(ClusterUnavailableError):
                pipeline.breakers.call(deps, lambda: _raise(lost))
        assert [pipeline.breakers.state(n) for n in ("dask", "disk", "casa")] == [
            "open", "closed", "closed"]
        assert pipeline._claimable() == []
        # What the dashboard reads: the health line red, the breaker_open alert's metric.
        tail = EventTail(pipeline.state, 100)
        tail.update()
        assert check_breaker(tail, DASK_BREAKER).status == RED
        assert tail.open_breakers() == ["dask"]
        time.sleep(0.55)
        assert "flag" in pipeline._claimable()
        assert pipeline.breakers.call(deps, lambda: "trial") == "trial"
        assert pipeline.breakers.state("dask") == "closed"
        tail.update()
        assert check_breaker(tail, DASK_BREAKER).status == GREEN and not tail.open_breakers()
        events = [(e.data["name"], e.data["state"]) for e in pipeline.state.events(count=100)
                  if e.kind == "breaker"]
    assert events == [("dask", "open"), ("dask", "half_open"), ("dask", "closed")]


def test_retries_transient_failures_only_recording_each_retried_one() -> None:
    config = RetryConfig(attempts=3, initial_s=0.01, max_s=0.02, jitter_s=0.01)
    retried: list[BaseException] = []
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise CasaError(f"crash {len(calls)}")
        return "ok"

    for attempt in retrying(config, "test", retried.append):
        with attempt:
            result = flaky()
    assert result == "ok" and len(calls) == 3
    assert [str(e) for e in retried] == ["crash 1", "crash 2"]
    calls.clear()
    with pytest.raises(InputError):
        for attempt in retrying(config, "test", retried.append):
            with attempt:
                calls.append(1)
                raise InputError("truncated")
    assert len(calls) == 1 and len(retried) == 2  # permanent: not retried


def test_free_space_guard_measures_like_statvfs_and_refuses_below_the_limit(
        tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    expected = st.f_bavail / st.f_blocks
    free = check_free_space([tmp_path / "not" / "yet"], 0.0)
    assert free == pytest.approx(expected, abs=0.01)
    with pytest.raises(DiskSpaceError) as caught:
        check_free_space([tmp_path], min(1.0, expected + 0.05))
    assert caught.value.transient and caught.value.file == str(tmp_path)
    assert "pipeline.min_free_fraction" in str(caught.value)


def test_recipe_overrides_are_validated_and_unknown_stages_skipped(
        config: PipelineConfig) -> None:
    changed = with_overrides(config, {"imaging.niter": 7, "casa.task_timeout_s": 9.0})
    assert (changed.imaging.niter, changed.casa.task_timeout_s) == (7, 9.0)
    assert changed.flagging == config.flagging
    with pytest.raises(ConfigError, match="imaging"):
        with_overrides(config, {"imaging.niter": -1})
    with pytest.raises(ConfigError):
        with_overrides(config, {"imaging.no_such_key": 1})
    steps = [{"stage": "ingest"}, {"stage": "no_such_stage"}, {"stage": "flag"}]
    odd = with_overrides(config, {"pipeline.recipes.target": steps})
    assert [s.stage for s in recipe(odd, TARGET)] == ["ingest", "flag"]
    assert "no_such_stage" in log_skipped_stages(odd)
    assert recipe(odd, CALIBRATOR) == recipe(config, CALIBRATOR)
    with pytest.raises(ConfigError, match="same stage"):
        with_overrides(config, {"pipeline.recipes.target": [{"stage": "flag"}]})
