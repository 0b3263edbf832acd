"""The console reporter: what it prints per event and metric, and that it never breaks execute."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

import radiosonde
from radiosonde import events
from radiosonde import metrics as m
from radiosonde.reporters import ConsoleReporter
from radiosonde.reporters._base import Reporter
from radiosonde.selfmetrics import REPORTER_ERROR_EVENT
from radiosonde.testing import capture_events

EVENT = ("http", "request", "stop")
METRICS = [
    m.counter("http.request.stop.duration", tags=["route"]),
    m.distribution(
        "http.request.stop.duration", tags=["route"], unit=("nanosecond", "millisecond")
    ),
    m.sum("http.request.stop.bytes"),
]


def test_prints_the_event_and_what_each_metric_takes_from_it() -> None:
    out = io.StringIO()
    with ConsoleReporter(METRICS, out):
        radiosonde.execute(EVENT, {"duration": 1_200_000}, {"route": "/users", "method": "GET"})
    assert out.getvalue() == (
        "[radiosonde] event http.request.stop\n"
        "  measurements: {'duration': 1200000}\n"
        "  metadata:     {'method': 'GET', 'route': '/users'}\n"
        '  counter http.request.stop.duration = +1  {route="/users"}\n'
        '  distribution http.request.stop.duration = 1.2 millisecond  {route="/users"}\n'
        "  sum http.request.stop.bytes skipped: missing_measurement"
        " (measurement 'bytes' is missing)\n"
    )


def test_says_why_an_update_is_skipped() -> None:
    out = io.StringIO()
    metrics = [
        m.summary("http.request.stop.duration", tags=["route"]),
        m.last_value("http.request.stop.queue", keep=lambda md: md.get("pool") == "main"),
    ]
    with ConsoleReporter(metrics, out):
        radiosonde.execute(EVENT, {"duration": "slow", "queue": 3}, {"pool": "other"})
    lines = out.getvalue().splitlines()
    assert lines[3] == (
        "  summary http.request.stop.duration skipped: invalid_measurement"
        " (measurement 'duration' is 'slow', not a number)"
    )
    assert lines[4] == (
        "  last_value http.request.stop.queue skipped: filtered (keep= returned false)"
    )


def test_only_events_of_its_metrics_are_printed_and_stop_detaches() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter([m.counter("db.query.stop.rows")], out)
    reporter.start()
    reporter.start()  # idempotent
    assert reporter.running
    radiosonde.execute(EVENT, {}, {})
    radiosonde.execute(("db", "query", "stop"), {}, {})
    reporter.stop()
    reporter.stop()
    assert not reporter.running
    radiosonde.execute(("db", "query", "stop"), {}, {})
    assert out.getvalue().count("[radiosonde] event") == 1
    assert radiosonde.list_handlers() == []


def test_one_handler_per_event_name() -> None:
    with ConsoleReporter(METRICS, io.StringIO()):
        assert [h.event for h in radiosonde.list_handlers()] == [EVENT]


def test_the_default_stream_is_stdout_at_write_time(capsys: pytest.CaptureFixture[str]) -> None:
    with ConsoleReporter([m.counter("http.request.stop.duration")]):
        radiosonde.execute(EVENT, {}, {})
    assert "counter http.request.stop.duration = +1" in capsys.readouterr().out


def test_long_values_are_abbreviated() -> None:
    out = io.StringIO()
    with ConsoleReporter([m.counter("http.request.stop.duration")], out):
        radiosonde.execute(EVENT, {}, {"body": "x" * 10_000, "items": list(range(1000))})
    assert len(out.getvalue()) < 600


class BrokenStream:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, text: str) -> int:
        self.calls += 1
        raise OSError("broken pipe")


def test_a_failing_stream_never_raises_into_execute_and_is_counted() -> None:
    stream = BrokenStream()
    reporter = ConsoleReporter([m.counter("http.request.stop.duration")], stream, name="dev")  # type: ignore[arg-type]
    with reporter, capture_events(REPORTER_ERROR_EVENT) as errors:
        radiosonde.execute(EVENT, {}, {})
        radiosonde.execute(EVENT, {}, {})
        assert len(radiosonde.list_handlers(EVENT)) == 1  # still attached
    assert stream.calls == 2
    assert reporter.errors == {"write": 2}
    assert [e.metadata["reporter"] for e in errors] == ["dev", "dev"]
    assert isinstance(errors[0].metadata["reason"], OSError)
    assert events.stats()["handler_failures"] == 0


def test_a_reporter_printing_its_own_errors_does_not_loop() -> None:
    stream = BrokenStream()
    metrics = [m.counter("reporter.errors", event_name=REPORTER_ERROR_EVENT)]
    with ConsoleReporter(metrics, stream):  # type: ignore[arg-type]
        radiosonde.execute(REPORTER_ERROR_EVENT, {"count": 1}, {"reporter": "x"})
    # The event itself, then the error event of that failed write once; no error about that.
    assert stream.calls == 2


def test_a_closed_stdout_is_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    reporter = ConsoleReporter([m.counter("http.request.stop.duration")])
    with reporter:
        radiosonde.execute(EVENT, {}, {})
    assert reporter.errors == {"write": 1}


def test_a_value_whose_repr_raises_is_still_printed() -> None:
    class Unrepresentable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    out = io.StringIO()
    reporter = ConsoleReporter([m.counter("http.request.stop.duration")], out)
    with reporter:
        radiosonde.execute(EVENT, {}, {"x": Unrepresentable()})
    assert "{'x': <Unrepresentable instance at" in out.getvalue()
    assert reporter.errors == {}


def test_bad_metric_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="not a metric definition"):
        ConsoleReporter(["http.request.stop.duration"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="a list of metrics"):
        ConsoleReporter(m.counter("a.b"))  # type: ignore[arg-type]


def test_context_manager_returns_the_reporter() -> None:
    reporter = ConsoleReporter([], io.StringIO(), name="c")
    with reporter as entered:
        assert entered is reporter
    assert repr(reporter) == "<ConsoleReporter 'c' stopped>"


def test_format_can_be_used_directly() -> None:
    reporter = ConsoleReporter(METRICS, io.StringIO())
    text: Any = reporter.format(EVENT, {"bytes": 10}, {"route": "/"})
    assert "sum http.request.stop.bytes = 10\n" in text
    assert "distribution http.request.stop.duration skipped: missing_measurement" in text


# -- the shared reporter base ------------------------------------------------------------------


class Recording(Reporter):
    def __init__(self, fail: bool = False) -> None:
        super().__init__("rec")
        self.calls: list[str] = []
        self.fail = fail

    def _start(self) -> None:
        self.calls.append("start")
        if self.fail:
            raise OSError("port in use")

    def _stop(self) -> None:
        self.calls.append("stop")


def test_the_base_starts_and_stops_once_per_state_change() -> None:
    reporter = Recording()
    with reporter as entered:
        assert entered is reporter
        reporter.start()
        assert reporter.running
    reporter.stop()
    assert reporter.calls == ["start", "stop"]
    reporter.start()
    assert reporter.calls == ["start", "stop", "start"]


def test_a_start_that_fails_leaves_the_reporter_stopped() -> None:
    reporter = Recording(fail=True)
    with pytest.raises(OSError, match="port in use"):
        reporter.start()
    assert not reporter.running
    reporter.stop()
    assert reporter.calls == ["start"]
