"""Shared fixtures: every test starts and ends with an empty handler table; one StatsD daemon
serves the tests that need one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from radiosonde import events
from tests.servers import StatsDDaemon


@pytest.fixture(autouse=True)
def _clean_event_core() -> Iterator[None]:
    events._reset_for_tests()
    yield
    events._reset_for_tests()


@pytest.fixture(scope="session")
def statsd_daemon() -> Iterator[StatsDDaemon]:
    """The npm StatsD daemon on loopback, started once (fails under CI=true when missing)."""
    with StatsDDaemon() as daemon:
        yield daemon


@pytest.fixture
def statsd(statsd_daemon: StatsDDaemon) -> Iterator[StatsDDaemon]:
    """The daemon, emptied; the test fails if the daemon rejected any line it was sent."""
    statsd_daemon.reset()
    bad_before = statsd_daemon.bad_lines()
    yield statsd_daemon
    assert statsd_daemon.bad_lines() == bad_before, statsd_daemon.log_text()[-2000:]
