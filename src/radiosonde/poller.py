"""The runtime poller: run measurements on a fixed-rate schedule in a background thread.

The Python counterpart of Erlang's ``telemetry_poller``. A measurement is any callable taking no
arguments that emits events itself with :func:`radiosonde.execute`; :func:`measure` turns a
function returning a dict into one. The defaults report the process: memory, CPU, file
descriptors, threads and the garbage collector, and :meth:`Poller.watch_loop` adds asyncio
event-loop lag and task count::

    from radiosonde.poller import Poller, measure, runtime_metrics

    poller = Poller(period=5.0)          # the default runtime measurements
    poller.add(measure("myapp.queue", lambda: {"length": queue.qsize()}))
    poller.start()
    ...
    poller.stop()

    reporter = PrometheusReporter(runtime_metrics())   # one line for a runtime scrape

Contracts:

* The schedule is fixed-rate on the monotonic clock: round ``k`` starts at
  ``start + init_delay + k * period``, however long earlier rounds took. A round still running
  when the next one is due makes the poller skip that tick (it never runs rounds back to back to
  catch up), emit ``("radiosonde", "poller", "overrun")`` and log a warning (once a minute).
* A measurement that raises is never removed (unlike ``telemetry_poller``): it is skipped for 1,
  2, 4, ... periods (capped by ``max_backoff_periods``), reported each time with
  ``("radiosonde", "poller", "failure")`` and logged (first failure with its traceback, then at
  most once a minute), and reported with ``("radiosonde", "poller", "recovery")`` when it
  succeeds again. Raising :class:`StopMeasurement` removes a measurement for good.
* A measurement still running after ``hang_timeout`` is reported as a failure (``kind``
  :class:`TimeoutError`) and abandoned in its thread; a fresh thread carries on with the other
  measurements. The hung one is skipped until its call returns (it is never run twice at once),
  so at most one thread per hung measurement is ever left behind. All threads are daemons.
* Nothing a measurement does, raises or emits reaches the code that created the poller.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from radiosonde import _runtime
from radiosonde._runtime import (
    CPU_EVENT,
    EVENT_LOOP_EVENT,
    FDS_EVENT,
    GC_EVENT,
    MEMORY_EVENT,
    THREADS_EVENT,
    LoopMeasurement,
)
from radiosonde.events import EventName, EventNameLike, event_name, execute

if TYPE_CHECKING:
    import asyncio

    from radiosonde.metrics import Metric

__all__ = [
    "CPU_EVENT",
    "EVENT_LOOP_EVENT",
    "FAILURE_EVENT",
    "FDS_EVENT",
    "GC_EVENT",
    "MEMORY_EVENT",
    "OVERRUN_EVENT",
    "RECOVERY_EVENT",
    "THREADS_EVENT",
    "LoopMeasurement",
    "Measurement",
    "Poller",
    "StopMeasurement",
    "default_measurements",
    "loop_measurement",
    "measure",
    "runtime_metrics",
]

Measurement: TypeAlias = Callable[[], object]
"""A measurement: called with no arguments, emits its own events; the return value is ignored."""

FAILURE_EVENT: EventName = ("radiosonde", "poller", "failure")
"""A measurement raised or hung. Measurements ``consecutive_failures``, ``backoff_periods``;
metadata ``poller``, ``measurement``, ``kind`` (exception class), ``reason`` (the exception),
``stacktrace``."""

RECOVERY_EVENT: EventName = ("radiosonde", "poller", "recovery")
"""A failing measurement succeeded again. Measurement ``failures`` (how many in a row it had);
metadata ``poller``, ``measurement``."""

OVERRUN_EVENT: EventName = ("radiosonde", "poller", "overrun")
"""A round outlasted the period. Measurements ``duration`` (ns), ``skipped_ticks``; metadata
``poller``."""

_LOG_INTERVAL_S = 60.0
_MIN_PERIOD_S = 0.001

_logger = logging.getLogger("radiosonde.poller")


class StopMeasurement(Exception):
    """Raise from a measurement to remove it from its poller for good (logged at INFO)."""


class _Entry:
    """A measurement in a poller, with its failure and backoff bookkeeping."""

    __slots__ = (
        "failures",
        "last_logged",
        "lock",
        "measurement",
        "name",
        "next_tick",
        "suppressed",
    )

    def __init__(self, measurement: Measurement, name: str) -> None:
        self.measurement = measurement
        self.name = name
        # Held while the measurement runs: a measurement never runs twice at once (poll_now()
        # against the poller thread, or a fresh worker against an abandoned hung one).
        self.lock = threading.Lock()
        self.failures = 0
        self.next_tick = 0
        self.last_logged = float("-inf")
        self.suppressed = 0


class _Worker:
    """The thread that runs rounds; the scheduler replaces it when a measurement hangs."""

    def __init__(self, poller: Poller, stop: threading.Event, index: int) -> None:
        self.poller = poller
        self.stop = stop
        self.busy = False
        self.retired = False
        self.current: _Entry | None = None
        self.since = 0.0
        self._requests: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._loop, name=f"radiosonde-poller[{poller.name}]-worker-{index}", daemon=True
        )

    def submit(self, tick: int, due: float) -> None:
        self.busy = True
        self._requests.put((tick, due))

    def retire(self) -> None:
        self.retired = True
        self._requests.put(None)

    def _loop(self) -> None:
        while True:
            request = self._requests.get()
            if request is None or self.retired:
                return
            try:
                self.poller._round(request[0], request[1], self)
            except Exception:  # a bug of ours; the next tick gets a clean start
                _logger.exception("radiosonde: poller %r round failed", self.poller.name)
            finally:
                self.current = None
                self.busy = False


class Poller:
    """Run measurements every ``period`` seconds in a daemon thread (see the module docstring).

    ``measurements``: callables taking no arguments that emit events; ``None`` means
    :func:`default_measurements` (memory, CPU, file descriptors, threads, GC). ``init_delay``:
    seconds from :meth:`start` to the first round. ``name`` labels threads, logs and the
    ``poller`` metadata of the poller's own events. ``max_backoff_periods`` caps how many
    periods a failing measurement is skipped; ``hang_timeout`` (default ``3 * period``) is how
    long a measurement may run before it is reported as hung and left behind.

    Bad arguments raise :class:`ValueError` here, never later. Use :meth:`start`/:meth:`stop`
    or ``with Poller(...) as poller:``; :meth:`poll_now` runs every measurement once in the
    caller's thread, started or not.
    """

    def __init__(
        self,
        measurements: Iterable[Measurement] | None = None,
        period: float = 5.0,
        init_delay: float = 0.0,
        name: str = "radiosonde",
        *,
        max_backoff_periods: int = 16,
        hang_timeout: float | None = None,
    ) -> None:
        self.period = _seconds("period", period, minimum=_MIN_PERIOD_S)
        self.init_delay = _seconds("init_delay", init_delay, minimum=0.0)
        if not isinstance(name, str) or not name:
            raise ValueError(f"Poller name must be a non-empty string, got {name!r}")
        self.name = name
        if (
            isinstance(max_backoff_periods, bool)
            or not isinstance(max_backoff_periods, int)
            or max_backoff_periods < 1
        ):
            raise ValueError(
                f"max_backoff_periods must be a positive integer, got {max_backoff_periods!r}"
            )
        self.max_backoff_periods = max_backoff_periods
        self.hang_timeout = (
            3 * self.period
            if hang_timeout is None
            else _seconds("hang_timeout", hang_timeout, minimum=_MIN_PERIOD_S)
        )
        if measurements is None:
            measurements = default_measurements()
        elif callable(measurements) or isinstance(measurements, str | bytes | Mapping):
            raise ValueError(
                f"measurements must be a list of callables, got {measurements!r};"
                " wrap a single measurement in a list"
            )
        entries = [_entry(m, None) for m in measurements]
        self._entries: tuple[_Entry, ...] = tuple(entries)
        self._lock = threading.Lock()  # guards _entries, start/stop and failure bookkeeping
        self._stop: threading.Event | None = None
        self._scheduler: threading.Thread | None = None
        self._worker: _Worker | None = None
        self._tick = 0
        self._workers_started = itertools.count(1)
        self._overruns_logged = float("-inf")
        self._overruns_suppressed = 0

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._stop is not None and not self._stop.is_set()

    def start(self) -> Poller:
        """Start polling in a daemon thread; returns the poller. RuntimeError if running."""
        with self._lock:
            if self.running:
                raise RuntimeError(f"poller {self.name!r} is running already")
            for entry in self._entries:
                entry.next_tick = 0  # backoff counts ticks of a run; a new run counts afresh
            stop = threading.Event()
            self._stop = stop
            self._scheduler = threading.Thread(
                target=self._schedule, args=(stop,), name=f"radiosonde-poller[{self.name}]"
            )
            self._scheduler.daemon = True
            self._scheduler.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop polling and wait up to ``timeout`` seconds (``None``: no limit) for the threads.

        A round in progress finishes the measurement it is in and skips the rest. Returns True
        when the threads have ended, False (and logs a warning) when a measurement is still
        running after ``timeout``; that daemon thread then ends on its own when the call
        returns. Calling it on a poller that is not running does nothing and returns True.
        """
        with self._lock:
            stop, scheduler = self._stop, self._scheduler
            if stop is None or scheduler is None:
                return True
            stop.set()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        current = threading.current_thread()
        if scheduler is not current:
            scheduler.join(timeout)
        worker = self._worker
        if worker is not None:
            worker.retire()
            if worker.thread is not current and worker.thread.ident is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                worker.thread.join(remaining)
        ended = not scheduler.is_alive() and (worker is None or not worker.thread.is_alive())
        ours = current is scheduler or (worker is not None and current is worker.thread)
        if not ended and not ours:
            busy = worker.current.name if worker is not None and worker.current else None
            _logger.warning(
                "radiosonde: poller %r did not stop within %s s (measurement %r still running);"
                " its daemon thread will end when the call returns",
                self.name,
                timeout,
                busy,
            )
        return ended

    def __enter__(self) -> Poller:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- measurements -------------------------------------------------------------------------

    @property
    def measurements(self) -> list[Measurement]:
        """The measurements currently polled, in order (a copy)."""
        return [entry.measurement for entry in self._entries]

    def add(self, measurement: Measurement, *, name: str | None = None) -> Measurement:
        """Add a measurement (running or not) and return it; ``name`` labels its failures."""
        entry = _entry(measurement, name)
        with self._lock:
            self._entries = (*self._entries, entry)
        return measurement

    def remove(self, measurement: Measurement) -> bool:
        """Remove a measurement; True if it was there. A call in progress is not interrupted."""
        with self._lock:
            kept = tuple(e for e in self._entries if e.measurement is not measurement)
            removed = len(kept) != len(self._entries)
            self._entries = kept
        return removed

    def watch_loop(
        self, loop: asyncio.AbstractEventLoop | None = None, *, name: str | None = None
    ) -> LoopMeasurement:
        """Measure an asyncio loop's lag and task count every period (see :func:`loop_measurement`).

        Without ``loop``, the running loop of the calling coroutine. Returns the measurement (to
        :meth:`remove` it); it removes itself when the loop is closed or garbage-collected.
        """
        measurement = loop_measurement(loop, name=name)
        self.add(measurement, name=measurement.name)
        return measurement

    def poll_now(self) -> None:
        """Run every measurement once, now, in the calling thread; never raises.

        Measurements in backoff run too (a success ends the backoff); one already running in
        the poller thread is skipped rather than waited for.
        """
        for entry in self._entries:
            self._run(entry, self._tick)

    # -- the schedule -------------------------------------------------------------------------

    def _schedule(self, stop: threading.Event) -> None:
        period = self.period
        origin = time.monotonic() + self.init_delay
        tick = 0
        try:
            while True:
                due = origin + tick * period
                while (delay := due - time.monotonic()) > 0:
                    if stop.wait(delay):
                        return
                if stop.is_set():
                    return
                self._tick = tick
                self._dispatch(tick, due, stop)
                # Fixed rate: the next tick is the next multiple of the period from the origin,
                # so a late wake-up or a slow round skips ticks instead of shifting them.
                tick = max(tick + 1, math.floor((time.monotonic() - origin) / period) + 1)
        except Exception:  # pragma: no cover - a bug of ours must not pass silently
            _logger.exception("radiosonde: poller %r scheduler stopped", self.name)
        finally:
            worker = self._worker
            if worker is not None and worker.stop is stop:  # not a worker of a later start()
                worker.retire()

    def _dispatch(self, tick: int, due: float, stop: threading.Event) -> None:
        worker = self._worker
        if worker is not None and worker.busy:
            entry = worker.current
            if entry is None or time.monotonic() - worker.since <= self.hang_timeout:
                return  # an overrun: the round reports it when it ends
            self._hung(entry, tick, time.monotonic() - worker.since)
            worker.retire()
            worker = None
        if (
            worker is None
            or worker.retired
            or worker.stop is not stop
            or not worker.thread.is_alive()  # ended by a BaseException (SystemExit) in a call
        ):
            worker = _Worker(self, stop, next(self._workers_started))
            self._worker = worker
            worker.thread.start()
        worker.submit(tick, due)

    def _round(self, tick: int, due: float, worker: _Worker) -> None:
        for entry in self._entries:
            if worker.retired or worker.stop.is_set():
                return
            if tick < entry.next_tick:
                continue
            worker.since = time.monotonic()
            worker.current = entry
            self._run(entry, tick)
            worker.current = None
        late = time.monotonic() - due
        if late > self.period and not worker.retired:
            self._overran(late, int(late // self.period))

    # -- running one measurement --------------------------------------------------------------

    def _run(self, entry: _Entry, tick: int) -> None:
        if not entry.lock.acquire(blocking=False):
            return  # running elsewhere: in poll_now(), or hung in an abandoned worker
        try:
            try:
                entry.measurement()
            except StopMeasurement as exc:
                self.remove(entry.measurement)
                _logger.info(
                    "radiosonde: poller %r removed measurement %r: %s", self.name, entry.name, exc
                )
                return
            except _runtime.LoopGone as exc:
                self.remove(entry.measurement)
                _logger.info("radiosonde: poller %r stopped watching: %s", self.name, exc)
                return
            except (Exception, SystemExit) as exc:  # sys.exit() in a thread only ends the thread
                self._failed(entry, exc, tick)
                return
            if entry.failures:
                self._recovered(entry)
        except Exception:  # reporting must never take the poller down
            pass
        finally:
            entry.lock.release()

    def _failed(self, entry: _Entry, exc: BaseException, tick: int) -> None:
        with self._lock:
            entry.failures += 1
            failures = entry.failures
            backoff = min(2 ** min(failures - 1, 62), self.max_backoff_periods)
            entry.next_tick = tick + backoff + 1
            now = time.monotonic()
            log = failures == 1 or now - entry.last_logged >= _LOG_INTERVAL_S
            suppressed = entry.suppressed
            if log:
                entry.last_logged = now
                entry.suppressed = 0
            else:
                entry.suppressed += 1
        if log:
            _logger.warning(
                "radiosonde: poller %r measurement %r failed (%d in a row; skipped for %d"
                " periods; %d failures not logged since the last report): %s: %s",
                self.name,
                entry.name,
                failures,
                backoff,
                suppressed,
                type(exc).__name__,
                exc,
                exc_info=exc if failures == 1 else None,
            )
        execute(
            FAILURE_EVENT,
            {"consecutive_failures": failures, "backoff_periods": backoff},
            {
                "poller": self.name,
                "measurement": entry.name,
                "kind": type(exc),
                "reason": exc,
                "stacktrace": traceback.extract_tb(exc.__traceback__),
            },
        )

    def _hung(self, entry: _Entry, tick: int, running_for: float) -> None:
        exc = TimeoutError(
            f"measurement {entry.name!r} still running after {running_for:.3f} s"
            f" (hang_timeout {self.hang_timeout} s); left behind in its thread"
        )
        with contextlib.suppress(Exception):
            self._failed(entry, exc, tick)

    def _recovered(self, entry: _Entry) -> None:
        with self._lock:
            failures, entry.failures = entry.failures, 0
            entry.next_tick = 0
            entry.suppressed = 0
            entry.last_logged = float("-inf")
        _logger.info(
            "radiosonde: poller %r measurement %r recovered after %d failures",
            self.name,
            entry.name,
            failures,
        )
        execute(
            RECOVERY_EVENT, {"failures": failures}, {"poller": self.name, "measurement": entry.name}
        )

    def _overran(self, late: float, skipped: int) -> None:
        try:
            now = time.monotonic()
            if now - self._overruns_logged >= _LOG_INTERVAL_S:
                suppressed, self._overruns_suppressed = self._overruns_suppressed, 0
                self._overruns_logged = now
                _logger.warning(
                    "radiosonde: poller %r round took %.3f s, longer than its %s s period;"
                    " skipped %d ticks (%d more overruns not logged since the last report)",
                    self.name,
                    late,
                    self.period,
                    skipped,
                    suppressed,
                )
            else:
                self._overruns_suppressed += 1
            execute(
                OVERRUN_EVENT,
                {"duration": int(late * 1e9), "skipped_ticks": skipped},
                {"poller": self.name},
            )
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<Poller {self.name!r} period={self.period} {state} measurements={len(self._entries)}>"
        )


def default_measurements(*, use_psutil: bool | None = None) -> list[Measurement]:
    """The runtime measurements: memory, CPU, file descriptors, threads and GC, in that order.

    ``use_psutil``: ``None`` uses psutil when it is installed (``radiosonde[runtime]``) and the
    standard library otherwise; ``True`` requires it (ImportError naming the extra); ``False``
    never uses it. Values a platform cannot give are left out of the event's measurements.
    """
    psutil = None if use_psutil is False else _runtime.load_psutil(required=bool(use_psutil))
    return [
        _runtime.MemoryMeasurement(psutil),
        _runtime.CpuMeasurement(psutil),
        _runtime.FdsMeasurement(psutil),
        _runtime.ThreadsMeasurement(psutil),
        _runtime.GcMeasurement(psutil),
    ]


def loop_measurement(
    loop: asyncio.AbstractEventLoop | None = None, *, name: str | None = None
) -> LoopMeasurement:
    """A measurement of an asyncio loop: ``("radiosonde", "runtime", "event_loop")``.

    Each poll schedules a callback on the loop with ``call_soon_threadsafe`` and emits, when
    it runs, ``lag`` (nanoseconds between scheduling and running) and ``tasks`` (the loop's
    unfinished tasks, counted inside the loop), with metadata ``loop`` (``name``, default
    ``"loop-<id>"``) and ``stalled=False``. While the loop is blocked, each poll emits the lag
    so far with ``stalled=True`` and no ``tasks``. Without ``loop``, the running loop.
    """
    import asyncio  # here, not at import time: most users of the poller have no loop

    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "loop_measurement()/watch_loop() without a loop must be called from a coroutine"
                " running in that loop; pass the loop explicitly otherwise"
            ) from None
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise ValueError(f"expected an asyncio event loop, got {loop!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"the loop name must be a non-empty string, got {name!r}")
    return LoopMeasurement(loop, name)


class _Measured:
    """What :func:`measure` returns: calls the function and emits its dict as measurements."""

    __slots__ = ("event", "function", "metadata", "name")

    def __init__(
        self, event: EventName, function: Callable[[], Any], metadata: dict[str, Any], name: str
    ) -> None:
        self.event = event
        self.function = function
        self.metadata = metadata
        self.name = name

    def __call__(self) -> None:
        values = self.function()
        if values is None:
            return
        if not isinstance(values, Mapping):
            raise TypeError(
                f"{self.name}: the function must return a dict of measurements (or None to"
                f" skip), got {type(values).__name__}"
            )
        execute(self.event, dict(values), dict(self.metadata))

    def __repr__(self) -> str:
        return f"measure({self.event!r}, {self.function!r})"


def measure(
    event: EventNameLike,
    function: Callable[[], Mapping[str, Any] | None],
    *,
    metadata: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Measurement:
    """A measurement that emits ``event`` with the dict ``function()`` returns as measurements.

    ``function()`` returning ``None`` skips that poll; returning anything else that is not a
    mapping is a failure (reported and backed off like an exception). ``metadata`` is sent
    with every event. ``name`` labels failures (default: the event name, dotted).
    """
    canonical = event_name(event)
    if not callable(function):
        raise ValueError(
            f"measure({event!r}, ...): the function must be callable, got {function!r}"
        )
    if inspect.iscoroutinefunction(function):
        raise ValueError(f"measure({event!r}, ...): async functions are not supported")
    label = name if name is not None else ".".join(canonical)
    return _Measured(canonical, function, dict(metadata or {}), label)


def runtime_metrics() -> list[Metric]:
    """Metric definitions for every default runtime event, ready for a reporter.

    ``PrometheusReporter(runtime_metrics())`` gives a runtime scrape. Cumulative values (CPU
    times, GC collections) are ``last_value`` metrics marked ``prometheus_type="counter"``;
    durations are converted to seconds or milliseconds; GC metrics are tagged ``generation``,
    event-loop metrics ``loop``, and the poller's own failures ``poller`` and ``measurement``.
    """
    from radiosonde import metrics as m

    counter_type = {"prometheus_type": "counter"}
    gc_tags = ["generation"]
    return [
        m.last_value(
            "radiosonde.runtime.memory.rss", unit="byte", description="Resident set size."
        ),
        m.last_value(
            "radiosonde.runtime.memory.vms", unit="byte", description="Virtual memory size."
        ),
        m.last_value(
            "radiosonde.runtime.memory.peak_rss",
            unit="byte",
            description="Peak resident set size since the process started.",
        ),
        m.last_value(
            "radiosonde.runtime.cpu.user_time",
            unit="second",
            description="CPU time spent in user mode since the process started.",
            reporter_options=counter_type,
        ),
        m.last_value(
            "radiosonde.runtime.cpu.system_time",
            unit="second",
            description="CPU time spent in the kernel since the process started.",
            reporter_options=counter_type,
        ),
        m.last_value(
            "radiosonde.runtime.cpu.utilisation",
            unit="percent",
            description="CPU used over the last poll period, in percent of one CPU.",
        ),
        m.last_value("radiosonde.runtime.fds.count", description="Open file descriptors."),
        m.last_value(
            "radiosonde.runtime.fds.limit", description="Soft limit on open file descriptors."
        ),
        m.last_value("radiosonde.runtime.threads.count", description="Python threads alive."),
        m.last_value(
            "radiosonde.runtime.threads.os_count",
            description="OS threads of the process, native ones included.",
        ),
        m.last_value(
            "radiosonde.runtime.gc.count",
            tags=gc_tags,
            description="Allocations (gen 0) or younger collections since this generation's"
            " last collection.",
        ),
        m.last_value(
            "radiosonde.runtime.gc.collections",
            tags=gc_tags,
            description="Collections of the generation since the process started.",
            reporter_options=counter_type,
        ),
        m.last_value(
            "radiosonde.runtime.gc.collected",
            tags=gc_tags,
            description="Objects collected in the generation since the process started.",
            reporter_options=counter_type,
        ),
        m.last_value(
            "radiosonde.runtime.gc.uncollectable",
            tags=gc_tags,
            description="Uncollectable objects found in the generation since the process started.",
            reporter_options=counter_type,
        ),
        m.sum(
            "radiosonde.runtime.gc.pause_time",
            tags=gc_tags,
            unit=("nanosecond", "second"),
            description="Time spent in collections of the generation.",
        ),
        m.last_value(
            "radiosonde.runtime.gc.pause_max",
            tags=gc_tags,
            unit=("nanosecond", "millisecond"),
            description="Longest collection pause of the generation in the last poll period.",
        ),
        m.last_value(
            "radiosonde.runtime.event_loop.current_lag",
            measurement="lag",
            tags=["loop"],
            unit=("nanosecond", "millisecond"),
            description="How late a callback scheduled on the event loop ran (so far, if the"
            " loop is stalled).",
        ),
        m.distribution(
            "radiosonde.runtime.event_loop.lag",
            tags=["loop"],
            unit=("nanosecond", "millisecond"),
            keep=_probe_ran,
            description="Event-loop lag per poll.",
            reporter_options={"buckets": [1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000]},
        ),
        m.last_value(
            "radiosonde.runtime.event_loop.tasks",
            tags=["loop"],
            keep=_probe_ran,
            description="Unfinished asyncio tasks of the loop.",
        ),
        m.counter(
            "radiosonde.poller.failure.count",
            tags=["poller", "measurement"],
            description="Poller measurements that raised or hung.",
        ),
        m.counter(
            "radiosonde.poller.overrun.count",
            tags=["poller"],
            description="Poller rounds that outlasted their period.",
        ),
    ]


def _probe_ran(metadata: Mapping[str, Any]) -> bool:
    """Event-loop readings taken inside the loop (stalled ones have a partial lag, no tasks)."""
    return metadata.get("stalled") is False


def _entry(measurement: object, name: str | None) -> _Entry:
    if not callable(measurement):
        raise ValueError(
            f"a measurement must be a callable taking no arguments, got {measurement!r}"
        )
    if inspect.iscoroutinefunction(measurement):
        raise ValueError(
            f"measurement {measurement!r} is an async function; the poller calls measurements"
            " from a thread: make it a plain function (or use watch_loop() for loop metrics)"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"a measurement name must be a non-empty string, got {name!r}")
    return _Entry(measurement, name or _measurement_name(measurement))


def _measurement_name(measurement: Callable[..., object]) -> str:
    name = getattr(measurement, "name", None)
    if isinstance(name, str) and name:
        return name
    qualname = getattr(measurement, "__qualname__", None)
    if isinstance(qualname, str):
        module = getattr(measurement, "__module__", None)
        return f"{module}.{qualname}" if isinstance(module, str) else qualname
    return repr(measurement)


def _seconds(option: str, value: object, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{option} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < minimum:
        bound = "at least 0" if minimum == 0 else f"at least {minimum} s"
        raise ValueError(f"{option} must be finite and {bound}, got {value!r}")
    return seconds
