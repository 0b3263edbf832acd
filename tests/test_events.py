"""The event core: names, attach/detach, dispatch, prefix subscriptions, failures, threads."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import radiosonde
from radiosonde import events
from radiosonde.events import FAILURE_EVENT, HandlerExistsError, HandlerInfo

Call = tuple[tuple[str, ...], dict[str, Any], dict[str, Any], Any]


class Recorder:
    """A handler that records its calls."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(
        self,
        event: tuple[str, ...],
        measurements: dict[str, Any],
        metadata: dict[str, Any],
        config: Any,
    ) -> None:
        self.calls.append((event, measurements, metadata, config))

    @property
    def events(self) -> list[tuple[str, ...]]:
        return [call[0] for call in self.calls]


def failing(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    raise RuntimeError(f"boom on {'.'.join(event)}")


# -- names ---------------------------------------------------------------------------------


def test_tuple_and_dotted_names_are_the_same_event() -> None:
    rec = Recorder()
    radiosonde.attach("h", "famichat.message_service.get", rec, config={"k": 1})
    radiosonde.execute(("famichat", "message_service", "get"), {"duration": 5}, {"id": 7})
    radiosonde.execute("famichat.message_service.get", {"duration": 6})

    assert rec.calls == [
        (("famichat", "message_service", "get"), {"duration": 5}, {"id": 7}, {"k": 1}),
        (("famichat", "message_service", "get"), {"duration": 6}, {}, {"k": 1}),
    ]
    # Handlers always get the tuple form, even when the event was executed by its dotted name.
    assert all(type(call[0]) is tuple for call in rec.calls)


def test_none_measurements_and_metadata_arrive_as_empty_dicts() -> None:
    rec = Recorder()
    radiosonde.attach("h", ("a", "b"), rec)
    radiosonde.execute(("a", "b"))
    assert rec.calls == [(("a", "b"), {}, {}, None)]


@pytest.mark.parametrize(
    "bad",
    [(), "", ("a", ""), ("a", 1), "a..b", ".a", None, 42, ("*", "a"), "a.*.b", ["a", None]],
)
def test_invalid_names_raise_value_error_naming_the_value(bad: Any) -> None:
    with pytest.raises(ValueError, match="invalid event name") as info:
        radiosonde.attach("h", bad, Recorder())
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="invalid event name") as info:
        radiosonde.event_name(bad)
    assert repr(bad) in str(info.value)
    assert radiosonde.list_handlers() == []


parts = st.text(min_size=1, max_size=8).filter(lambda s: "." not in s and s != "*")


@given(st.lists(parts, min_size=1, max_size=5))
def test_event_name_is_canonical(name_parts: list[str]) -> None:
    name = tuple(name_parts)
    assert radiosonde.event_name(name) == name
    assert radiosonde.event_name(".".join(name_parts)) == name
    assert radiosonde.event_name((*name, "*")) == (*name, "*")


@given(st.lists(st.one_of(st.just(""), st.integers(), st.none()), min_size=1, max_size=3))
def test_event_name_rejects_non_string_or_empty_parts(bad_parts: list[Any]) -> None:
    with pytest.raises(ValueError, match="invalid event name"):
        radiosonde.event_name(("ok", *bad_parts))


def test_executing_an_invalid_name_reaches_nobody_and_is_counted() -> None:
    rec = Recorder()
    radiosonde.attach("all", "*", rec)
    radiosonde.execute(("a", ""))
    radiosonde.execute(("a", ""))  # counted every time, not only on first sight
    radiosonde.execute(42)  # type: ignore[arg-type]
    radiosonde.execute("a.*")  # a subscription pattern is not an event
    assert rec.calls == []
    assert events.stats()["invalid_events"] == 4


# -- attach, detach, list ------------------------------------------------------------------


def test_handlers_run_in_attachment_order_across_exact_and_prefix() -> None:
    order: list[str] = []

    def make(tag: str) -> Any:
        return lambda *_: order.append(tag)

    radiosonde.attach("first", ("app", "x"), make("first"))
    radiosonde.attach("second", ("app", "*"), make("second"))
    radiosonde.attach("third", ("app", "x"), make("third"))
    radiosonde.attach("fourth", "*", make("fourth"))
    radiosonde.execute(("app", "x"))
    assert order == ["first", "second", "third", "fourth"]


def test_attach_many_one_id_several_events() -> None:
    rec = Recorder()
    radiosonde.attach_many("h", [("a", "b"), "c.d", ("a", "b")], rec, config="cfg")
    radiosonde.execute(("a", "b"))
    radiosonde.execute(("c", "d"))
    radiosonde.execute(("e", "f"))
    assert rec.events == [("a", "b"), ("c", "d")]
    assert [(i.id, i.event, i.config) for i in radiosonde.list_handlers()] == [
        ("h", ("a", "b"), "cfg"),
        ("h", ("c", "d"), "cfg"),
    ]
    assert radiosonde.detach("h") is True
    radiosonde.execute(("c", "d"))
    assert len(rec.calls) == 2


@pytest.mark.parametrize("single", ["a.b", ("a", "b")])
def test_attach_many_rejects_a_single_name(single: Any) -> None:
    with pytest.raises(ValueError, match="single name"):
        radiosonde.attach_many("h", single, Recorder())


def test_attach_many_accepts_a_tuple_of_names_and_rejects_none() -> None:
    radiosonde.attach_many("h", (("a", "b"), "c.d"), Recorder())
    assert len(radiosonde.list_handlers()) == 2
    with pytest.raises(ValueError, match="at least one"):
        radiosonde.attach_many("g", [], Recorder())


def test_duplicate_handler_id_raises_and_keeps_the_first() -> None:
    first, second = Recorder(), Recorder()
    radiosonde.attach("h", ("a", "b"), first)
    with pytest.raises(HandlerExistsError, match="'h'"):
        radiosonde.attach("h", ("c", "d"), second)
    with pytest.raises(ValueError):  # HandlerExistsError is a ValueError
        radiosonde.attach_many("h", [("c", "d")], second)
    radiosonde.execute(("a", "b"))
    radiosonde.execute(("c", "d"))
    assert first.events == [("a", "b")]
    assert second.calls == []


def test_bad_handler_id_handler_or_on_error() -> None:
    with pytest.raises(ValueError, match="handler_id"):
        radiosonde.attach("", ("a",), Recorder())
    with pytest.raises(TypeError, match="callable"):
        radiosonde.attach("h", ("a",), "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        radiosonde.attach("h", ("a",), Recorder(), on_error="ignore")  # type: ignore[arg-type]


def test_detach_returns_whether_it_was_attached() -> None:
    radiosonde.attach("h", ("a",), Recorder())
    assert radiosonde.detach("h") is True
    assert radiosonde.detach("h") is False
    assert radiosonde.detach("never") is False
    radiosonde.attach("h", ("a",), Recorder())  # the id is free again
    assert radiosonde.detach("h") is True


def test_list_handlers_by_prefix() -> None:
    def fn(*_: Any) -> None:
        pass

    radiosonde.attach("q", ("app", "repo", "query"), fn, config=1)
    radiosonde.attach("all-app", ("app", "*"), fn)
    radiosonde.attach("other", ("other", "x"), fn)

    assert [i.id for i in radiosonde.list_handlers()] == ["q", "all-app", "other"]
    assert [i.id for i in radiosonde.list_handlers(())] == ["q", "all-app", "other"]
    assert [i.id for i in radiosonde.list_handlers(("app",))] == ["q", "all-app"]
    assert [i.id for i in radiosonde.list_handlers("app.*")] == ["q", "all-app"]
    assert [i.id for i in radiosonde.list_handlers("app.repo")] == ["q"]
    assert radiosonde.list_handlers(("nothing",)) == []
    assert radiosonde.list_handlers("app.repo.query") == [
        HandlerInfo("q", ("app", "repo", "query"), fn, 1)
    ]
    info = radiosonde.list_handlers("app")[1]
    assert (info.id, info.event, info.function, info.config) == ("all-app", ("app", "*"), fn, None)


# -- prefix subscriptions ------------------------------------------------------------------


def test_prefix_subscription_receives_events_under_the_prefix() -> None:
    rec = Recorder()
    radiosonde.attach("app", ("app", "*"), rec)
    for name in [("app", "x"), ("app", "x", "y"), ("app",), ("other", "x"), ("application", "x")]:
        radiosonde.execute(name)
    assert rec.events == [("app", "x"), ("app", "x", "y")]


def test_star_alone_receives_every_event() -> None:
    rec = Recorder()
    radiosonde.attach("all", "*", rec)
    radiosonde.execute(("a",))
    radiosonde.execute("b.c.d")
    assert rec.events == [("a",), ("b", "c", "d")]


def test_a_handler_reached_through_two_of_its_names_runs_once() -> None:
    rec = Recorder()
    radiosonde.attach_many("h", [("a", "*"), ("a", "b"), "*"], rec)
    radiosonde.execute(("a", "b"))
    assert rec.events == [("a", "b")]


def test_resolved_cache_is_invalidated_by_attach_and_detach() -> None:
    rec = Recorder()
    radiosonde.execute(("app", "x"))  # resolved and cached: nobody listens
    radiosonde.attach("app", ("app", "*"), rec)
    radiosonde.execute(("app", "x"))
    assert rec.events == [("app", "x")]
    radiosonde.detach("app")
    radiosonde.execute(("app", "x"))
    assert rec.events == [("app", "x")]


def test_resolved_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "RESOLVED_CACHE_LIMIT", 8)
    rec = Recorder()
    radiosonde.attach("app", ("app", "*"), rec)
    for i in range(100):
        radiosonde.execute(("app", f"event{i}"))
        assert len(events._cache) <= 8
    assert len(rec.calls) == 100


# -- handler failures ----------------------------------------------------------------------


def test_failing_handler_is_detached_logged_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures, after = Recorder(), Recorder()
    radiosonde.attach("failures", FAILURE_EVENT, failures)
    radiosonde.attach("bad", ("app", "x"), failing, config={"c": 1})
    radiosonde.attach("after", ("app", "x"), after)

    with caplog.at_level(logging.WARNING, logger="radiosonde"):
        radiosonde.execute(("app", "x"), {"n": 1})  # must not raise
    radiosonde.execute(("app", "x"), {"n": 2})

    assert [c[1] for c in after.calls] == [{"n": 1}, {"n": 2}]  # the others still run
    assert [i.id for i in radiosonde.list_handlers()] == ["failures", "after"]
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.levelno == logging.WARNING and record.name == "radiosonde"
    assert "'bad'" in record.getMessage() and "detached" in record.getMessage()
    assert "boom on app.x" in record.getMessage()

    [(event, measurements, metadata, _)] = failures.calls
    assert event == FAILURE_EVENT
    assert set(measurements) == {"monotonic_time", "system_time"}
    assert all(type(v) is int for v in measurements.values())
    assert metadata["event_name"] == ("app", "x")
    assert metadata["handler_id"] == "bad"
    assert metadata["handler_config"] == {"c": 1}
    assert metadata["kind"] is RuntimeError
    assert isinstance(metadata["reason"], RuntimeError)
    assert str(metadata["reason"]) == "boom on app.x"
    assert isinstance(metadata["stacktrace"], traceback.StackSummary)
    assert metadata["stacktrace"][-1].name == "failing"
    stats = events.stats()
    assert stats["handler_failures"] == 1
    assert stats["handlers_detached"] == 1


def test_failing_handler_is_detached_from_all_its_events() -> None:
    radiosonde.attach_many("bad", [("a",), ("b",)], failing)
    radiosonde.execute(("a",))
    assert radiosonde.list_handlers() == []


def test_on_error_keep_keeps_the_handler_and_rate_limits_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = Recorder()
    radiosonde.attach("failures", FAILURE_EVENT, failures)
    radiosonde.attach("flaky", ("app", "x"), failing, on_error="keep")
    with caplog.at_level(logging.WARNING, logger="radiosonde"):
        for _ in range(5):
            radiosonde.execute(("app", "x"))
        assert len(caplog.records) == 1
        assert "kept attached" in caplog.records[0].getMessage()

        monkeypatch.setattr(events, "_KEEP_LOG_INTERVAL_S", 0.0)
        radiosonde.execute(("app", "x"))
        assert len(caplog.records) == 2
        assert "4 more failures" in caplog.records[1].getMessage()

    assert [i.id for i in radiosonde.list_handlers()] == ["failures", "flaky"]
    assert len(failures.calls) == 6  # the failure event is emitted every time
    assert events.stats()["handler_failures"] == 6
    assert events.stats()["handlers_detached"] == 0


def test_a_failing_failure_handler_does_not_loop() -> None:
    calls: list[tuple[str, ...]] = []

    def bad_failure_handler(event: Any, *_: Any) -> None:
        calls.append(event)
        raise ValueError("failure handler fails too")

    radiosonde.attach("bad-failures", FAILURE_EVENT, bad_failure_handler, on_error="keep")
    radiosonde.attach("bad", ("app", "x"), failing, on_error="keep")
    for _ in range(3):
        radiosonde.execute(("app", "x"))
    assert calls == [FAILURE_EVENT] * 3
    assert events.stats()["handler_failures"] == 6


def test_a_failing_catch_all_handler_does_not_loop() -> None:
    calls: list[tuple[str, ...]] = []

    def bad_everywhere(event: Any, *_: Any) -> None:
        calls.append(event)
        raise ValueError("fails on everything")

    radiosonde.attach("everything", "*", bad_everywhere, on_error="keep")
    radiosonde.execute(("app", "x"))
    assert calls == [("app", "x"), FAILURE_EVENT]


def test_a_failure_does_not_detach_a_handler_attached_anew_under_the_same_id() -> None:
    fresh = Recorder()

    def reattaching(*_: Any) -> None:
        radiosonde.detach("h")
        radiosonde.attach("h", ("app", "x"), fresh)
        raise RuntimeError("fails after replacing itself")

    radiosonde.attach("h", ("app", "x"), reattaching)
    radiosonde.execute(("app", "x"))
    assert [i.function for i in radiosonde.list_handlers()] == [fresh]
    radiosonde.execute(("app", "x"))
    assert len(fresh.calls) == 1


def test_base_exceptions_propagate_and_leave_the_handler_usable() -> None:
    calls = 0

    def interrupted(*_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls <= events._SHALLOW_CALLS + 1:
            raise KeyboardInterrupt

    radiosonde.attach("h", ("a",), interrupted)
    for _ in range(events._SHALLOW_CALLS + 1):
        with pytest.raises(KeyboardInterrupt):
            radiosonde.execute(("a",))
    radiosonde.execute(("a",))
    assert calls == events._SHALLOW_CALLS + 2
    assert [i.id for i in radiosonde.list_handlers()] == ["h"]
    # The in-flight count was restored each time, so the handler still takes the direct path.
    attachment, _infos = events._registry.by_id["h"]
    assert attachment.active == 0


# -- re-entrancy ---------------------------------------------------------------------------


def test_a_handler_executing_its_own_event_is_bounded_and_counted() -> None:
    depth = 0

    def recursive(event: Any, *_: Any) -> None:
        nonlocal depth
        depth += 1
        radiosonde.execute(event)

    radiosonde.attach("rec", ("app", "loop"), recursive, on_error="keep")
    radiosonde.execute(("app", "loop"))  # returns, does not raise RecursionError
    assert depth == events.MAX_DISPATCH_DEPTH
    assert events.stats()["dropped_reentrant"] == 1
    assert events.stats()["handler_failures"] == 0
    # Nothing is left over: the next dispatch gets the same full depth.
    depth = 0
    radiosonde.execute(("app", "loop"))
    assert depth == events.MAX_DISPATCH_DEPTH


def test_a_cycle_between_two_handlers_is_bounded() -> None:
    calls = 0

    def ping(*_: Any) -> None:
        nonlocal calls
        calls += 1
        radiosonde.execute(("app", "pong"))

    def pong(*_: Any) -> None:
        nonlocal calls
        calls += 1
        radiosonde.execute(("app", "ping"))

    radiosonde.attach("ping", ("app", "ping"), ping)
    radiosonde.attach("pong", ("app", "pong"), pong)
    radiosonde.execute(("app", "ping"))
    assert calls <= 2 * events.MAX_DISPATCH_DEPTH
    assert events.stats()["dropped_reentrant"] == 1


def test_a_handler_executing_another_event_works() -> None:
    rec = Recorder()

    def forward(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        radiosonde.execute(("app", "forwarded"), {"from": event}, metadata)

    radiosonde.attach("forward", ("app", "x"), forward)
    radiosonde.attach("rec", ("app", "forwarded"), rec)
    radiosonde.execute(("app", "x"), {}, {"m": 1})
    assert rec.calls == [(("app", "forwarded"), {"from": ("app", "x")}, {"m": 1}, None)]
    assert events.stats()["dropped_reentrant"] == 0


def test_many_threads_in_one_handler_at_once_are_not_mistaken_for_recursion() -> None:
    threads = events._SHALLOW_CALLS * 2
    barrier = threading.Barrier(threads, timeout=10)
    calls = 0
    lock = threading.Lock()

    def waiting(*_: Any) -> None:
        nonlocal calls
        barrier.wait()  # every thread is inside the handler at the same time
        with lock:
            calls += 1

    radiosonde.attach("h", ("app", "x"), waiting)
    workers = [
        threading.Thread(target=radiosonde.execute, args=(("app", "x"),)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    assert calls == threads
    assert events.stats()["dropped_reentrant"] == 0
    assert events.stats()["handler_failures"] == 0


# -- attach/detach from inside a handler ---------------------------------------------------


def test_detach_inside_a_handler_takes_effect_from_the_next_execute() -> None:
    second = Recorder()

    def detach_second(*_: Any) -> None:
        radiosonde.detach("second")

    radiosonde.attach("first", ("app", "x"), detach_second)
    radiosonde.attach("second", ("app", "x"), second)
    radiosonde.execute(("app", "x"))
    assert len(second.calls) == 1  # the running dispatch still had it
    radiosonde.execute(("app", "x"))
    assert len(second.calls) == 1


def test_attach_inside_a_handler_takes_effect_from_the_next_execute() -> None:
    late = Recorder()

    def attach_late(*_: Any) -> None:
        if not radiosonde.list_handlers("app.x.late"):
            radiosonde.attach("late", ("app", "*"), late)

    radiosonde.attach("first", ("app", "x"), attach_late)
    radiosonde.execute(("app", "x"))
    assert late.calls == []
    radiosonde.execute(("app", "x"))
    assert late.events == [("app", "x")]


def test_a_handler_can_detach_itself() -> None:
    calls = 0

    def once(*_: Any) -> None:
        nonlocal calls
        calls += 1
        radiosonde.detach("once")

    radiosonde.attach("once", ("app", "x"), once)
    radiosonde.execute(("app", "x"))
    radiosonde.execute(("app", "x"))
    assert calls == 1


# -- threads -------------------------------------------------------------------------------


def test_four_threads_execute_while_others_attach_and_detach() -> None:
    per_thread = 5_000
    count = 0
    count_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    event = ("app", "stress")

    def counting(*_: Any) -> None:
        nonlocal count
        with count_lock:
            count += 1

    def work() -> None:
        try:
            for i in range(per_thread):
                radiosonde.execute(event, {"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def churn(tag: str) -> None:
        try:
            i = 0
            while not stop.is_set():
                handler_id = f"churn-{tag}-{i % 4}"
                radiosonde.detach(handler_id)
                name = event if i % 2 else ("app", "*")
                radiosonde.attach(handler_id, name, lambda *_: None)
                radiosonde.list_handlers("app")
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    radiosonde.attach("counter", event, counting)
    churners = [threading.Thread(target=churn, args=(str(n),)) for n in range(2)]
    workers = [threading.Thread(target=work) for _ in range(4)]
    for thread in churners + workers:
        thread.start()
    for worker in workers:
        worker.join(timeout=60)
    stop.set()
    for churner in churners:
        churner.join(timeout=60)

    assert errors == []
    assert count == 4 * per_thread
    assert events.stats()["handler_failures"] == 0
    assert [i.id for i in radiosonde.list_handlers() if i.id == "counter"] == ["counter"]


def test_stats_is_a_copy() -> None:
    snapshot = events.stats()
    snapshot["handler_failures"] = 99
    assert events.stats()["handler_failures"] == 0


def test_has_handlers_follows_exact_and_prefix_attachments() -> None:
    assert events.has_handlers(("app", "x")) is False
    radiosonde.attach("app", "app.*", Recorder())
    assert events.has_handlers(("app", "x")) is True
    assert events.has_handlers("app.x.y") is True
    assert events.has_handlers(("other", "x")) is False
    radiosonde.detach("app")
    assert events.has_handlers(("app", "x")) is False
