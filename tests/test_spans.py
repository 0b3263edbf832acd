"""Spans: start/stop/exception events, span contexts across threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import traceback
from typing import Any

import pytest

import radiosonde
from radiosonde.testing import CapturedEvents, capture_events, start_capture

PREFIX = ("app", "work")
START, STOP, EXCEPTION = (*PREFIX, "start"), (*PREFIX, "stop"), (*PREFIX, "exception")


def spans_by_context(events: CapturedEvents) -> dict[int, dict[str, Any]]:
    """The start metadata of every span recorded, by its telemetry_span_context."""
    return {
        e.metadata["telemetry_span_context"]: e.metadata for e in events if e.event[-1] == "start"
    }


def test_with_emits_start_then_stop() -> None:
    with capture_events("app.*") as events, radiosonde.span(PREFIX, {"user": 7}) as span:
        assert events.names() == [START]
        span.metadata["rows"] = 3
        span.measurements["bytes"] = 120

    assert events.names() == [START, STOP]
    start, stop = events
    assert set(start.measurements) == {"monotonic_time", "system_time"}
    assert all(type(v) is int for v in start.measurements.values())
    assert start.metadata == {
        "user": 7,
        "telemetry_span_context": span.context,
        "parent_span_context": None,
    }
    assert stop.measurements["duration"] >= 0
    assert type(stop.measurements["duration"]) is int
    assert stop.measurements["monotonic_time"] >= start.measurements["monotonic_time"]
    assert stop.measurements["duration"] == (
        stop.measurements["monotonic_time"] - start.measurements["monotonic_time"]
    )
    assert stop.measurements["bytes"] == 120
    assert stop.metadata == {
        "user": 7,
        "rows": 3,
        "telemetry_span_context": span.context,
        "parent_span_context": None,
    }


def test_dotted_prefix() -> None:
    with capture_events() as events, radiosonde.span("app.work"):
        pass
    assert events.names() == [START, STOP]


def test_exception_event_then_reraise() -> None:
    with (
        capture_events("app.*") as events,
        pytest.raises(KeyError, match="missing"),
        radiosonde.span(PREFIX) as span,
    ):
        span.metadata["step"] = "lookup"
        span.measurements["ignored"] = 1
        {}["missing"]

    assert events.names() == [START, EXCEPTION]
    exception = events[1]
    assert set(exception.measurements) == {"duration", "monotonic_time"}
    assert exception.metadata["kind"] is KeyError
    assert isinstance(exception.metadata["reason"], KeyError)
    assert isinstance(exception.metadata["stacktrace"], traceback.StackSummary)
    assert exception.metadata["stacktrace"][-1].name == "test_exception_event_then_reraise"
    assert exception.metadata["step"] == "lookup"
    assert exception.metadata["telemetry_span_context"] == span.context


def test_exception_is_reraised_when_nothing_listens() -> None:
    with pytest.raises(ZeroDivisionError), radiosonde.span(PREFIX):
        1 / 0  # noqa: B018


def test_async_with() -> None:
    async def main() -> int | None:
        async with radiosonde.span(PREFIX):
            await asyncio.sleep(0)
            return radiosonde.current_span_context()

    with capture_events("app.*") as events:
        inside = asyncio.run(main())
    assert events.names() == [START, STOP]
    assert inside == events[0].metadata["telemetry_span_context"]
    assert radiosonde.current_span_context() is None


def test_sync_decorator() -> None:
    @radiosonde.span(PREFIX, {"fixed": True})
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    with capture_events("app.*") as events:
        assert add(1, 2) == 3
        assert add(3, 4) == 7
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert events.names() == [START, STOP, START, STOP]
    assert all(e.metadata["fixed"] is True for e in events)
    first, second = events[0].metadata, events[2].metadata
    assert first["telemetry_span_context"] != second["telemetry_span_context"]


def test_async_decorator_and_exceptions() -> None:
    @radiosonde.span("app.work")
    async def fetch(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise LookupError("nope")
        return "ok"

    with capture_events("app.*") as events:
        assert asyncio.run(fetch(False)) == "ok"
        with pytest.raises(LookupError):
            asyncio.run(fetch(True))
    assert events.names() == [START, STOP, START, EXCEPTION]
    assert events[3].metadata["kind"] is LookupError


def test_decorating_a_generator_function_is_refused() -> None:
    with pytest.raises(TypeError, match="generator"):

        @radiosonde.span(PREFIX)
        def gen() -> Any:
            yield 1


@pytest.mark.parametrize("bad", ["", ("app", ""), "app.*", ("app", 1), None])
def test_invalid_prefix(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"span prefix|invalid event name"):
        radiosonde.span(bad)


def test_span_contexts_are_unique() -> None:
    with capture_events("app.*") as events:
        for _ in range(200):
            with radiosonde.span(PREFIX):
                pass
    contexts = [e.metadata["telemetry_span_context"] for e in events.named(START)]
    assert len(set(contexts)) == 200


def test_nested_spans_name_their_parent() -> None:
    with capture_events("app.*") as events, radiosonde.span("app.outer") as outer:
        assert radiosonde.current_span_context() == outer.context
        with radiosonde.span("app.inner") as inner:
            assert radiosonde.current_span_context() == inner.context
        assert radiosonde.current_span_context() == outer.context
    assert radiosonde.current_span_context() is None
    assert inner.parent == outer.context
    assert outer.parent is None
    by_name = {e.event: e.metadata for e in events}
    assert by_name[("app", "inner", "start")]["parent_span_context"] == outer.context
    assert by_name[("app", "inner", "stop")]["parent_span_context"] == outer.context
    assert by_name[("app", "outer", "stop")]["parent_span_context"] is None


def test_asyncio_gather_children_see_the_parent_not_their_siblings() -> None:
    async def child(name: str) -> int | None:
        async with radiosonde.span(("app", name)):
            await asyncio.sleep(0.01)  # both children are open at the same time
            async with radiosonde.span(("app", name, "leaf")):
                await asyncio.sleep(0)
            return radiosonde.current_span_context()

    async def main() -> tuple[int, list[int | None]]:
        async with radiosonde.span("app.parent") as parent:
            results = await asyncio.gather(child("a"), child("b"))
        return parent.context, results

    with capture_events("app.*") as events:
        parent, (a, b) = asyncio.run(main())

    spans = spans_by_context(events)
    assert spans[a]["parent_span_context"] == parent
    assert spans[b]["parent_span_context"] == parent
    leaves = {
        e.metadata["parent_span_context"] for e in events if e.event[-2:] == ("leaf", "start")
    }
    assert leaves == {a, b}  # each leaf under its own child, never under the sibling


def test_asyncio_to_thread_keeps_the_parent() -> None:
    def in_thread() -> int | None:
        with radiosonde.span("app.threaded") as span:
            return span.parent

    async def main() -> tuple[int, int | None]:
        with radiosonde.span("app.parent") as parent:
            return parent.context, await asyncio.to_thread(in_thread)

    with capture_events("app.*"):
        parent, seen = asyncio.run(main())
    assert seen == parent


def test_plain_threads_start_without_a_span() -> None:
    seen: list[int | None] = []

    def in_thread() -> None:
        seen.append(radiosonde.current_span_context())
        with radiosonde.span("app.threaded") as span:
            seen.append(span.parent)

    def in_copied_context() -> None:
        with radiosonde.span("app.copied") as span:
            seen.append(span.parent)

    with capture_events("app.*"), radiosonde.span("app.parent") as parent:
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(in_copied_context,))
        thread.start()
        thread.join()
    assert seen == [None, None, parent.context]


def test_a_silent_span_is_still_the_parent_of_observed_spans() -> None:
    # Nobody listens to app.outer.
    with capture_events("app.inner.*") as events, radiosonde.span("app.outer") as outer:
        outer_context = radiosonde.current_span_context()
        with radiosonde.span("app.inner"):
            pass
        with radiosonde.span("app.inner"):
            pass
    assert events.names() == [("app", "inner", "start"), ("app", "inner", "stop")] * 2
    assert outer_context is not None
    assert outer.context == outer_context
    assert {e.metadata["parent_span_context"] for e in events} == {outer_context}


def test_a_span_opened_while_nothing_listens_stays_silent() -> None:
    with radiosonde.span(PREFIX):
        handler_id, events = start_capture("app.*")  # attached while the span is open
        with radiosonde.span("app.other"):  # opened after: recorded
            pass
    radiosonde.detach(handler_id)
    assert events.names() == [("app", "other", "start"), ("app", "other", "stop")]


def test_handlers_attached_to_stop_only_still_get_the_duration() -> None:
    with capture_events(STOP) as events, radiosonde.span(PREFIX):
        pass
    assert events.names() == [STOP]
    assert events[0].measurements["duration"] >= 0


def test_a_span_object_reused_gets_a_fresh_context() -> None:
    span = radiosonde.span(PREFIX)
    with capture_events("app.*") as events:
        with span:
            pass
        with span:
            pass
    first, second = (e.metadata["telemetry_span_context"] for e in events.named(START))
    assert first != second


def test_a_failing_span_handler_does_not_reach_the_body() -> None:
    def bad(*_: Any) -> None:
        raise RuntimeError("handler bug")

    radiosonde.attach_many("bad", [START, STOP], bad)
    with radiosonde.span(PREFIX):
        result = 42
    assert result == 42
    assert radiosonde.list_handlers() == []
