"""Recovery policies: retries with backoff and jitter (tenacity), a circuit breaker per
dependency (pybreaker), and the free-space guard before work that writes.

Which dependency a failure belongs to follows from its class: a CASA failure
(:class:`~contimg_dask.errors.ExternalToolError`) counts against ``casa``, an unreachable
state store (:class:`~contimg_dask.errors.StateUnavailableError`) against ``state``, a
transient write failure (:class:`~contimg_dask.errors.OutputError`, ``OSError``) against
``disk``, a lost Dask cluster (the scheduler gone, workers dying:
:class:`~contimg_dask.pipeline.cluster.ClusterUnavailableError`) against ``dask``. Permanent
failures (bad input, a bug) never open a breaker: they say nothing about the dependency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pybreaker
import tenacity

from contimg_dask.config.schema import BreakerConfig, RetryConfig
from contimg_dask.errors import (
    ContimgError,
    ExternalToolError,
    OutputError,
    StateUnavailableError,
)
from contimg_dask.logs import get_logger
from contimg_dask.monitoring.signals import disk_free_fraction
from contimg_dask.pipeline.cluster import ClusterUnavailableError

log = get_logger(__name__)
T = TypeVar("T")

DEPENDENCIES = ("casa", "state", "disk", "dask")
#: pybreaker's state names to the shared vocabulary's (``breaker`` events).
STATE_NAMES = {"closed": "closed", "open": "open", "half-open": "half_open"}


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: a ContimgError's own flag; an OSError (I/O) and an open
    breaker's refusal are transient; anything else (a bug) is not."""
    if isinstance(exc, ContimgError):
        return exc.transient
    return isinstance(exc, OSError | pybreaker.CircuitBreakerError)


def _belongs_to(dependency: str) -> Callable[[BaseException], bool]:
    def belongs(exc: BaseException) -> bool:
        if not is_transient(exc):
            return False
        if dependency == "casa":
            return isinstance(exc, ExternalToolError)
        if dependency == "state":
            return isinstance(exc, StateUnavailableError)
        if dependency == "dask":
            return isinstance(exc, ClusterUnavailableError)
        return isinstance(exc, OutputError | OSError)
    return belongs


class DiskSpaceError(OutputError):
    """Free space on a products file system is below ``pipeline.min_free_fraction``: the
    stage is refused before writing. Transient (space may be freed)."""

    transient = True


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: Callable[[str, str], None]) -> None:
        self.on_change = on_change

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any,
                     new_state: Any) -> None:
        name = STATE_NAMES.get(new_state.name, new_state.name)
        log.warning("circuit breaker %s: %s -> %s", cb.name,
                    getattr(old_state, "name", None), name)
        self.on_change(cb.name, name)


class Breakers:
    """One pybreaker ``CircuitBreaker`` per dependency; ``on_change(name, state)`` is called
    on every state change (the orchestrator emits a ``breaker`` event).

    A call through several breakers counts, for each, as a failure when it failed because
    of that dependency, as a success when it succeeded, and not at all when it failed for
    another reason (a full disk says nothing about CASA, bad input nothing about either).
    """

    def __init__(self, config: BreakerConfig,
                 on_change: Callable[[str, str], None] = lambda name, state: None) -> None:
        listener = _Listener(on_change)
        self.breakers = {
            name: pybreaker.CircuitBreaker(
                fail_max=config.fail_max, reset_timeout=config.reset_timeout_s, name=name,
                listeners=[listener], throw_new_error_on_trip=False)
            for name in DEPENDENCIES}

    def state(self, name: str) -> str:
        """``closed``, ``open`` or ``half_open``."""
        return STATE_NAMES[self.breakers[name].current_state]

    def seconds_until_trial(self, names: Iterable[str]) -> float:
        """Seconds until every breaker of ``names`` lets a call through (0: now)."""
        wait = 0.0
        now = datetime.now(UTC)
        for name in names:
            cb = self.breakers[name]
            opened = cb._state_storage.opened_at  # pybreaker keeps it there; no public getter
            if cb.current_state == "open" and opened is not None:
                left = opened + timedelta(seconds=cb.reset_timeout) - now
                wait = max(wait, left.total_seconds())
        return wait

    def available(self, names: Iterable[str]) -> bool:
        """Whether work behind ``names`` may be started now (closed, half-open, or open
        with its reset timeout elapsed: the next call is the trial)."""
        return self.seconds_until_trial(names) <= 0

    def _record(self, name: str, exc: BaseException | None) -> None:
        def outcome() -> None:
            if exc is not None:
                raise exc

        try:
            self.breakers[name].call(outcome)
        except BaseException as raised:  # the recorded failure itself, or a refusal
            if raised is not exc and not isinstance(raised, pybreaker.CircuitBreakerError):
                raise

    def call(self, names: Iterable[str], func: Callable[[], T]) -> T:
        """``func()`` behind the breakers of ``names`` (see the class docstring).

        Raises
        ------
        pybreaker.CircuitBreakerError
            One of the breakers is open and its reset timeout has not elapsed.
        """
        names = list(names)
        if not self.available(names):
            blocked = [n for n in names if not self.available([n])]
            raise pybreaker.CircuitBreakerError(f"circuit breaker {blocked[0]} is open")
        try:
            result = func()
        except BaseException as exc:
            for name in names:
                if _belongs_to(name)(exc):
                    self._record(name, exc)
            raise
        for name in names:
            self._record(name, None)
        return result


def retrying(config: RetryConfig, describe: str,
             on_retry: Callable[[BaseException], None] = lambda exc: None
             ) -> tenacity.Retrying:
    """Retry transient failures with exponential backoff and jitter (``pipeline.retry``);
    ``on_retry(exc)`` is called with each failure that will be retried (the orchestrator
    records it); the last failure is re-raised as it was."""
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying in %.1f s", describe,
                    state.attempt_number, exc, state.upcoming_sleep)
        if exc is not None:
            on_retry(exc)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(config.attempts),
        wait=tenacity.wait_exponential_jitter(multiplier=config.initial_s, max=config.max_s,
                                              jitter=config.jitter_s),
        retry=tenacity.retry_if_exception(is_transient), reraise=True,
        before_sleep=before_sleep)


def check_free_space(paths: Iterable[Path], min_free_fraction: float) -> float:
    """The lowest free fraction of ``paths``' file systems.

    Raises
    ------
    DiskSpaceError
        It is below ``min_free_fraction`` (names the path).
    """
    lowest, where = 1.0, None
    for path in paths:
        fraction = disk_free_fraction(path)
        if fraction < lowest:
            lowest, where = fraction, path
    if where is not None and lowest < min_free_fraction:
        raise DiskSpaceError(
            f"only {100 * lowest:.1f} % of the file system is free, below "
            f"pipeline.min_free_fraction = {100 * min_free_fraction:.1f} %: free space "
            "before more blocks are processed", file=where, key="pipeline.min_free_fraction")
    return lowest


def wait_for(seconds: float, stop: Callable[[], bool], step_s: float = 0.2) -> None:
    """Sleep ``seconds`` in steps, returning early once ``stop()``."""
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(min(step_s, max(0.0, end - time.monotonic())))
