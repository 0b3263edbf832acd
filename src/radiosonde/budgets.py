"""Performance budgets: timed operations checked against a budget, and a monitor of their p95.

Three ways to put an operation under a budget (default 200 ms, see :mod:`radiosonde.config`)::

    from radiosonde.budgets import emit_event, telemetry, with_telemetry

    messages = with_telemetry(
        ("famichat", "message_service", "get_conversation_messages"),
        lambda: service.get_conversation_messages(conversation_id),
        {"conversation_id": conversation_id},
        performance_budget_ms=50,
    )

    @telemetry(("famichat", "message_service", "send_message"), filter_sensitive_metadata=True)
    async def send_message(conversation_id: str, body: bytes) -> Message: ...

    emit_event(("famichat", "upload", "done"), {"duration": elapsed_ns}, {"kind": "image"})

:func:`with_telemetry` and :func:`telemetry` run the call in a :func:`radiosonde.span` named
after the operation: a ``start`` event, then ``stop`` or, when the call raises, ``exception``
(and the exception goes on up), with the span context metadata. Their ``stop`` and
``exception`` events also carry the metadata ``budget_ms`` (the budget that applied) and
``over_budget`` (``True`` when the call took longer), and ``stop`` the measurement
``budget_ms``. Calls that raise count against the budget too.

A call over its budget is counted (:func:`violations`) and reported with
:data:`VIOLATION_EVENT`; every timed call is reported with :data:`OBSERVATION_EVENT`, which a
:class:`BudgetMonitor` turns into a rolling p95 per operation, ``exceeded``/``recovered``
events and ``status`` events for gauges (:func:`budget_metrics`).

A per-call ``performance_budget_ms`` above 200 ms is allowed but discouraged: it is logged as a
warning once per event name. With ``filter_sensitive_metadata=True`` the metadata handlers
receive has passed through :func:`radiosonde.redact.redact`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from radiosonde import config as _config
from radiosonde import events as _events
from radiosonde.events import EventName, EventNameLike, attach_many, detach, event_name, execute
from radiosonde.redact import redact
from radiosonde.spans import Span, _current

if TYPE_CHECKING:
    from radiosonde.metrics import Metric

__all__ = [
    "DISCOURAGED_ABOVE_MS",
    "EXCEEDED_EVENT",
    "OBSERVATION_EVENT",
    "RECOVERED_EVENT",
    "STATUS_EVENT",
    "VIOLATION_EVENT",
    "BudgetMonitor",
    "BudgetStatus",
    "budget_metrics",
    "emit_event",
    "telemetry",
    "violations",
    "with_telemetry",
]

P = ParamSpec("P")
R = TypeVar("R")

DISCOURAGED_ABOVE_MS: Final = 200.0
"""Per-call budgets above this many milliseconds are logged as a warning (once per event)."""

OBSERVATION_EVENT: Final[EventName] = ("radiosonde", "budget", "observation")
"""Every budgeted call: measurements ``duration`` (ns), ``budget_ms``; metadata ``event``
(the dotted operation name) and ``over_budget``."""

VIOLATION_EVENT: Final[EventName] = ("radiosonde", "budget", "violation")
"""A call over its budget: measurements ``count`` (1), ``duration`` (ns), ``budget_ms``;
metadata ``event``."""

EXCEEDED_EVENT: Final[EventName] = ("radiosonde", "budget", "exceeded")
"""A :class:`BudgetMonitor` saw an operation's p95 go over its budget (once per episode)."""

RECOVERED_EVENT: Final[EventName] = ("radiosonde", "budget", "recovered")
"""A :class:`BudgetMonitor` saw an operation's p95 come back within its budget."""

STATUS_EVENT: Final[EventName] = ("radiosonde", "budget", "status")
"""One per operation on each :meth:`BudgetMonitor.report`; see :class:`BudgetStatus`."""

_logger = logging.getLogger("radiosonde.budgets")
_monotonic_ns = time.monotonic_ns
_PLAN_CACHE_LIMIT = 4096
_NAME_LIMIT = 10_000


# -- plans: what is fixed for an (event, budget) pair ------------------------------------------


class _Plan:
    """The resolved names and budget of one operation (cached per event and budget override)."""

    __slots__ = ("budget_ms", "budget_ns", "label", "name")

    def __init__(self, name: EventName, budget_ms: float) -> None:
        self.name = name
        self.label = ".".join(name)
        self.budget_ms = budget_ms
        self.budget_ns = budget_ms * 1_000_000.0


# Keyed by the event as given, or (_OVERRIDE, event, budget) for a per-call budget: the common
# case (default budget) then hashes the name alone.
_OVERRIDE: Final = object()
_plans: dict[object, _Plan] = {}
# The settings the cached plans were built on; _FALLBACK when they could not be loaded.
_FALLBACK: Final = object()
_UNSET: Final = object()
_plans_settings: object = _UNSET
_lock = threading.Lock()
_violations: dict[str, int] = {}
_warned: set[str] = set()


def _plan(event: EventNameLike, override: float | None) -> _Plan:
    global _plans
    if _config._current is not _plans_settings:
        _follow_settings()
    key = event if override is None else (_OVERRIDE, event, override)
    try:
        return _plans[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable name (a list): resolved each time
        return _build_plan(event, override)
    plan = _build_plan(event, override)
    if len(_plans) >= _PLAN_CACHE_LIMIT:
        _plans = {}
    _plans[key] = plan
    return plan


def _follow_settings() -> None:
    # The default budget may have changed with configure(): forget the plans built on the old.
    global _plans, _plans_settings
    settings: object = _config._current
    if settings is None:
        if _plans_settings is _FALLBACK:
            return  # the environment is invalid and nobody configured since: keep the fallback
        settings = _load_settings()
    _plans = {}
    _plans_settings = settings


def _build_plan(event: EventNameLike, override: float | None) -> _Plan:
    name = event_name(event)
    if name[-1] == "*":
        raise ValueError(f"a budgeted operation needs a full event name, not a prefix: {event!r}")
    if override is None:
        return _Plan(name, _default_budget())
    budget = _check_budget(override)
    plan = _Plan(name, budget)
    if budget > DISCOURAGED_ABOVE_MS and plan.label not in _warned:
        if len(_warned) < _NAME_LIMIT:
            _warned.add(plan.label)
        _logger.warning(
            "radiosonde: performance budget of %g ms for %s is above %g ms; budgets above"
            " %g ms are discouraged, every operation should aim to complete within it",
            budget,
            plan.label,
            DISCOURAGED_ABOVE_MS,
            DISCOURAGED_ABOVE_MS,
        )
    return plan


def _check_budget(budget: object) -> float:
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        value = float(budget)
        if math.isfinite(value) and value > 0:
            return value
    raise ValueError(
        f"performance_budget_ms must be a number of milliseconds greater than 0, got {budget!r}"
    )


def _load_settings() -> object:
    try:
        return _config.get_settings()
    except _config.ConfigurationError as exc:
        # Timing a call must not fail because of the environment: fall back and say so once.
        _logger.error(
            "radiosonde: using the default performance budget of %g ms: %s",
            _config.DISCOURAGED_BUDGET_MS,
            exc,
        )
        return _FALLBACK


def _default_budget() -> float:
    if _config._current is not _plans_settings:
        _follow_settings()
    settings = _plans_settings
    if isinstance(settings, _config.Settings):
        return settings.performance_budget_ms
    return _config.DISCOURAGED_BUDGET_MS


# -- recording a finished call -----------------------------------------------------------------


def violations() -> dict[str, int]:
    """Calls over budget since start-up, per dotted operation name (a copy).

    At most 10,000 names are tracked; :data:`VIOLATION_EVENT` reports every violation.
    """
    with _lock:
        return dict(_violations)


def _metadata(metadata: Mapping[str, Any] | None, filter_sensitive: bool) -> dict[str, Any]:
    if not metadata:
        return {}
    if filter_sensitive:
        filtered: dict[str, Any] = redact(metadata)  # a Mapping always comes back as a dict
        return filtered
    return dict(metadata)


def _close(plan: _Plan, span: Span, start: int, exc: BaseException | None) -> None:
    """End ``span`` with the budget marks, then record the call (observation, violation)."""
    duration = _monotonic_ns() - start
    over = duration > plan.budget_ns
    if span._start is not None:  # the span records (something listens): mark its events
        metadata = span.metadata
        metadata["budget_ms"] = plan.budget_ms
        metadata["over_budget"] = over
        if exc is None:
            span.measurements["budget_ms"] = plan.budget_ms
    if exc is None:
        span.__exit__(None, None, None)
    else:
        span.__exit__(type(exc), exc, exc.__traceback__)
    if over or _events.has_handlers(OBSERVATION_EVENT):
        _record(plan, duration, over)


def _record(plan: _Plan, duration: float, over: bool) -> None:
    """Report a finished call: the observation (for monitors) and, over budget, the violation."""
    # Most calls have no observer (no monitor started): the caller checked the event core's
    # cache, where a name not resolved yet is missing (so it is executed, and resolved, here).
    execute(
        OBSERVATION_EVENT,
        {"duration": duration, "budget_ms": plan.budget_ms},
        {"event": plan.label, "over_budget": over},
    )
    if over:
        label = plan.label
        with _lock:
            if label in _violations or len(_violations) < _NAME_LIMIT:
                _violations[label] = _violations.get(label, 0) + 1
        execute(
            VIOLATION_EVENT,
            {"count": 1, "duration": duration, "budget_ms": plan.budget_ms},
            {"event": label},
        )


# The operation is a span, so its events, context and parent are a span's in every respect. The
# duration checked against the budget starts at the span's own start when it records; a span
# that nothing listens to reads no clock, so then we read one.


def _run(
    plan: _Plan,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    metadata: Mapping[str, Any] | None,
) -> Any:
    span = Span(plan.name, metadata)  # type: ignore[arg-type]  # Span copies any mapping
    span.__enter__()
    start = span._start if span._start is not None else _monotonic_ns()
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _close(plan, span, start, exc)
        raise
    if type(result) is CoroutineType:
        return _defer(plan, span, start, result)
    # _close, inlined: this is the common path.
    duration = _monotonic_ns() - start
    over = duration > plan.budget_ns
    if span._start is not None:
        span.metadata.update(budget_ms=plan.budget_ms, over_budget=over)
        span.measurements["budget_ms"] = plan.budget_ms
    span.__exit__(None, None, None)
    if over or _events.has_handlers(OBSERVATION_EVENT):
        _record(plan, duration, over)
    return result


def _defer(
    plan: _Plan, span: Span, start: int, awaitable: Coroutine[Any, Any, Any]
) -> Coroutine[Any, Any, Any]:
    """A plain function returned a coroutine (``lambda: fetch(id)``): the work happens when it
    is awaited, so the operation ends then. Leave the caller's context as it was, and make the
    span current again in the awaiting task."""
    token = span._token
    span._token = None
    if token is not None:
        with contextlib.suppress(ValueError):
            _current.reset(token)
    return _await_then_close(plan, span, start, awaitable)


async def _await_then_close(
    plan: _Plan, span: Span, start: int, awaitable: Coroutine[Any, Any, Any]
) -> Any:
    token = _current.set(span)
    try:
        result = await awaitable
    except BaseException as exc:
        _current.reset(token)
        _close(plan, span, start, exc)
        raise
    _current.reset(token)
    _close(plan, span, start, None)
    return result


async def _run_async(
    plan: _Plan,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    metadata: Mapping[str, Any] | None,
) -> Any:
    span = Span(plan.name, metadata)  # type: ignore[arg-type]  # Span copies any mapping
    span.__enter__()
    start = span._start if span._start is not None else _monotonic_ns()
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        _close(plan, span, start, exc)
        raise
    _close(plan, span, start, None)
    return result


# -- the public API ----------------------------------------------------------------------------


def emit_event(
    event: EventNameLike,
    measurements: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    *,
    performance_budget_ms: float | None = None,
    filter_sensitive_metadata: bool = False,
) -> None:
    """Emit ``event`` once, checking its duration against the budget.

    The duration is read from ``measurements``: ``duration`` in nanoseconds (radiosonde's
    native unit, as a span reports it) or ``duration_ms``. Handlers receive copies of
    ``measurements`` plus ``budget_ms`` and of ``metadata`` plus ``budget_ms`` and
    ``over_budget`` (``False`` when no duration was given); with
    ``filter_sensitive_metadata=True`` the metadata is redacted first. A duration over budget
    counts as a violation; any duration is reported to :data:`OBSERVATION_EVENT`.

    Raises ``ValueError`` for an invalid event name or budget (programming errors); never
    because of a handler.
    """
    plan = _plan(event, performance_budget_ms)
    values = dict(measurements) if measurements else {}
    data = _metadata(metadata, filter_sensitive_metadata)
    duration: float | None = None
    raw = values.get("duration")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        duration = raw
    else:
        raw = values.get("duration_ms")
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
            duration = raw * 1_000_000.0
    over = duration is not None and duration > plan.budget_ns
    values["budget_ms"] = plan.budget_ms
    data["budget_ms"] = plan.budget_ms
    data["over_budget"] = over
    execute(plan.name, values, data)
    if duration is not None:
        _record(plan, duration, over)


@overload
def with_telemetry(
    event: EventNameLike,
    fn: Callable[[], Coroutine[Any, Any, R]],
    metadata: Mapping[str, Any] | None = None,
    *,
    performance_budget_ms: float | None = None,
    filter_sensitive_metadata: bool = False,
) -> Coroutine[Any, Any, R]: ...
@overload
def with_telemetry(
    event: EventNameLike,
    fn: Callable[[], R],
    metadata: Mapping[str, Any] | None = None,
    *,
    performance_budget_ms: float | None = None,
    filter_sensitive_metadata: bool = False,
) -> R: ...
def with_telemetry(
    event: EventNameLike,
    fn: Callable[[], Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    performance_budget_ms: float | None = None,
    filter_sensitive_metadata: bool = False,
) -> Any:
    """Call ``fn()`` as the operation ``event``, timed and checked against the budget.

    Emits ``event + ("start",)`` and ``event + ("stop",)`` (or ``("exception",)``, after which
    the exception is re-raised) as :func:`radiosonde.span` does, with the budget marks described
    in the module docstring; returns what ``fn`` returns. When ``fn`` is an ``async`` function,
    or any function that returns a coroutine (``lambda: fetch(id)``), the result is a coroutine
    to await: the operation starts with the call and lasts until the coroutine completes.

    Raises ``ValueError`` for an invalid event name or budget before calling ``fn``.
    """
    plan = None
    if _config._current is _plans_settings:  # the fast path of _plan, inlined
        try:
            plan = _plans.get(
                event
                if performance_budget_ms is None
                else (_OVERRIDE, event, performance_budget_ms)
            )
        except TypeError:  # an unhashable name (a list)
            plan = None
    if plan is None:
        plan = _plan(event, performance_budget_ms)
    if filter_sensitive_metadata and metadata:
        metadata = redact(metadata)
    # An async function needs no test of its own: calling it returns a coroutine, which _run
    # hands to _defer to time until it completes.
    return _run(plan, fn, (), {}, metadata)


class telemetry:
    """Decorator: every call of the function is :func:`with_telemetry` of the operation ``event``.

    Works on plain and ``async`` functions. The event name and budget are checked when the
    decorator is applied (``ValueError``), and a budget above 200 ms is warned about then.

    >>> @telemetry(("famichat", "auth", "verify_token"), performance_budget_ms=50)
    ... def verify_token(token: str) -> bool: ...
    """

    __slots__ = ("budget", "event", "filter_sensitive_metadata", "metadata")

    def __init__(
        self,
        event: EventNameLike,
        metadata: Mapping[str, Any] | None = None,
        *,
        performance_budget_ms: float | None = None,
        filter_sensitive_metadata: bool = False,
    ) -> None:
        _plan(event, performance_budget_ms)  # validate (and warn) now, at import time
        self.event = event_name(event)
        self.budget = performance_budget_ms
        self.metadata = dict(metadata) if metadata else {}
        self.filter_sensitive_metadata = filter_sensitive_metadata

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"telemetry({'.'.join(self.event)!r}) cannot decorate the generator function"
                f" {fn.__qualname__}: its body runs after the call returns; use"
                " with_telemetry inside it instead"
            )
        event, budget = self.event, self.budget
        base = self.metadata
        if self.filter_sensitive_metadata and base:
            base = redact(base)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await _run_async(_plan(event, budget), fn, args, kwargs, base)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return _run(_plan(event, budget), fn, args, kwargs, base)

        return wrapper

    def __repr__(self) -> str:
        return f"telemetry({'.'.join(self.event)!r}, performance_budget_ms={self.budget!r})"


# -- the monitor -------------------------------------------------------------------------------

# Durations are kept in log-spaced buckets: bucket i holds [GAMMA**i, GAMMA**(i+1)) ms, so a
# quantile read from its bucket is within 1 % of the true value, whatever the scale. Durations
# are clamped to [1 microsecond, 1 hour]: at most ~1,100 buckets per interval.
_GAMMA: Final = 1.02
_LOG_GAMMA: Final = math.log(_GAMMA)
_MIN_MS: Final = 0.001
_MAX_MS: Final = 3_600_000.0


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One operation's state in a :class:`BudgetMonitor`, as its events report it.

    ``p95_ms`` is the quantile (p95 by default) of the durations in the window, ``None`` with
    fewer than ``min_samples`` samples (events then report 0); ``count`` the samples in the
    window; ``violations`` those over budget; ``exceeded`` whether an episode is open.
    """

    event: str
    p95_ms: float | None
    budget_ms: float
    count: int
    violations: int
    exceeded: bool

    def measurements(self) -> dict[str, Any]:
        """The measurements of the monitor's events for this status."""
        return {
            "p95_ms": self.p95_ms if self.p95_ms is not None else 0.0,
            "budget_ms": self.budget_ms,
            "violations": self.violations,
            "count": self.count,
            "exceeded": 1 if self.exceeded else 0,
        }


class _Interval:
    __slots__ = ("buckets", "count", "index", "maximum", "minimum", "violations")

    def __init__(self, index: int) -> None:
        self.index = index
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.violations = 0
        self.minimum = math.inf
        self.maximum = -math.inf


class _Series:
    __slots__ = ("budget_ms", "exceeded", "intervals")

    def __init__(self, budget_ms: float) -> None:
        self.budget_ms = budget_ms
        self.intervals: deque[_Interval] = deque()
        self.exceeded = False


class BudgetMonitor:
    """A rolling p95 per budgeted operation, checked against its budget.

    Listens to :data:`OBSERVATION_EVENT` (every :func:`with_telemetry`, :func:`telemetry` and
    timed :func:`emit_event` call) once :meth:`start` ed, and to the spans named with
    :meth:`watch`. The window of ``window_s`` seconds is a ring of ``intervals`` histograms,
    so memory stays bounded (at most ``max_events`` operations; more are ignored and counted
    in ``dropped``) and old samples leave the window an interval at a time.

    The p95 of an operation is checked when an observation opens a new interval, and on every
    :meth:`check` and :meth:`report`. When it goes over the budget (with at least
    ``min_samples`` samples), :data:`EXCEEDED_EVENT` is emitted and a warning logged, once per
    episode; when it comes back within the budget, or the window empties,
    :data:`RECOVERED_EVENT`. Both carry :meth:`BudgetStatus.measurements` and metadata ``event``
    and ``window_s``. :meth:`report` (every ``report_interval_s`` seconds in a background thread
    when set) emits one :data:`STATUS_EVENT` per operation, for :func:`budget_metrics`.

    ``clock`` returns seconds (``time.monotonic`` by default; inject one in tests).
    """

    def __init__(
        self,
        window_s: float = 300.0,
        *,
        intervals: int = 10,
        quantile: float = 0.95,
        min_samples: int = 1,
        report_interval_s: float | None = None,
        max_events: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(window_s, int | float) and math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a number of seconds > 0, got {window_s!r}")
        if type(intervals) is not int or intervals < 1:
            raise ValueError(f"intervals must be an integer >= 1, got {intervals!r}")
        if not (isinstance(quantile, float | int) and 0 < quantile <= 1):
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        if type(min_samples) is not int or min_samples < 1:
            raise ValueError(f"min_samples must be an integer >= 1, got {min_samples!r}")
        if report_interval_s is not None and not (
            isinstance(report_interval_s, int | float) and report_interval_s > 0
        ):
            raise ValueError(f"report_interval_s must be > 0 or None, got {report_interval_s!r}")
        if type(max_events) is not int or max_events < 1:
            raise ValueError(f"max_events must be an integer >= 1, got {max_events!r}")
        self.window_s = float(window_s)
        self.intervals = intervals
        self.interval_s = self.window_s / intervals
        self.quantile = float(quantile)
        self.min_samples = min_samples
        self.report_interval_s = report_interval_s
        self.max_events = max_events
        self.clock = clock
        self.dropped = 0
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self._handler_ids: list[str] = []
        self._watched: list[tuple[EventName, float | None]] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._id = f"radiosonde.budgets.monitor-{id(self):x}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> BudgetMonitor:
        """Attach to the budget observations (and watched spans); start the report thread."""
        if self._handler_ids:
            return self
        handler_id = f"{self._id}.observations"
        attach_many(handler_id, [OBSERVATION_EVENT], self._on_observation, on_error="keep")
        self._handler_ids.append(handler_id)
        for prefix, budget in self._watched:
            self._attach_watch(prefix, budget)
        if self.report_interval_s is not None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._report_loop, name="radiosonde-budget-monitor", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Detach and stop the report thread (waiting at most ``timeout`` seconds)."""
        for handler_id in self._handler_ids:
            detach(handler_id)
        self._handler_ids.clear()
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> BudgetMonitor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def watch(self, prefix: EventNameLike, budget_ms: float | None = None) -> None:
        """Also monitor the span ``prefix`` (its ``stop`` and ``exception`` events).

        For operations timed with :func:`radiosonde.span` rather than :func:`with_telemetry`
        (whose calls the monitor sees already: do not watch those too). ``budget_ms`` defaults
        to the configured default budget.
        """
        name = event_name(prefix)
        budget = None if budget_ms is None else _check_budget(budget_ms)
        self._watched.append((name, budget))
        if self._handler_ids:
            self._attach_watch(name, budget)

    def _attach_watch(self, prefix: EventName, budget: float | None) -> None:
        label = ".".join(prefix)
        handler_id = f"{self._id}.watch.{label}.{len(self._handler_ids)}"

        def on_span_end(
            _event: EventName, measurements: dict[str, Any], _metadata: dict[str, Any], _cfg: Any
        ) -> None:
            duration = measurements.get("duration")
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                self.observe(label, duration, budget if budget is not None else _default_budget())

        attach_many(
            handler_id,
            [(*prefix, "stop"), (*prefix, "exception")],
            on_span_end,
            on_error="keep",
        )
        self._handler_ids.append(handler_id)

    def _report_loop(self) -> None:
        interval = self.report_interval_s or 1.0
        while not self._stopping.wait(interval):
            try:
                self.report()
            except Exception:  # a reporting failure must not end the thread
                _logger.exception("radiosonde: budget monitor report failed")

    # -- recording -------------------------------------------------------------------------

    def _on_observation(
        self, _event: EventName, measurements: dict[str, Any], metadata: dict[str, Any], _cfg: Any
    ) -> None:
        self.observe(metadata["event"], measurements["duration"], measurements["budget_ms"])

    def observe(self, event: str, duration_ns: float, budget_ms: float) -> None:
        """Record one call of ``event`` that took ``duration_ns`` against ``budget_ms``."""
        duration_ms = duration_ns / 1_000_000.0
        clamped = min(max(duration_ms, _MIN_MS), _MAX_MS)
        bucket = math.floor(math.log(clamped) / _LOG_GAMMA)
        index = math.floor(self.clock() / self.interval_s)
        rolled = False
        with self._lock:
            series = self._series.get(event)
            if series is None:
                if len(self._series) >= self.max_events:
                    self.dropped += 1
                    return
                series = self._series[event] = _Series(budget_ms)
            series.budget_ms = budget_ms
            intervals = series.intervals
            if not intervals or intervals[-1].index != index:
                intervals.append(_Interval(index))
                rolled = len(intervals) > 1
            current = intervals[-1]
            current.buckets[bucket] = current.buckets.get(bucket, 0) + 1
            current.count += 1
            if duration_ms > budget_ms:
                current.violations += 1
            current.minimum = min(current.minimum, duration_ms)
            current.maximum = max(current.maximum, duration_ms)
        if rolled:
            self._emit_transitions([(event, series)], index)

    # -- evaluation ------------------------------------------------------------------------

    def status(self) -> dict[str, BudgetStatus]:
        """The current status of every operation seen (no events emitted, no transitions)."""
        index = math.floor(self.clock() / self.interval_s)
        with self._lock:
            return {
                event: self._status(event, series, index) for event, series in self._series.items()
            }

    def check(self) -> list[BudgetStatus]:
        """Evaluate every operation now: emit ``exceeded``/``recovered`` for the ones whose
        state changed, and return their statuses."""
        index = math.floor(self.clock() / self.interval_s)
        with self._lock:
            items = list(self._series.items())
        return self._emit_transitions(items, index)

    def report(self) -> dict[str, BudgetStatus]:
        """:meth:`check`, then emit one :data:`STATUS_EVENT` per operation; returns them all.

        An operation whose window is empty is reported once more (``count`` 0) and then
        forgotten.
        """
        self.check()
        index = math.floor(self.clock() / self.interval_s)
        statuses: dict[str, BudgetStatus] = {}
        with self._lock:
            for event, series in list(self._series.items()):
                statuses[event] = self._status(event, series, index)
                if not series.intervals and not series.exceeded:
                    del self._series[event]
        for event, status in statuses.items():
            execute(
                STATUS_EVENT,
                status.measurements(),
                {"event": event, "window_s": self.window_s},
            )
        return statuses

    def _emit_transitions(self, items: list[tuple[str, _Series]], index: int) -> list[BudgetStatus]:
        changed: list[tuple[EventName, BudgetStatus]] = []
        with self._lock:
            for event, series in items:
                status = self._status(event, series, index)
                over = status.p95_ms is not None and status.p95_ms > status.budget_ms
                if over and not series.exceeded:
                    series.exceeded = True
                    changed.append((EXCEEDED_EVENT, _replace_exceeded(status, True)))
                elif not over and series.exceeded:
                    series.exceeded = False
                    changed.append((RECOVERED_EVENT, _replace_exceeded(status, False)))
        for name, status in changed:
            if name == EXCEEDED_EVENT:
                _logger.warning(
                    "radiosonde: performance budget exceeded: %s p%g is %.1f ms over the last"
                    " %g s, budget %g ms (%d calls, %d over budget)",
                    status.event,
                    self.quantile * 100,
                    status.p95_ms or 0.0,
                    self.window_s,
                    status.budget_ms,
                    status.count,
                    status.violations,
                )
            else:
                _logger.info(
                    "radiosonde: performance budget recovered: %s p%g is %.1f ms, budget %g ms",
                    status.event,
                    self.quantile * 100,
                    status.p95_ms or 0.0,
                    status.budget_ms,
                )
            execute(name, status.measurements(), {"event": status.event, "window_s": self.window_s})
        return [status for _name, status in changed]

    def _status(self, event: str, series: _Series, index: int) -> BudgetStatus:
        # Called with the lock held: drop the intervals that left the window, then merge.
        intervals = series.intervals
        oldest = index - self.intervals + 1
        while intervals and intervals[0].index < oldest:
            intervals.popleft()
        count = sum(interval.count for interval in intervals)
        violations = sum(interval.violations for interval in intervals)
        p95: float | None = None
        if count >= self.min_samples and count > 0:
            merged: dict[int, int] = {}
            for interval in intervals:
                for bucket, n in interval.buckets.items():
                    merged[bucket] = merged.get(bucket, 0) + n
            rank = max(1, math.ceil(self.quantile * count))
            seen = 0
            for bucket in sorted(merged):
                seen += merged[bucket]
                if seen >= rank:
                    estimate = _GAMMA ** (bucket + 0.5)
                    break
            else:  # pragma: no cover - the counts always add up to `count`
                estimate = 0.0
            low = min(interval.minimum for interval in intervals)
            high = max(interval.maximum for interval in intervals)
            p95 = min(max(estimate, low), high)
        return BudgetStatus(event, p95, series.budget_ms, count, violations, series.exceeded)


def _replace_exceeded(status: BudgetStatus, exceeded: bool) -> BudgetStatus:
    return BudgetStatus(
        status.event, status.p95_ms, status.budget_ms, status.count, status.violations, exceeded
    )


def budget_metrics() -> list[Metric]:
    """Metric definitions that export the budgets, for any reporter (Prometheus, StatsD, ...).

    Gauges (``last_value``) from :data:`STATUS_EVENT`, tagged by ``event``:
    ``radiosonde.budget.status.p95_ms``, ``.budget_ms``, ``.violations`` (calls over budget in
    the window), ``.count`` (calls in the window), ``.exceeded`` (1 during an episode);
    counters: ``radiosonde.budget.violation.count`` (every call over budget) and
    ``radiosonde.budget.exceeded.count`` (episodes).
    """
    from radiosonde import metrics

    status = [
        ("p95_ms", "p95 of the operation's duration over the monitor's window, in milliseconds"),
        ("budget_ms", "the operation's performance budget, in milliseconds"),
        ("violations", "calls over budget in the monitor's window"),
        ("count", "calls in the monitor's window"),
        ("exceeded", "1 while the operation's p95 is over its budget, else 0"),
    ]
    return [
        *(
            metrics.last_value(f"radiosonde.budget.status.{key}", tags=["event"], description=text)
            for key, text in status
        ),
        metrics.counter(
            "radiosonde.budget.violation.count",
            tags=["event"],
            description="calls that took longer than their performance budget",
        ),
        metrics.counter(
            "radiosonde.budget.exceeded.count",
            tags=["event"],
            description="episodes of an operation's p95 going over its performance budget",
        ),
    ]


def _reset_for_tests() -> None:
    """Forget violations, warnings and cached plans (for radiosonde's own test suite)."""
    global _plans, _plans_settings
    with _lock:
        _violations.clear()
    _warned.clear()
    _plans = {}
    _plans_settings = _UNSET
