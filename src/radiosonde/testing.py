"""Helpers for testing your own instrumentation.

>>> with capture_events(("myapp", "*")) as events:
...     run_the_code_under_test()
>>> assert events.names() == [("myapp", "repo", "query")]

With pytest, the ``radiosonde_events`` fixture (registered by radiosonde's pytest plugin)
does the same for the whole test: ``events = radiosonde_events("myapp.*")``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from radiosonde.events import EventName, EventNameLike, attach_many, detach, event_name

__all__ = ["CapturedEvent", "CapturedEvents", "capture_events", "start_capture"]

_ids = itertools.count(1)


class CapturedEvent(NamedTuple):
    """One recorded event; compares equal to the plain ``(event, measurements, metadata)``."""

    event: EventName
    measurements: dict[str, Any]
    metadata: dict[str, Any]


class CapturedEvents(list[CapturedEvent]):
    """The events recorded so far, in the order they were executed (a list, thread-safe appends)."""

    def names(self) -> list[EventName]:
        """The names of the recorded events, in order."""
        return [captured.event for captured in self]

    def named(self, event: EventNameLike) -> list[CapturedEvent]:
        """The recorded events with exactly this name."""
        wanted = event_name(event)
        return [captured for captured in self if captured.event == wanted]


def start_capture(*events: EventNameLike) -> tuple[str, CapturedEvents]:
    """Attach a recorder and return ``(handler_id, events)``; :func:`detach` the id to stop.

    No names means every event. Names may be prefixes (``"myapp.*"``). Measurements and metadata
    are copied (shallowly) when recorded, so later changes to them do not show.
    """
    names = [event_name(e) for e in events] or [("*",)]
    captured = CapturedEvents()
    lock = threading.Lock()

    def record(
        event: EventName, measurements: dict[str, Any], metadata: dict[str, Any], _config: Any
    ) -> None:
        item = CapturedEvent(event, dict(measurements), dict(metadata))
        with lock:
            captured.append(item)

    handler_id = f"radiosonde.testing.capture-{next(_ids)}"
    attach_many(handler_id, names, record, on_error="keep")
    return handler_id, captured


@contextmanager
def capture_events(*events: EventNameLike) -> Iterator[CapturedEvents]:
    """Record the events executed inside the ``with`` block (all of them when no name is given)."""
    handler_id, captured = start_capture(*events)
    try:
        yield captured
    finally:
        detach(handler_id)
