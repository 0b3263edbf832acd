"""radiosonde's pytest plugin: the ``radiosonde_events`` fixture (registered via entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from radiosonde.events import EventNameLike, detach
from radiosonde.testing import CapturedEvents, start_capture


@pytest.fixture
def radiosonde_events() -> Iterator[Callable[..., CapturedEvents]]:
    """Start recording events for the rest of the test: ``events = radiosonde_events("app.*")``.

    Each call attaches a recorder for the given names (all events when none) and returns the
    list it fills; every recorder is detached when the test ends.
    """
    handler_ids: list[str] = []

    def capture(*events: EventNameLike) -> CapturedEvents:
        handler_id, captured = start_capture(*events)
        handler_ids.append(handler_id)
        return captured

    yield capture
    for handler_id in handler_ids:
        detach(handler_id)
