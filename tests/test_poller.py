"""The runtime poller: schedule, failure policy, default measurements, event loops, metrics."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import radiosonde
from radiosonde import _runtime
from radiosonde.poller import (
    CPU_EVENT,
    EVENT_LOOP_EVENT,
    FAILURE_EVENT,
    FDS_EVENT,
    GC_EVENT,
    MEMORY_EVENT,
    OVERRUN_EVENT,
    RECOVERY_EVENT,
    THREADS_EVENT,
    Poller,
    StopMeasurement,
    _Worker,
    default_measurements,
    loop_measurement,
    measure,
    runtime_metrics,
)
from radiosonde.testing import CapturedEvents, capture_events
from tests._realserver import missing

Capture = Callable[..., CapturedEvents]


@pytest.fixture
def pollers() -> Iterator[list[Poller]]:
    """Pollers a test starts; all stopped at the end even when the test fails."""
    made: list[Poller] = []
    yield made
    for poller in made:
        poller.stop(timeout=2)


def one(events: CapturedEvents, name: tuple[str, ...]) -> dict[str, Any]:
    found = events.named(name)
    assert len(found) == 1, f"expected one {name} event, got {events.names()}"
    return found[0].measurements


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"period": 0}, "period must be finite and at least 0.001 s"),
        ({"period": -1.0}, "period"),
        ({"period": math.nan}, "period"),
        ({"period": math.inf}, "period"),
        ({"period": "5"}, "period must be a number of seconds"),
        ({"period": True}, "period must be a number of seconds"),
        ({"init_delay": -0.5}, "init_delay must be finite and at least 0"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"max_backoff_periods": 0}, "max_backoff_periods must be a positive integer"),
        ({"hang_timeout": 0}, "hang_timeout"),
        ({"measurements": [42]}, "must be a callable taking no arguments"),
        ({"measurements": lambda: None}, "wrap a single measurement in a list"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Poller(**{"measurements": [], **kwargs})


def test_async_measurements_are_refused_at_construction() -> None:
    async def measurement() -> None:
        pass

    with pytest.raises(ValueError, match="async function"):
        Poller([measurement])
    with pytest.raises(ValueError, match="async functions are not supported"):
        measure("app.x", measurement)  # type: ignore[arg-type]


def test_measure_validates_the_event_name() -> None:
    with pytest.raises(ValueError, match="invalid event name"):
        measure("", dict)


# -- lifecycle --------------------------------------------------------------------------------


def test_start_stop_joins_promptly_and_threads_are_daemons() -> None:
    poller = Poller([], period=30.0, name="lifecycle")
    poller.start()
    threads = [
        t for t in threading.enumerate() if t.name.startswith("radiosonde-poller[lifecycle]")
    ]
    assert threads and all(t.daemon for t in threads)
    started = time.monotonic()
    assert poller.stop() is True
    assert time.monotonic() - started < 0.5
    assert not any(t.is_alive() for t in threads)
    assert poller.running is False


def test_start_twice_raises_stop_is_idempotent_and_restart_works(pollers: list[Poller]) -> None:
    calls: list[float] = []
    poller = Poller([lambda: calls.append(time.monotonic())], period=0.02)
    pollers.append(poller)
    assert poller.stop() is True  # never started: nothing to do
    poller.start()
    with pytest.raises(RuntimeError, match="running already"):
        poller.start()
    wait_for(lambda: len(calls) >= 2)
    assert poller.stop() is True
    assert poller.stop() is True
    count = len(calls)
    time.sleep(0.06)
    assert len(calls) == count  # stopped means stopped
    poller.start()
    wait_for(lambda: len(calls) >= count + 2)
    assert poller.stop() is True


def test_context_manager_starts_and_stops(radiosonde_events: Capture) -> None:
    events = radiosonde_events(MEMORY_EVENT)
    with Poller(default_measurements(), period=0.02) as poller:
        assert poller.running
        wait_for(lambda: len(events) >= 2)
    assert not poller.running


def test_init_delay_postpones_the_first_round(pollers: list[Poller]) -> None:
    calls: list[float] = []
    poller = Poller([lambda: calls.append(time.monotonic())], period=0.02, init_delay=0.15)
    pollers.append(poller)
    started = time.monotonic()
    poller.start()
    wait_for(lambda: bool(calls))
    assert calls[0] - started >= 0.15


def test_add_and_remove_while_running(pollers: list[Poller]) -> None:
    first: list[int] = []
    second: list[int] = []
    poller = Poller([lambda: first.append(1)], period=0.01)
    pollers.append(poller)
    poller.start()
    wait_for(lambda: len(first) >= 1)
    measurement = poller.add(lambda: second.append(1))
    wait_for(lambda: len(second) >= 2)
    assert poller.remove(measurement) is True
    assert poller.remove(measurement) is False
    time.sleep(0.03)  # a round in progress may still finish
    count = len(second)
    time.sleep(0.05)
    assert len(second) == count
    assert len(poller.measurements) == 1


# -- the schedule -----------------------------------------------------------------------------


def _lateness_spread(starts: list[float], period: float) -> float:
    """How far apart the starts sit from one grid ``starts[0] + k * period``, in periods.

    Wake-ups are only ever late, and on a loaded machine by a few tens of milliseconds; on a
    fixed-rate schedule that bends single starts without moving the grid, so the spread stays
    small. A schedule that drifts walks all around the grid and spreads to almost 1.
    """
    offsets = [(t - starts[0]) / period for t in starts]
    deviations = [o - round(o) for o in offsets]
    return max(deviations) - min(deviations)


def test_fixed_rate_schedule_does_not_drift_with_a_slow_measurement(
    pollers: list[Poller],
) -> None:
    period = 0.1
    starts: list[float] = []

    def slow() -> None:
        starts.append(time.monotonic())
        time.sleep(0.06)  # 60% of the period: a fixed-delay loop would start every 1.6 periods

    poller = Poller([slow], period=period)
    pollers.append(poller)
    poller.start()
    wait_for(lambda: len(starts) >= 10)
    poller.stop()
    assert _lateness_spread(starts, period) < 0.45, [(t - starts[0]) / period for t in starts]
    ticks = round((starts[-1] - starts[0]) / period)
    assert ticks <= len(starts) + 1  # at most a couple of ticks lost to a loaded machine


def test_a_round_longer_than_the_period_skips_ticks_instead_of_bursting(
    pollers: list[Poller], radiosonde_events: Capture
) -> None:
    overruns = radiosonde_events(OVERRUN_EVENT)
    period = 0.1
    starts: list[float] = []

    def slower_than_period() -> None:
        starts.append(time.monotonic())
        time.sleep(0.12)

    poller = Poller([slower_than_period], period=period, name="slow", hang_timeout=5)
    pollers.append(poller)
    poller.start()
    wait_for(lambda: len(starts) >= 6)
    poller.stop()
    intervals = sorted((b - a) / period for a, b in itertools.pairwise(starts))
    # 0.12 s rounds on a 0.1 s grid: each round starts on the next free tick, two periods on;
    # catching up (a burst) would start the next round right away, 1.2 periods on.
    assert intervals[len(intervals) // 2] > 1.75, intervals
    assert _lateness_spread(starts, period) < 0.45, intervals
    assert overruns, "an overrun is reported"
    first = overruns[0]
    assert first.metadata == {"poller": "slow"}
    assert first.measurements["skipped_ticks"] >= 1
    assert first.measurements["duration"] > period * 1e9


def test_overruns_are_logged_at_most_once_a_minute(
    pollers: list[Poller], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.025)

    poller = Poller([slow], period=0.02, hang_timeout=5)
    pollers.append(poller)
    with caplog.at_level(logging.WARNING, logger="radiosonde.poller"):
        poller.start()
        wait_for(lambda: len(calls) >= 5)
        poller.stop()
    overrun_logs = [r for r in caplog.records if "longer than its" in r.getMessage()]
    assert len(overrun_logs) == 1


# -- failures, backoff, recovery --------------------------------------------------------------


def _run_ticks(poller: Poller, ticks: int) -> None:
    """Run rounds 0..ticks-1 synchronously, as the poller thread would, without waiting."""
    worker = _Worker(poller, threading.Event(), 0)
    for tick in range(ticks):
        poller._round(tick, time.monotonic(), worker)


def test_failing_measurement_backs_off_exponentially_then_recovers(
    radiosonde_events: Capture,
) -> None:
    failures = radiosonde_events(FAILURE_EVENT)
    recoveries = radiosonde_events(RECOVERY_EVENT)
    called_at: list[int] = []
    tick_of: list[int] = [0]

    def flaky() -> None:
        called_at.append(tick_of[0])
        if len(called_at) <= 4:
            raise RuntimeError(f"failure {len(called_at)}")

    poller = Poller([flaky], name="p1")
    worker = _Worker(poller, threading.Event(), 0)
    for tick in range(30):
        tick_of[0] = tick
        poller._round(tick, time.monotonic(), worker)

    # Skipped for 1, 2, 4, 8 periods after failures 1..4, then back to every period.
    assert called_at[:6] == [0, 2, 5, 10, 19, 20]
    assert called_at == [0, 2, 5, 10, *range(19, 30)]
    assert [f.measurements for f in failures] == [
        {"consecutive_failures": n, "backoff_periods": 2 ** (n - 1)} for n in (1, 2, 3, 4)
    ]
    meta = failures[0].metadata
    assert meta["poller"] == "p1"
    assert meta["measurement"].endswith("flaky")
    assert meta["kind"] is RuntimeError
    assert str(meta["reason"]) == "failure 1"
    assert meta["stacktrace"][-1].name == "flaky"
    assert len(recoveries) == 1
    assert recoveries[0].measurements == {"failures": 4}
    assert recoveries[0].metadata == {"poller": "p1", "measurement": meta["measurement"]}


def test_backoff_is_capped(radiosonde_events: Capture) -> None:
    called_at: list[int] = []
    tick_of = [0]

    def broken() -> None:
        called_at.append(tick_of[0])
        raise OSError("still broken")

    poller = Poller([broken], max_backoff_periods=3)
    worker = _Worker(poller, threading.Event(), 0)
    for tick in range(20):
        tick_of[0] = tick
        poller._round(tick, time.monotonic(), worker)
    assert called_at == [0, 2, 5, 9, 13, 17]  # skips of 1, 2, then 3, 3, 3


def test_a_failing_measurement_does_not_disturb_the_others(
    pollers: list[Poller], radiosonde_events: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    failures = radiosonde_events(FAILURE_EVENT)
    healthy: list[float] = []

    def broken() -> None:
        raise ValueError("boom")

    poller = Poller([broken, lambda: healthy.append(1)], period=0.01, max_backoff_periods=1)
    pollers.append(poller)
    with caplog.at_level(logging.WARNING, logger="radiosonde.poller"):
        poller.start()
        wait_for(lambda: len(failures) >= 5 and len(healthy) >= 10)
        poller.stop()
    assert [f.measurements["consecutive_failures"] for f in failures[:5]] == [1, 2, 3, 4, 5]
    # Logged once (with the traceback), then at most once a minute.
    logged = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert "ValueError: boom" in logged[0].getMessage()


def test_poll_now_never_raises_and_runs_measurements_in_backoff(
    radiosonde_events: Capture,
) -> None:
    failures = radiosonde_events(FAILURE_EVENT)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("nope")

    def not_a_dict() -> list[int]:
        return [1, 2]

    def failing_handler(*_args: Any) -> None:
        raise RuntimeError("handler bug")

    radiosonde.attach("bad-handler", FAILURE_EVENT, failing_handler, on_error="keep")
    poller = Poller([broken, measure("app.list", not_a_dict)])  # type: ignore[arg-type]
    poller.poll_now()
    poller.poll_now()  # in backoff for the schedule, but poll_now runs everything
    assert len(calls) == 2
    kinds = [f.metadata["kind"] for f in failures]
    assert kinds == [KeyError, TypeError, KeyError, TypeError]
    assert "must return a dict of measurements" in str(failures[1].metadata["reason"])


def test_stop_measurement_removes_it_for_good(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def once() -> None:
        calls.append(1)
        raise StopMeasurement("done")

    poller = Poller([once])
    with caplog.at_level(logging.INFO, logger="radiosonde.poller"):
        poller.poll_now()
        poller.poll_now()
    assert calls == [1]
    assert poller.measurements == []
    assert any("removed measurement" in r.getMessage() for r in caplog.records)


def test_a_hung_measurement_is_left_behind_and_the_others_go_on(
    pollers: list[Poller], radiosonde_events: Capture
) -> None:
    failures = radiosonde_events(FAILURE_EVENT)
    recoveries = radiosonde_events(RECOVERY_EVENT)
    release = threading.Event()
    hung_calls: list[int] = []
    healthy: list[float] = []

    def hangs() -> None:
        hung_calls.append(1)
        if len(hung_calls) == 1:
            release.wait(10)

    poller = Poller(
        [hangs, lambda: healthy.append(time.monotonic())],
        period=0.02,
        hang_timeout=0.1,
        name="hang",
    )
    pollers.append(poller)
    poller.start()
    wait_for(lambda: len(failures) >= 1)
    assert failures[0].metadata["kind"] is TimeoutError
    assert "still running after" in str(failures[0].metadata["reason"])
    before = len(healthy)
    wait_for(lambda: len(healthy) >= before + 5)  # the others run while it hangs
    assert hung_calls == [1]  # never run twice at once
    release.set()
    wait_for(lambda: len(recoveries) >= 1)  # the abandoned call returned: it is healthy again
    assert recoveries[0].metadata["poller"] == "hang"
    started = time.monotonic()
    assert poller.stop() is True
    assert time.monotonic() - started < 0.5
    assert not [t for t in threading.enumerate() if t.name.startswith("radiosonde-poller[hang]")]


def test_stop_reports_a_measurement_that_is_still_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered = threading.Event()
    release = threading.Event()

    def blocks() -> None:
        entered.set()
        release.wait(10)

    poller = Poller([blocks], period=0.01, hang_timeout=30)
    poller.start()
    assert entered.wait(5)
    with caplog.at_level(logging.WARNING, logger="radiosonde.poller"):
        assert poller.stop(timeout=0.1) is False
    assert any("did not stop within" in r.getMessage() for r in caplog.records)
    release.set()


def test_system_exit_in_a_measurement_does_not_kill_the_poller(
    pollers: list[Poller], radiosonde_events: Capture
) -> None:
    failures = radiosonde_events(FAILURE_EVENT)
    calls: list[int] = []

    def exits() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit(1)

    poller = Poller([exits], period=0.01)
    pollers.append(poller)
    poller.start()
    wait_for(lambda: len(calls) >= 3)
    assert [f.metadata["kind"] for f in failures] == [SystemExit]


# -- custom measurements ----------------------------------------------------------------------


def test_measure_emits_the_returned_dict(radiosonde_events: Capture) -> None:
    events = radiosonde_events("app.*")
    queue = [1, 2, 3]
    skip = [False]

    def sample() -> dict[str, int] | None:
        return None if skip[0] else {"length": len(queue)}

    measurement = measure(("app", "queue"), sample, metadata={"queue": "jobs"})
    poller = Poller([measurement])
    poller.poll_now()
    skip[0] = True
    poller.poll_now()
    assert events == [(("app", "queue"), {"length": 3}, {"queue": "jobs"})]
    assert getattr(measurement, "name", None) == "app.queue"


def test_plain_callables_emit_their_own_events(radiosonde_events: Capture) -> None:
    events = radiosonde_events("app.*")
    Poller([lambda: radiosonde.execute("app.tick", {"value": 1})]).poll_now()
    assert events.names() == [("app", "tick")]


# -- default measurements ---------------------------------------------------------------------


def test_default_measurements_report_sane_values(radiosonde_events: Capture) -> None:
    events = radiosonde_events("radiosonde.runtime.*")
    Poller().poll_now()
    assert events.names() == [MEMORY_EVENT, CPU_EVENT, FDS_EVENT, THREADS_EVENT, *[GC_EVENT] * 3]

    memory = one(events, MEMORY_EVENT)
    assert 1_000_000 < memory["rss"] <= memory["vms"]
    assert memory["peak_rss"] >= memory["rss"] * 0.9
    cpu = one(events, CPU_EVENT)
    assert cpu["user_time"] > 0 and cpu["system_time"] >= 0
    fds = one(events, FDS_EVENT)
    assert 3 <= fds["count"] <= fds["limit"]
    threads = one(events, THREADS_EVENT)
    assert threads["count"] == threading.active_count() >= 1
    assert threads["os_count"] >= 1

    gcs = events.named(GC_EVENT)
    assert [e.metadata["generation"] for e in gcs] == [0, 1, 2]
    for event in gcs:
        values = event.measurements
        assert set(values) == {
            "count",
            "threshold",
            "collections",
            "collected",
            "uncollectable",
            "pause_time",
            "pause_max",
        }
        assert all(isinstance(v, int) and v >= 0 for v in values.values())
    assert gcs[0].measurements["threshold"] == gc.get_threshold()[0]


def test_file_descriptor_count_follows_open_files(radiosonde_events: Capture) -> None:
    events = radiosonde_events(FDS_EVENT)
    poller = Poller(default_measurements())
    poller.poll_now()
    with tempfile.TemporaryFile() as a, tempfile.TemporaryFile() as b, tempfile.TemporaryFile():
        assert a.fileno() != b.fileno()
        poller.poll_now()
    counts = [e.measurements["count"] for e in events]
    assert counts[1] - counts[0] == 3


def test_thread_counts_follow_threads(radiosonde_events: Capture) -> None:
    events = radiosonde_events(THREADS_EVENT)
    poller = Poller(default_measurements())
    poller.poll_now()
    stop = threading.Event()
    extra = [threading.Thread(target=stop.wait) for _ in range(3)]
    for thread in extra:
        thread.start()
    try:
        poller.poll_now()
    finally:
        stop.set()
        for thread in extra:
            thread.join()
    before, during = (e.measurements for e in events)
    assert during["count"] - before["count"] == 3
    assert during["os_count"] - before["os_count"] == 3


def test_cpu_utilisation_tells_busy_from_idle(radiosonde_events: Capture) -> None:
    events = radiosonde_events(CPU_EVENT)
    poller = Poller(default_measurements())
    poller.poll_now()
    time.sleep(0.2)
    poller.poll_now()
    # Spin until this process has used 0.1 s of CPU, however busy the machine is.
    wall_start, cpu_start = time.monotonic(), time.process_time()
    while time.process_time() - cpu_start < 0.1:
        pass
    expected = (time.process_time() - cpu_start) / (time.monotonic() - wall_start) * 100
    poller.poll_now()
    assert "utilisation" in events[1].measurements
    idle = events[1].measurements["utilisation"]
    busy = events[2].measurements["utilisation"]
    assert idle < 25, idle
    assert 0.7 * expected < busy <= 100 * (os.cpu_count() or 1) + 5, (busy, expected)
    assert busy > 2 * idle
    spent = (events[2].measurements["user_time"] + events[2].measurements["system_time"]) - (
        events[1].measurements["user_time"] + events[1].measurements["system_time"]
    )
    assert 0.09 < spent < 1.0


def test_gc_pause_timing_sees_a_collection(radiosonde_events: Capture) -> None:
    events = radiosonde_events(GC_EVENT)
    poller = Poller(default_measurements())
    poller.poll_now()
    garbage: list[list[object]] = [[] for _ in range(20_000)]
    for item in garbage:
        item.append(item)  # reference cycles: only the collector frees them
    del garbage, item
    gc.collect()
    poller.poll_now()
    before = {e.metadata["generation"]: e.measurements for e in events[:3]}
    after = {e.metadata["generation"]: e.measurements for e in events[3:]}
    assert after[2]["collections"] >= before[2]["collections"] + 1
    assert after[2]["collected"] >= before[2]["collected"] + 20_000
    assert 0 < after[2]["pause_max"] <= after[2]["pause_time"]
    assert after[2]["pause_time"] < 5_000_000_000
    poller.poll_now()  # the max is per period: a quiet period starts from zero again
    quiet = events[-1].measurements
    if quiet["collections"] == after[2]["collections"]:  # no full collection since
        assert quiet["pause_max"] == quiet["pause_time"] == 0


def test_gc_callback_is_installed_once_and_never_raises() -> None:
    for _ in range(3):
        Poller(default_measurements(use_psutil=False))
    assert gc.callbacks.count(_runtime._on_gc) == 1
    _runtime._on_gc("stop", {})  # a stop without a start, or bad info: ignored
    _runtime._on_gc("start", {})
    _runtime._on_gc("stop", {"generation": 99})


def test_each_gc_measurement_has_its_own_max_window(radiosonde_events: Capture) -> None:
    events = radiosonde_events(GC_EVENT)
    first = Poller(default_measurements(use_psutil=False))
    second = Poller(default_measurements(use_psutil=False))
    gc.collect()
    first.poll_now()
    second.poll_now()  # not reset by the first poller's reading
    maxima = [e.measurements["pause_max"] for e in events if e.metadata["generation"] == 2]
    assert maxima[0] > 0 and maxima[1] > 0


# -- psutil and the standard library ----------------------------------------------------------


def _need_psutil() -> None:
    if _runtime.load_psutil(required=False) is None:
        missing("psutil", "pip install 'radiosonde[runtime]'")


def _readings(measurements: list[Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    with capture_events("radiosonde.runtime.*") as events:
        Poller(measurements).poll_now()
    return {e.event: e.measurements for e in events if e.event != GC_EVENT}


def test_psutil_and_stdlib_paths_agree() -> None:
    _need_psutil()
    with_psutil = default_measurements(use_psutil=True)
    stdlib = default_measurements(use_psutil=False)
    assert [m.source for m in with_psutil] == ["psutil", "stdlib", "psutil", "psutil", "stdlib"]  # type: ignore[attr-defined]
    assert {m.source for m in stdlib} == {"stdlib"}  # type: ignore[attr-defined]
    a, b = _readings(with_psutil), _readings(stdlib)
    assert set(a) == set(b) == {MEMORY_EVENT, CPU_EVENT, FDS_EVENT, THREADS_EVENT}
    for event in a:
        assert set(a[event]) - {"utilisation"} == set(b[event]) - {"utilisation"}, event
    assert abs(a[MEMORY_EVENT]["rss"] - b[MEMORY_EVENT]["rss"]) < 0.1 * b[MEMORY_EVENT]["rss"]
    assert abs(a[MEMORY_EVENT]["vms"] - b[MEMORY_EVENT]["vms"]) < 0.1 * b[MEMORY_EVENT]["vms"]
    assert abs(a[FDS_EVENT]["count"] - b[FDS_EVENT]["count"]) <= 2
    assert a[THREADS_EVENT]["os_count"] == b[THREADS_EVENT]["os_count"]


def test_default_prefers_psutil_when_installed() -> None:
    _need_psutil()
    assert default_measurements()[0].source == "psutil"  # type: ignore[attr-defined]


def test_without_psutil_the_standard_library_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    measurements = default_measurements()
    assert {m.source for m in measurements} == {"stdlib"}  # type: ignore[attr-defined]
    readings = _readings(measurements)
    assert readings[MEMORY_EVENT]["rss"] > 0
    assert readings[THREADS_EVENT]["os_count"] >= 1
    with pytest.raises(ImportError, match=r"radiosonde\[runtime\]"):
        default_measurements(use_psutil=True)


def test_without_procfs_unknown_values_are_left_out(tmp_path: Any) -> None:
    nowhere = str(tmp_path / "no-proc")
    readings = _readings(
        [
            _runtime.MemoryMeasurement(None, proc=nowhere),
            _runtime.FdsMeasurement(None, proc=nowhere),
            _runtime.ThreadsMeasurement(None, proc=nowhere),
        ]
    )
    assert set(readings[MEMORY_EVENT]) == {"peak_rss"}  # what getrusage gives everywhere
    assert readings[FDS_EVENT]["count"] >= 3  # from /dev/fd
    assert set(readings[THREADS_EVENT]) == {"count"}


def test_importing_the_poller_imports_neither_psutil_nor_asyncio() -> None:
    code = (
        "import sys, radiosonde.poller\n"
        "assert 'psutil' not in sys.modules and 'asyncio' not in sys.modules\n"
        "radiosonde.poller.Poller([]).poll_now()\n"
        "assert 'psutil' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- asyncio event loops ----------------------------------------------------------------------


def test_event_loop_lag_and_tasks(radiosonde_events: Capture) -> None:
    events = radiosonde_events(EVENT_LOOP_EVENT)

    async def main() -> None:
        poller = Poller([], period=0.02, name="loop")
        watched = poller.watch_loop(name="main")
        assert watched in poller.measurements
        background = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
        with poller:
            await asyncio.sleep(0.1)  # a responsive loop
            time.sleep(0.3)  # the point: block the loop
            await asyncio.sleep(0.1)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    asyncio.run(main())
    assert all(e.metadata["loop"] == "main" for e in events)
    responsive = [e.measurements for e in events if not e.metadata["stalled"]]
    stalled = [e.measurements for e in events if e.metadata["stalled"]]
    assert responsive[0]["tasks"] == 4  # main() and the three sleepers
    assert min(m["lag"] for m in responsive) < 50_000_000
    # The probe scheduled just before the loop blocked ran about 0.3 s late ...
    assert max(m["lag"] for m in responsive) >= 200_000_000
    # ... and while it was blocked, each poll reported the lag so far, without a task count.
    assert len(stalled) >= 3
    assert all(set(m) == {"lag"} for m in stalled)
    assert max(m["lag"] for m in stalled) >= 150_000_000


def test_a_closed_loop_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    poller = Poller([])
    poller.watch_loop(loop, name="gone")
    loop.close()
    with caplog.at_level(logging.INFO, logger="radiosonde.poller"):
        poller.poll_now()
    assert poller.measurements == []
    assert any("'gone' is closed" in r.getMessage() for r in caplog.records)


def test_an_idle_loop_reports_nothing(radiosonde_events: Capture) -> None:
    events = radiosonde_events(EVENT_LOOP_EVENT)
    loop = asyncio.new_event_loop()
    try:
        measurement = loop_measurement(loop)
        measurement()  # not running: nothing to measure, no probe left behind
        assert events == []
    finally:
        loop.close()


def test_a_probe_left_in_a_stopped_loop_does_not_report_the_idle_time(
    radiosonde_events: Capture,
) -> None:
    events = radiosonde_events(EVENT_LOOP_EVENT)
    loop = asyncio.new_event_loop()
    measurement = loop_measurement(loop, name="batch")
    go = threading.Event()
    blocked = threading.Event()

    def block_then_stop() -> None:
        blocked.set()
        go.wait(5)
        loop.stop()  # the probe queued meanwhile stays queued while the loop is stopped

    loop.call_soon(block_then_stop)
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        assert blocked.wait(5)
        measurement()  # queues a probe behind the blocked callback
        go.set()
        runner.join(5)
        measurement()  # the loop is stopped: idle, not late; the queued probe is void
        time.sleep(0.2)  # idle time that must not show up as lag
        loop.run_until_complete(asyncio.sleep(0))  # the void probe runs here
        assert events == []
        loop.run_until_complete(_poll_inside(measurement))
    finally:
        go.set()
        loop.close()
    assert len(events) == 1
    assert events[0].metadata == {"loop": "batch", "stalled": False}
    assert events[0].measurements["lag"] < 100_000_000


async def _poll_inside(measurement: Callable[[], object]) -> None:
    measurement()
    await asyncio.sleep(0.01)


def test_watch_loop_outside_a_coroutine_needs_the_loop() -> None:
    with pytest.raises(RuntimeError, match="pass the loop explicitly"):
        Poller([]).watch_loop()
    with pytest.raises(ValueError, match="expected an asyncio event loop"):
        loop_measurement(object())  # type: ignore[arg-type]


# -- metric definitions -----------------------------------------------------------------------


def test_runtime_metrics_read_what_the_measurements_emit() -> None:
    from radiosonde.metrics import Metric

    metrics = runtime_metrics()
    assert all(isinstance(metric, Metric) for metric in metrics)
    with capture_events("radiosonde.*") as events:
        poller = Poller(default_measurements(use_psutil=False), period=0.01)
        gc.collect()
        poller.poll_now()

        async def main() -> None:
            poller.watch_loop(name="main")
            poller.poll_now()  # schedules a probe ...
            poller.poll_now()  # ... that has not run yet: a stalled reading
            await asyncio.sleep(0.01)

        asyncio.run(main())
        Poller([lambda: 1 / 0], name="broken").poll_now()
    by_event: dict[tuple[str, ...], list[Any]] = {}
    for event in events:
        by_event.setdefault(event.event, []).append(event)
    assert any(e.metadata.get("stalled") is True for e in by_event[EVENT_LOOP_EVENT])
    for metric in metrics:
        if metric.event_name == OVERRUN_EVENT:
            continue  # needs a slow round; the counter does not read measurements anyway
        emitted = by_event.get(metric.event_name)
        assert emitted, f"{metric.name}: its event is never emitted"
        kept = [e for e in emitted if metric.tags_for(e.metadata) is not None]
        assert kept, f"{metric.name}: no emitted event feeds it"
        # On Linux every value is known: a metric never sees an event it cannot read (the
        # metrics layer would count and log a skip), stalled loop readings included.
        for event in kept:
            assert metric.value(event.measurements, event.metadata) is not None, (metric, event)


def test_runtime_metrics_render_in_prometheus() -> None:
    from radiosonde.reporters.prometheus import PrometheusReporter

    reporter = PrometheusReporter(runtime_metrics(), port=0)  # every name is a valid family
    reporter.start()
    try:
        Poller(default_measurements(use_psutil=False)).poll_now()
        text = reporter.render().decode()
    finally:
        reporter.stop()
    assert 'radiosonde_runtime_gc_collections_total{generation="2"}' in text
    assert "radiosonde_runtime_memory_rss_bytes " in text
    assert "radiosonde_runtime_cpu_user_time_seconds_total " in text
