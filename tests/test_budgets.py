"""radiosonde.budgets: timed operations against a budget, violations, the p95 monitor."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import radiosonde
from radiosonde import budgets, config, spans
from radiosonde.budgets import (
    EXCEEDED_EVENT,
    OBSERVATION_EVENT,
    RECOVERED_EVENT,
    STATUS_EVENT,
    VIOLATION_EVENT,
    BudgetMonitor,
    budget_metrics,
    emit_event,
    telemetry,
    violations,
    with_telemetry,
)
from radiosonde.redact import REDACTED
from radiosonde.reporters.prometheus import PrometheusReporter
from radiosonde.testing import CapturedEvents, capture_events
from tests._realserver import need_binary

MS = 1_000_000  # nanoseconds
OP = ("famichat", "message_service", "get_conversation_messages")
CANARIES = ("canary-password-1d4c", "canary-token-88f1", "canary-iv-0a0a")


class FakeClock:
    """Stands in for time.monotonic_ns in radiosonde.budgets; ``advance`` moves it."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, ms: float) -> None:
        self.ns += int(ms * MS)


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RADIOSONDE_PERFORMANCE_BUDGET_MS", raising=False)
    config._reset_for_tests()
    budgets._reset_for_tests()
    yield
    config._reset_for_tests()
    budgets._reset_for_tests()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budgets, "_monotonic_ns", fake)
    monkeypatch.setattr(spans, "_monotonic_ns", fake)
    return fake


def _taking(clock: FakeClock, ms: float, result: Any = None) -> Any:
    def work() -> Any:
        clock.advance(ms)
        return result

    return work


def _sensitive_metadata() -> dict[str, Any]:
    return {
        "conversation_id": "c-1",
        "user": {"id": 7, "password": CANARIES[0], "profile": [{"access_token": CANARIES[1]}]},
        "encryption": {"encryption_iv": CANARIES[2]},
        "headers": ("Authorization", f"Bearer {CANARIES[1]}"),
    }


# -- with_telemetry ----------------------------------------------------------------------------


def test_with_telemetry_times_the_call_like_a_span(clock: FakeClock) -> None:
    with capture_events(("famichat", "*")) as events:
        result = with_telemetry(OP, _taking(clock, 12, "messages"), {"conversation_id": "c-1"})
    assert result == "messages"
    assert events.names() == [(*OP, "start"), (*OP, "stop")]
    start, stop = events
    assert start.measurements["monotonic_time"] == stop.measurements["monotonic_time"] - 12 * MS
    assert stop.measurements["duration"] == 12 * MS
    assert stop.measurements["budget_ms"] == 200.0
    assert stop.metadata["conversation_id"] == "c-1"
    assert stop.metadata["budget_ms"] == 200.0
    assert stop.metadata["over_budget"] is False
    assert start.metadata["telemetry_span_context"] == stop.metadata["telemetry_span_context"]
    assert violations() == {}


def test_its_events_have_the_shape_of_span_events() -> None:
    with capture_events(("shape", "*")) as events:
        with radiosonde.span(("shape", "span"), {"k": 1}):
            pass
        with_telemetry(("shape", "budget"), lambda: None, {"k": 1})
        with pytest.raises(KeyError), radiosonde.span(("shape", "span"), {"k": 1}):
            raise KeyError("x")
        with pytest.raises(KeyError):
            with_telemetry(("shape", "budget"), _raise(KeyError("x")), {"k": 1})
    span_events = [e for e in events if e.event[1] == "span"]
    budget_events = [e for e in events if e.event[1] == "budget"]
    assert [e.event[-1] for e in span_events] == ["start", "stop", "start", "exception"]
    extra_measurements = {"budget_ms"}
    extra_metadata = {"budget_ms", "over_budget"}
    for plain, budgeted in zip(span_events, budget_events, strict=True):
        assert plain.event[-1] == budgeted.event[-1]
        wanted_measurements = set(plain.measurements)
        wanted_metadata = set(plain.metadata)
        if plain.event[-1] != "start":
            wanted_metadata |= extra_metadata
        if plain.event[-1] == "stop":  # a span's extra measurements go to stop only
            wanted_measurements |= extra_measurements
        assert set(budgeted.measurements) == wanted_measurements
        assert set(budgeted.metadata) == wanted_metadata


def _raise(exc: BaseException) -> Any:
    def fail() -> None:
        raise exc

    return fail


def test_an_exception_is_reported_and_re_raised(clock: FakeClock) -> None:
    def fail() -> None:
        clock.advance(300)
        raise ValueError("boom")

    with (
        capture_events(("famichat", "*"), VIOLATION_EVENT) as events,
        pytest.raises(ValueError, match="boom"),
    ):
        with_telemetry(OP, fail)
    assert events.names() == [(*OP, "start"), (*OP, "exception"), VIOLATION_EVENT]
    exception = events[1]
    assert exception.metadata["kind"] is ValueError
    assert str(exception.metadata["reason"]) == "boom"
    assert exception.metadata["over_budget"] is True
    assert exception.measurements["duration"] == 300 * MS
    assert violations() == {"famichat.message_service.get_conversation_messages": 1}


def test_the_span_context_is_nested_and_restored() -> None:
    with capture_events(("inner", "op", "start")) as events, radiosonde.span(("outer",)) as outer:
        with_telemetry(("inner", "op"), radiosonde.current_span_context)
        assert radiosonde.current_span_context() == outer.context
    assert events[0].metadata["parent_span_context"] == outer.context
    assert radiosonde.current_span_context() is None


def test_a_call_over_budget_is_marked_and_counted(clock: FakeClock) -> None:
    with capture_events((*OP, "stop"), VIOLATION_EVENT, OBSERVATION_EVENT) as events:
        with_telemetry(OP, _taking(clock, 60), performance_budget_ms=50)
        with_telemetry(OP, _taking(clock, 40), performance_budget_ms=50)
        with_telemetry(OP, _taking(clock, 51), performance_budget_ms=50)
    stops = events.named((*OP, "stop"))
    assert [e.metadata["over_budget"] for e in stops] == [True, False, True]
    assert all(e.measurements["budget_ms"] == 50.0 for e in stops)
    found = events.named(VIOLATION_EVENT)
    assert [e.measurements["duration"] for e in found] == [60 * MS, 51 * MS]
    assert all(e.metadata == {"event": ".".join(OP)} for e in found)
    assert all(e.measurements["count"] == 1 for e in found)
    observations = events.named(OBSERVATION_EVENT)
    assert [e.metadata["over_budget"] for e in observations] == [True, False, True]
    assert violations() == {".".join(OP): 2}


def test_exactly_on_budget_is_within_it(clock: FakeClock) -> None:
    with capture_events((*OP, "stop")) as events:
        with_telemetry(OP, _taking(clock, 200))
    assert events[0].metadata["over_budget"] is False


def test_the_default_budget_comes_from_the_configuration(clock: FakeClock) -> None:
    config.configure(performance_budget_ms=25)
    with capture_events((*OP, "stop")) as events:
        with_telemetry(OP, _taking(clock, 30))
    assert events[0].metadata["budget_ms"] == 25.0
    assert events[0].metadata["over_budget"] is True
    config.configure(performance_budget_ms=100)  # followed without restarting anything
    with capture_events((*OP, "stop")) as events:
        with_telemetry(OP, _taking(clock, 30))
    assert events[0].metadata["budget_ms"] == 100.0


def test_the_default_budget_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("RADIOSONDE_PERFORMANCE_BUDGET_MS", "75")
    with capture_events((*OP, "stop")) as events:
        with_telemetry(OP, _taking(clock, 1))
    assert events[0].metadata["budget_ms"] == 75.0


def test_an_invalid_environment_falls_back_to_200_ms_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RADIOSONDE_PERFORMANCE_BUDGET_MS", "fast")
    with capture_events((*OP, "stop")) as events, caplog.at_level(logging.ERROR):
        with_telemetry(OP, lambda: None)
        with_telemetry(OP, lambda: None)
    assert [e.metadata["budget_ms"] for e in events] == [200.0, 200.0]
    errors = [r for r in caplog.records if "RADIOSONDE_PERFORMANCE_BUDGET_MS" in r.getMessage()]
    assert len(errors) == 1


def test_a_budget_above_200_ms_is_warned_about_once_per_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="radiosonde.budgets"):
        with_telemetry(("slow", "a"), lambda: None, performance_budget_ms=500)
        with_telemetry(("slow", "a"), lambda: None, performance_budget_ms=800)
        with_telemetry(("slow", "b"), lambda: None, performance_budget_ms=201)
        with_telemetry(("slow", "c"), lambda: None, performance_budget_ms=200)
        emit_event(("slow", "a"), {}, {}, performance_budget_ms=300)
    warned = [r.getMessage() for r in caplog.records if "discouraged" in r.getMessage()]
    assert len(warned) == 2
    assert "slow.a" in warned[0] and "500" in warned[0]
    assert "slow.b" in warned[1]


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "50", True])
def test_an_invalid_budget_is_refused_before_the_call(bad: Any) -> None:
    called = []
    with pytest.raises(ValueError, match="performance_budget_ms"):
        with_telemetry(OP, lambda: called.append(1), performance_budget_ms=bad)
    assert called == []
    with pytest.raises(ValueError, match="performance_budget_ms"):
        telemetry(OP, performance_budget_ms=bad)


def test_an_invalid_event_name_is_refused() -> None:
    with pytest.raises(ValueError):
        with_telemetry(("a", ""), lambda: None)
    with pytest.raises(ValueError, match="prefix"):
        with_telemetry(("a", "*"), lambda: None)


def test_names_may_be_dotted_strings_or_lists() -> None:
    with capture_events(("dotted", "*")) as events:
        with_telemetry("dotted.op", lambda: None)
        with_telemetry(["dotted", "op"], lambda: None)  # type: ignore[arg-type]
    assert events.names() == [("dotted", "op", "start"), ("dotted", "op", "stop")] * 2


# -- sensitive metadata --------------------------------------------------------------------------


def _everything(events: CapturedEvents) -> str:
    return "".join(repr(e) for e in events)


def test_no_canary_reaches_any_handler_with_filter_sensitive_metadata(clock: FakeClock) -> None:
    received: list[str] = []

    def handler(event: Any, measurements: Any, metadata: Any, _config: Any) -> None:
        received.append(repr((event, measurements, metadata)))

    radiosonde.attach("test.everything", ("*",), handler)

    @telemetry(("app", "decorated"), _sensitive_metadata(), filter_sensitive_metadata=True)
    def decorated() -> None:
        clock.advance(500)

    @telemetry(("app", "decorated_async"), _sensitive_metadata(), filter_sensitive_metadata=True)
    async def decorated_async() -> None:
        clock.advance(500)

    async def lazily() -> None:
        clock.advance(500)

    monitor = BudgetMonitor(window_s=10).start()
    try:
        metadata = _sensitive_metadata()
        with_telemetry(
            ("app", "wrapped"), _taking(clock, 500), metadata, filter_sensitive_metadata=True
        )
        emit_event(
            ("app", "emitted"), {"duration": 500 * MS}, metadata, filter_sensitive_metadata=True
        )
        decorated()
        asyncio.run(decorated_async())
        asyncio.run(
            with_telemetry(
                ("app", "lazy"),
                lambda: lazily(),  # noqa: PLW0108  # a plain function returning a coroutine
                metadata,
                filter_sensitive_metadata=True,
            )
        )
        monitor.report()
    finally:
        monitor.stop()
    everything = "".join(received)
    assert len(received) >= 20  # start/stop, observations, violations, monitor events
    for canary in CANARIES:
        assert canary not in everything
    assert REDACTED in everything
    assert metadata == _sensitive_metadata()  # the caller's dict is untouched


def test_without_the_filter_metadata_reaches_handlers_as_given() -> None:
    with capture_events(("app", "*")) as events:
        with_telemetry(("app", "plain"), lambda: None, _sensitive_metadata())
    assert CANARIES[0] in _everything(events)


# -- emit_event --------------------------------------------------------------------------------


def test_emit_event_checks_a_duration_in_nanoseconds_or_milliseconds() -> None:
    measurements = {"duration": 250 * MS, "count": 3}
    with capture_events(("upload", "*"), VIOLATION_EVENT) as events:
        emit_event(("upload", "done"), measurements, {"kind": "image"})
        emit_event(("upload", "done"), {"duration_ms": 20.5}, None, performance_budget_ms=20)
        emit_event(("upload", "done"), {"count": 1}, {})
        emit_event(("upload", "done"), None, None)
    first, second, third, fourth = events.named(("upload", "done"))
    assert first.event == ("upload", "done")
    assert first.measurements == {"duration": 250 * MS, "count": 3, "budget_ms": 200.0}
    assert first.metadata == {"kind": "image", "budget_ms": 200.0, "over_budget": True}
    assert second.metadata["over_budget"] is True
    assert third.metadata["over_budget"] is False  # no duration, nothing to check
    assert fourth.measurements == {"budget_ms": 200.0}
    assert measurements == {"duration": 250 * MS, "count": 3}  # not modified
    assert [e.event for e in events].count(VIOLATION_EVENT) == 2
    assert violations() == {"upload.done": 2}


# -- the decorator ---------------------------------------------------------------------------


def test_the_decorator_on_a_plain_function(clock: FakeClock) -> None:
    @telemetry(OP, {"service": "messages"}, performance_budget_ms=50)
    def fetch(conversation_id: str, *, limit: int = 10) -> list[str]:
        """Fetch messages."""
        clock.advance(70)
        return [conversation_id] * limit

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch messages."
    with capture_events((*OP, "stop")) as events:
        assert fetch("c", limit=2) == ["c", "c"]
        fetch("d")
    assert [e.metadata["over_budget"] for e in events] == [True, True]
    assert events[0].metadata["service"] == "messages"
    assert (
        events[0].metadata["telemetry_span_context"] != events[1].metadata["telemetry_span_context"]
    )
    assert violations() == {".".join(OP): 2}


def test_the_decorator_on_an_async_function(clock: FakeClock) -> None:
    @telemetry(("chat", "send"), performance_budget_ms=10)
    async def send(body: str) -> str:
        with radiosonde.span(("chat", "send", "encrypt")):
            await asyncio.sleep(0)
        clock.advance(15)
        return body.upper()

    @telemetry(("chat", "broken"))
    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("down")

    with capture_events(("chat", "*")) as events:
        assert asyncio.run(send("hi")) == "HI"
        with pytest.raises(RuntimeError, match="down"):
            asyncio.run(broken())
    names = events.names()
    assert names == [
        ("chat", "send", "start"),
        ("chat", "send", "encrypt", "start"),
        ("chat", "send", "encrypt", "stop"),
        ("chat", "send", "stop"),
        ("chat", "broken", "start"),
        ("chat", "broken", "exception"),
    ]
    send_stop = events[3]
    assert send_stop.measurements["duration"] == 15 * MS
    assert send_stop.metadata["over_budget"] is True
    assert events[1].metadata["parent_span_context"] == events[0].metadata["telemetry_span_context"]
    assert events[5].metadata["kind"] is RuntimeError


def test_the_decorator_refuses_generator_functions() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        telemetry(("gen", "op"))(numbers)


def test_concurrent_async_calls_keep_their_own_span_context() -> None:
    @telemetry(("chat", "fanout"))
    async def one(i: int) -> int:
        await asyncio.sleep(0.001 * (3 - i))
        return radiosonde.current_span_context() or 0

    async def main() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(3)))

    with capture_events(("chat", "fanout", "stop")) as events:
        contexts = asyncio.run(main())
    assert len(set(contexts)) == 3
    assert sorted(contexts) == sorted(e.metadata["telemetry_span_context"] for e in events)


def test_with_telemetry_of_an_async_function_or_a_lambda_returning_a_coroutine(
    clock: FakeClock,
) -> None:
    async def fetch() -> str:
        await asyncio.sleep(0)
        clock.advance(30)
        return "ok"

    with capture_events(("lazy", "*")) as events:
        assert asyncio.run(with_telemetry(("lazy", "direct"), fetch)) == "ok"
        lazily = lambda: fetch()  # noqa: E731, PLW0108  # a plain function returning a coroutine
        assert asyncio.run(with_telemetry(("lazy", "lambda"), lazily)) == "ok"
    stops = [e for e in events if e.event[-1] == "stop"]
    # Both last until the coroutine completes, not until it is created.
    assert [e.measurements["duration"] for e in stops] == [30 * MS, 30 * MS]
    assert radiosonde.current_span_context() is None


# -- the monitor ---------------------------------------------------------------------------


class MonitorClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _monitor(**options: Any) -> tuple[BudgetMonitor, MonitorClock]:
    clock = MonitorClock()
    options.setdefault("window_s", 10.0)
    return BudgetMonitor(clock=clock, **options), clock


def test_the_p95_is_within_one_percent_of_the_exact_value() -> None:
    monitor, _ = _monitor()
    rng = random.Random(4)
    samples = [rng.lognormvariate(3, 1) for _ in range(5000)]  # ms, spread over decades
    for ms in samples:
        monitor.observe("op", ms * MS, 200.0)
    exact = sorted(samples)[int(0.95 * len(samples)) - 1]
    status = monitor.status()["op"]
    assert status.count == 5000
    assert status.p95_ms == pytest.approx(exact, rel=0.011)
    assert status.violations == sum(1 for ms in samples if ms > 200.0)


def test_equal_samples_give_the_exact_value() -> None:
    monitor, _ = _monitor()
    for _ in range(10):
        monitor.observe("op", 200 * MS, 200.0)
    status = monitor.status()["op"]
    assert status.p95_ms == 200.0
    assert not status.exceeded


def test_an_episode_is_exceeded_once_then_recovered(caplog: pytest.LogCaptureFixture) -> None:
    monitor, clock = _monitor(window_s=10.0, intervals=10)
    with (
        capture_events(EXCEEDED_EVENT, RECOVERED_EVENT) as events,
        caplog.at_level(logging.INFO, logger="radiosonde.budgets"),
    ):
        for _ in range(50):
            monitor.observe("chat.send", 50 * MS, 200.0)
        assert monitor.check() == []
        for second in range(3):  # p95 over budget for a few seconds
            clock.now += 1
            for _ in range(50):
                monitor.observe("chat.send", 400 * MS, 200.0)
            # Checked as a new interval opens: the first slow interval is seen from the next.
            assert [e.event for e in events] == ([EXCEEDED_EVENT] if second else [])
        monitor.check()
        assert [e.event for e in events] == [EXCEEDED_EVENT]  # once per episode
        clock.now += 20  # the slow samples leave the window
        for _ in range(50):
            monitor.observe("chat.send", 50 * MS, 200.0)
        monitor.check()
    assert [e.event for e in events] == [EXCEEDED_EVENT, RECOVERED_EVENT]
    exceeded, recovered = events
    assert exceeded.metadata == {"event": "chat.send", "window_s": 10.0}
    assert exceeded.measurements["p95_ms"] == pytest.approx(400, rel=0.01)
    assert exceeded.measurements["budget_ms"] == 200.0
    assert exceeded.measurements["exceeded"] == 1
    assert recovered.measurements["p95_ms"] == pytest.approx(50, rel=0.01)
    assert recovered.measurements["exceeded"] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "chat.send" in warnings[0].getMessage()


def test_a_second_episode_is_announced_again() -> None:
    monitor, clock = _monitor()
    with capture_events(EXCEEDED_EVENT, RECOVERED_EVENT) as events:
        for _ in range(2):
            for _ in range(10):
                monitor.observe("op", 500 * MS, 100.0)
            monitor.check()
            clock.now += 30
            monitor.check()
    assert [e.event for e in events] == [EXCEEDED_EVENT, RECOVERED_EVENT] * 2


def test_min_samples_keeps_a_single_slow_call_from_opening_an_episode() -> None:
    monitor, _ = _monitor(min_samples=20)
    with capture_events(EXCEEDED_EVENT) as events:
        for _ in range(19):
            monitor.observe("op", 500 * MS, 100.0)
        assert monitor.check() == []
        assert monitor.status()["op"].p95_ms is None
        monitor.observe("op", 500 * MS, 100.0)
        monitor.check()
    assert len(events) == 1


def test_report_emits_a_status_per_operation_and_forgets_idle_ones() -> None:
    monitor, clock = _monitor()
    for _ in range(20):
        monitor.observe("a", 10 * MS, 50.0)
    monitor.observe("b", 300 * MS, 200.0)
    with capture_events(STATUS_EVENT, EXCEEDED_EVENT) as events:
        statuses = monitor.report()
    assert set(statuses) == {"a", "b"}
    status = {e.metadata["event"]: e.measurements for e in events.named(STATUS_EVENT)}
    assert status["a"] == {
        "p95_ms": pytest.approx(10, rel=0.01),
        "budget_ms": 50.0,
        "violations": 0,
        "count": 20,
        "exceeded": 0,
    }
    assert status["b"]["violations"] == 1 and status["b"]["exceeded"] == 1
    assert len(events.named(EXCEEDED_EVENT)) == 1

    clock.now += 60  # everything leaves the window
    with capture_events(STATUS_EVENT, RECOVERED_EVENT) as events:
        monitor.report()
        monitor.report()
    zeroed = events.named(STATUS_EVENT)
    assert sorted(e.metadata["event"] for e in zeroed) == ["a", "b"]  # once, then forgotten
    assert all(e.measurements["count"] == 0 and e.measurements["p95_ms"] == 0 for e in zeroed)
    assert [e.metadata["event"] for e in events.named(RECOVERED_EVENT)] == ["b"]
    assert monitor.status() == {}


def test_memory_is_bounded() -> None:
    monitor, clock = _monitor(window_s=10.0, intervals=5, max_events=3)
    rng = random.Random(1)
    for step in range(200):
        clock.now += 0.5
        for name in ("a", "b", "c", f"extra-{step}"):
            monitor.observe(name, rng.uniform(0.001, 5000) * MS, 100.0)
    assert set(monitor._series) == {"a", "b", "c"}
    assert monitor.dropped == 200
    for series in monitor._series.values():
        assert len(series.intervals) <= 6
        assert all(len(i.buckets) <= 1200 for i in series.intervals)


def test_the_monitor_listens_to_budgeted_calls(clock: FakeClock) -> None:
    monitor, _ = _monitor()
    with monitor:
        for _ in range(20):
            with_telemetry(OP, _taking(clock, 80), performance_budget_ms=50)
        emit_event(("upload", "done"), {"duration_ms": 5.0}, {})
        statuses = monitor.report()
    label = ".".join(OP)
    assert statuses[label].count == 20
    assert statuses[label].p95_ms == pytest.approx(80, rel=0.01)
    assert statuses[label].exceeded
    assert statuses["upload.done"].p95_ms == pytest.approx(5, rel=0.01)
    with_telemetry(OP, _taking(clock, 80))  # stopped: no longer observed
    assert monitor.status()[label].count == 20


def test_watch_monitors_a_plain_span() -> None:
    monitor, _ = _monitor()
    monitor.watch(("db", "query"), budget_ms=1000)
    with monitor:
        with radiosonde.span(("db", "query")):
            pass
        with pytest.raises(ZeroDivisionError), radiosonde.span(("db", "query")):
            _ = 1 / 0
        monitor.watch("db.write")  # after start: attached at once, default budget
        with radiosonde.span(("db", "write")):
            pass
    statuses = monitor.status()
    assert statuses["db.query"].count == 2 and statuses["db.query"].budget_ms == 1000
    assert statuses["db.write"].budget_ms == 200.0


def test_the_report_thread_emits_status_events() -> None:
    monitor = BudgetMonitor(window_s=10, report_interval_s=0.02)
    monitor.observe("op", 1 * MS, 200.0)
    with capture_events(STATUS_EVENT) as events:
        monitor.start()
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        monitor.stop()
    assert len(events) >= 1
    assert not any(t.name == "radiosonde-budget-monitor" for t in threading.enumerate())


@pytest.mark.parametrize(
    "options",
    [
        {"window_s": 0},
        {"intervals": 0},
        {"quantile": 1.5},
        {"min_samples": 0},
        {"report_interval_s": -1},
        {"max_events": 0},
    ],
)
def test_bad_monitor_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BudgetMonitor(**options)


# -- metric definitions --------------------------------------------------------------------------


def test_budget_metrics_read_the_monitor_events() -> None:
    definitions = {m.name: m for m in budget_metrics()}
    assert set(definitions) == {
        "radiosonde.budget.status.p95_ms",
        "radiosonde.budget.status.budget_ms",
        "radiosonde.budget.status.violations",
        "radiosonde.budget.status.count",
        "radiosonde.budget.status.exceeded",
        "radiosonde.budget.violation.count",
        "radiosonde.budget.exceeded.count",
    }
    p95 = definitions["radiosonde.budget.status.p95_ms"]
    assert p95.kind == "last_value"
    assert p95.event_name == STATUS_EVENT
    assert p95.tags == ("event",)
    assert definitions["radiosonde.budget.violation.count"].event_name == VIOLATION_EVENT
    assert definitions["radiosonde.budget.exceeded.count"].event_name == EXCEEDED_EVENT

    monitor, _ = _monitor()
    monitor.observe("op", 300 * MS, 200.0)
    with capture_events(STATUS_EVENT) as events:
        monitor.report()
    (status,) = events
    assert p95.value(status.measurements, status.metadata) == pytest.approx(300, rel=0.01)
    assert p95.tags_for(status.metadata) == ("op",)
    for name in ("violations", "count", "exceeded", "budget_ms"):
        metric = definitions[f"radiosonde.budget.status.{name}"]
        assert metric.value(status.measurements, status.metadata) is not None


# -- Prometheus: the exported series, and the documented alert rules -----------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "budgets.md"


def _documented_alert_rules() -> str:
    text = DOCS.read_text()
    block = text.split("<!-- alert-rules:begin -->")[1].split("<!-- alert-rules:end -->")[0]
    return block.strip().removeprefix("```yaml").removesuffix("```")


def _family_names() -> dict[str, str]:
    reporter = PrometheusReporter(budget_metrics(), port=0, include_self_metrics=False)
    return {metric.name: family for metric, (family, _kind) in reporter.families.items()}


def test_the_budget_metrics_are_exposed_to_prometheus(clock: FakeClock) -> None:
    reporter = PrometheusReporter(budget_metrics(), port=0, include_self_metrics=False)
    reporter.wsgi_app()  # attaches the reporter to its events, without a server
    monitor, _ = _monitor()
    try:
        with monitor:
            for _ in range(3):
                with_telemetry(("chat", "send"), _taking(clock, 300))
            with_telemetry(("auth", "login"), _taking(clock, 20), performance_budget_ms=50)
            monitor.report()
        text = reporter.render().decode()
    finally:
        reporter.stop()
    for line in [
        'radiosonde_budget_status_p95_ms{event="chat.send"} 300.0',
        'radiosonde_budget_status_budget_ms{event="chat.send"} 200.0',
        'radiosonde_budget_status_violations{event="chat.send"} 3.0',
        'radiosonde_budget_status_count{event="chat.send"} 3.0',
        'radiosonde_budget_status_exceeded{event="chat.send"} 1.0',
        'radiosonde_budget_status_p95_ms{event="auth.login"} 20.0',
        'radiosonde_budget_status_exceeded{event="auth.login"} 0.0',
        'radiosonde_budget_violation_count_total{event="chat.send"} 3.0',
        'radiosonde_budget_exceeded_count_total{event="chat.send"} 1.0',
    ]:
        assert line in text.splitlines(), f"{line!r} not in:\n{text}"


@pytest.mark.server
def test_the_documented_alert_rules_fire_on_the_exported_series(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    (tmp_path / "rules.yml").write_text(_documented_alert_rules())
    names = _family_names()  # as rendered: a renamed metric breaks the rules, and this test
    p95 = names["radiosonde.budget.status.p95_ms"]
    budget = names["radiosonde.budget.status.budget_ms"]
    count = names["radiosonde.budget.status.count"]
    violations_total = names["radiosonde.budget.violation.count"] + "_total"
    series = [
        # chat.send: p95 300 ms against 200 ms, with traffic; auth.login: within its budget;
        # search: over budget but with too few calls to mean it.
        (p95, "chat.send", "300x20"),
        (budget, "chat.send", "200x20"),
        (count, "chat.send", "50x20"),
        (p95, "auth.login", "40x20"),
        (budget, "auth.login", "50x20"),
        (count, "auth.login", "50x20"),
        (p95, "search", "900x20"),
        (budget, "search", "200x20"),
        (count, "search", "3x20"),
        (violations_total, "chat.send", "0+120x20"),  # 2 calls a second over budget
        (violations_total, "auth.login", "0+6x20"),
    ]
    unit_tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{name}{{event="{event}"}}', "values": values}
                    for name, event, values in series
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "PerformanceBudgetExceeded", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "PerformanceBudgetExceeded",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "event": "chat.send"},
                                "exp_annotations": {
                                    "summary": "chat.send: p95 300 ms is over its performance"
                                    " budget"
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "18m",
                        "alertname": "PerformanceBudgetViolations",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "info", "event": "chat.send"},
                                "exp_annotations": {
                                    "summary": "chat.send: more than one call a second over its"
                                    " budget"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    # JSON is valid YAML.
    (tmp_path / "tests.yml").write_text(json.dumps(unit_tests, indent=2))
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
