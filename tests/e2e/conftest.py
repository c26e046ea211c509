"""Fixtures of the end-to-end tests: the session's real ``redis-server`` (tests/state)."""

from tests.state.conftest import redis_server  # noqa: F401 (a fixture, shared by the session)
