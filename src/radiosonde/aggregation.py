"""Aggregation on write: the store reporters read metric values from.

An :class:`Aggregator` attaches to the events of its metrics and folds every update into a
fixed-size state per series (a series is one combination of tag values): a count for counters,
a float for sums and last values, count/sum/min/max plus a :class:`~radiosonde._sketch.
QuantileSketch` for summaries, and the same plus explicit bucket counts for distributions.
Raw samples are not kept: a summary or distribution series holds at most 63 values not yet
folded into its state (see below), so memory depends on the number of series, not on traffic::

    from radiosonde import metrics as m
    from radiosonde.aggregation import Aggregator

    with Aggregator([m.counter("http.request.stop.duration", tags=["route"])]) as agg:
        ...  # the application runs, executing ("http", "request", "stop") events
        for metric_snapshot in agg.snapshot():
            ...

Contracts:

* Updates are never lost between threads, and no lock is held while user code runs (measurement
  functions, ``keep``/``drop``, ``tag_values``, ``__str__`` of tag values): values and tags are
  computed first, then the series is updated under the metric's lock (counters need no lock:
  ``next()`` on an :func:`itertools.count` is atomic under the GIL). Summaries and
  distributions append the value to the series' pending batch, without a lock
  (``list.append`` is atomic); the update that fills the batch (64 values) folds it into the
  sketch and the buckets under the lock, in a few C-level passes, and :meth:`Aggregator.
  snapshot` folds what is pending first, so a snapshot reflects every update made before it.
  The folding is done by the updating threads themselves: no background thread.
* An update that cannot be aggregated is skipped and counted by reason (:data:`SKIP_REASONS`);
  the first skip of each reason per metric is logged through the ``radiosonde`` logger. Nothing
  here raises into :func:`radiosonde.execute`.
* Cardinality guard: a metric holds at most ``max_series`` series; updates for new tag
  combinations past that go to one overflow series tagged ``{"overflow": "true"}`` and are
  counted.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from radiosonde import events
from radiosonde._sketch import QuantileSketch
from radiosonde.metrics import BYTE_UNITS, OVERFLOW_TAG, Metric, _number, tag_text
from radiosonde.selfmetrics import DROPPED_EVENT, SERIES_EVENT

__all__ = [
    "DEFAULT_MAX_SERIES",
    "DEFAULT_QUANTILES",
    "SKIP_REASONS",
    "Aggregator",
    "Evaluation",
    "MetricSnapshot",
    "MetricStats",
    "ScalarRows",
    "SeriesSnapshot",
    "default_buckets",
    "default_max_series",
    "evaluate",
    "set_default_max_series",
]

_SCALAR_KINDS = frozenset({"counter", "sum", "last_value"})

DEFAULT_MAX_SERIES = 2000
"""The series limit per metric when neither the metric nor the aggregator sets one."""

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
"""The quantiles a snapshot reports for summaries and distributions."""

MISSING_MEASUREMENT = "missing_measurement"
INVALID_MEASUREMENT = "invalid_measurement"
MISSING_TAG = "missing_tag"
FILTERED = "filtered"
ERROR = "error"
SKIP_REASONS: tuple[str, ...] = (
    MISSING_MEASUREMENT,
    INVALID_MEASUREMENT,
    MISSING_TAG,
    FILTERED,
    ERROR,
)
"""Why an update can be skipped: the measurement is missing; it is not a number (a bool, a
string, NaN...); a tag is missing from the metadata; ``keep``/``drop`` filtered the event out;
a user function (measurement, ``keep``, ``drop``, ``tag_values``, a tag's ``__str__``) raised."""

OVERFLOW_TAGS: Mapping[str, str] = {OVERFLOW_TAG: "true"}

_logger = logging.getLogger("radiosonde")
_default_max_series = DEFAULT_MAX_SERIES
_ids = itertools.count(1)
# next() on an itertools.count is atomic only while a GIL serialises C calls.
_ATOMIC_COUNT: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

_MS_LADDER = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)
_TIME_SCALE = {"nanosecond": 1e6, "microsecond": 1e3, "millisecond": 1.0, "second": 1e-3}
_BYTE_LADDER = tuple(float(64 * 4**i) for i in range(13))  # 64 B .. 1 GiB


def default_buckets(unit: str | None) -> tuple[float, ...]:
    """Bucket upper bounds for a distribution that sets none, chosen by its (reported) unit.

    Durations get a 1-2.5-5 ladder from 1 ms to 10 s expressed in the unit (``second``:
    0.001 .. 10; ``microsecond``: 1000 .. 1e7; ``nanosecond``: 1e6 .. 1e10); sizes in bytes get
    powers of 4 from 64 B to 1 GiB expressed in the unit (``kibibyte``: 0.0625 .. 1048576);
    anything else (no unit, ``"request"``, ``"minute"``...) the ladder 1, 2.5, 5 .. 10000.
    """
    if unit in _TIME_SCALE:
        factor = _TIME_SCALE[unit]
        return tuple(_round(b * factor) for b in (*_MS_LADDER, 10000.0))
    divisor = BYTE_UNITS.get(unit) if unit is not None else None
    if divisor is not None:
        return tuple(b / divisor for b in _BYTE_LADDER)
    return (*_MS_LADDER, 10000.0)


def _round(bound: float) -> float:
    # 2.5 * 1e-3 is 0.0025000000000000005: keep the bounds as users would write them.
    return float(f"{bound:.12g}")


def default_max_series() -> int:
    """The global series limit used by aggregators that are not given one."""
    return _default_max_series


def set_default_max_series(limit: int) -> None:
    """Set the global series limit for aggregators created from now on (default 2000)."""
    global _default_max_series
    _default_max_series = _check_limit(limit, "the default max_series")


def _check_limit(limit: object, what: str) -> int:
    if type(limit) is not int or limit < 1:
        raise ValueError(f"{what} must be a positive integer, got {limit!r}")
    return limit


# --------------------------------------------------------------------------------------------
# Snapshots


# Not frozen: a frozen dataclass costs ~6x more to build, and a scrape builds one per series.
@dataclass(slots=True)
class SeriesSnapshot:
    """The aggregated state of one series at snapshot time (a copy; treat it as read-only).

    ``tags`` is the label dict in ``metric.tags`` order (``{"overflow": "true"}`` for the
    overflow series). Counters, sums and last values set ``value`` and leave the rest empty.
    Summaries and distributions set ``count``, ``sum``, ``min``, ``max`` and ``quantiles``
    (from the sketch, within 1%); distributions also set ``bucket_bounds`` (finite upper
    bounds) and ``bucket_counts``: cumulative, one per bound plus a last one for +Inf that
    equals ``count``. A value ``v`` falls in every bucket whose bound is ``>= v``.
    """

    tags: dict[str, str]
    value: float | None = None
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    bucket_bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    quantiles: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricSnapshot:
    """One metric and its series (in creation order, the overflow series last)."""

    metric: Metric
    series: list[SeriesSnapshot]


class ScalarRows:
    """A counter's, sum's or last value's series as bare rows, for exporters that render
    thousands of series per scrape (see :meth:`Aggregator.snapshot_rows`).

    ``rows`` holds ``(tag values in metric.tags order, value)`` per series, in creation order;
    ``overflow`` the overflow series' value (``None``: no overflow series). :attr:`series`
    gives the same data as :class:`SeriesSnapshot` objects, as :class:`MetricSnapshot` has it.
    """

    __slots__ = ("metric", "overflow", "rows")

    def __init__(
        self, metric: Metric, rows: list[tuple[tuple[str, ...], float]], overflow: float | None
    ) -> None:
        self.metric = metric
        self.rows = rows
        self.overflow = overflow

    @property
    def series(self) -> list[SeriesSnapshot]:
        """The rows as series snapshots (built on each access)."""
        tags = self.metric.tags
        series = [
            SeriesSnapshot(dict(zip(tags, key, strict=True)), value=v) for key, v in self.rows
        ]
        if self.overflow is not None:
            series.append(SeriesSnapshot(dict(OVERFLOW_TAGS), value=self.overflow))
        return series

    def __repr__(self) -> str:
        return f"<ScalarRows {self.metric.name!r}: {len(self.rows)} series>"


@dataclass(frozen=True, slots=True)
class MetricStats:
    """The health of one metric in an aggregator: see :meth:`Aggregator.stats`."""

    metric: Metric
    series: int
    max_series: int
    overflow: int
    dropped: dict[str, int]


# --------------------------------------------------------------------------------------------
# Evaluating one update (the generic path, and the explanation of a skip)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one event contributes to one metric, or why it contributes nothing.

    Either ``value`` and ``tags`` are set and ``skipped`` is ``None``, or ``skipped`` is one of
    :data:`SKIP_REASONS` and ``detail`` says what happened in words.
    """

    value: float | None
    tags: tuple[str, ...] | None
    skipped: str | None = None
    detail: str = ""


def evaluate(
    metric: Metric, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
) -> Evaluation:
    """Compute the update ``metric`` takes from one event, like the aggregator does; never raises.

    The same semantics as :meth:`Metric.value` and :meth:`Metric.tags_for`, plus the reason for a
    skip. The checks run in this order: ``keep``/``drop``, the measurement, the tags.
    """
    try:
        return _evaluate(metric, measurements, metadata)
    except Exception as exc:  # a mapping whose methods raise, say
        return Evaluation(None, None, ERROR, f"{type(exc).__name__}: {exc}")


def _evaluate(  # noqa: PLR0911  (one return per reason to skip)
    metric: Metric, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
) -> Evaluation:
    try:
        if metric.keep is not None and not metric.keep(metadata):
            return Evaluation(None, None, FILTERED, "keep= returned false")
        if metric.drop is not None and metric.drop(metadata):
            return Evaluation(None, None, FILTERED, "drop= returned true")
    except Exception as exc:
        which = "keep" if metric.keep is not None else "drop"
        return Evaluation(None, None, ERROR, f"{which}= raised {type(exc).__name__}: {exc}")
    if metric.kind == "counter":
        value: float = 1.0
    else:
        what = (
            f"measurement {metric.measurement!r}"
            if isinstance(metric.measurement, str)
            else "the measurement function"
        )
        try:
            raw = metric._value(measurements, metadata)
        except KeyError as exc:
            detail = (
                f"{what} is missing"
                if isinstance(metric.measurement, str)
                else f"{what} raised KeyError: {exc}"
            )
            return Evaluation(None, None, MISSING_MEASUREMENT, detail)
        except Exception as exc:
            return Evaluation(None, None, ERROR, f"{what} raised {type(exc).__name__}: {exc}")
        number = _number(raw)
        if number is None:
            return Evaluation(None, None, INVALID_MEASUREMENT, f"{what} is {raw!r}, not a number")
        value = number * metric.scale if metric.scale != 1.0 else number
    if metric.tag_values is not None:
        try:
            source = metric.tag_values(metadata)
        except Exception as exc:
            return Evaluation(None, None, ERROR, f"tag_values= raised {type(exc).__name__}: {exc}")
    else:
        source = metadata
    tags: list[str] = []
    for tag in metric.tags:
        try:
            raw_tag = source[tag]
        except KeyError:
            where = "tag_values= result" if metric.tag_values is not None else "metadata"
            return Evaluation(None, None, MISSING_TAG, f"tag {tag!r} missing from the {where}")
        except Exception as exc:
            return Evaluation(None, None, ERROR, f"tag {tag!r}: {type(exc).__name__}: {exc}")
        try:
            tags.append(tag_text(raw_tag))
        except Exception as exc:
            return Evaluation(
                None, None, ERROR, f"tag {tag!r}: str() raised {type(exc).__name__}: {exc}"
            )
    return Evaluation(value, tuple(tags))


# --------------------------------------------------------------------------------------------
# The state of one metric


# How many values a summary or distribution series takes before it folds them into its state.
# Appending a value takes no lock; the fold (under the metric's lock) counts the batch in a few
# C-level passes. The per-value cost falls as the batch grows and is within a few percent of its
# floor at 64; the memory cost is at most this many floats per series.
_BATCH = 64


class _Summary(QuantileSketch):
    """A summary series: the sketch, plus the values not folded into it yet (``pending``).

    Updates append to ``pending`` without a lock (``list.append`` is atomic) and fold the batch
    once it holds :data:`_BATCH` values; a snapshot folds what is left first, so it sees every
    update. ``add`` (from the sketch) updates the state directly: callers hold the metric's lock.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[float] = []

    def fold(self, bounds: tuple[float, ...]) -> None:
        """Count the pending values (the caller holds the metric's lock)."""
        pending = self.pending
        values = pending[:]
        if not values:
            return
        # Copied, then deleted from the front rather than swapping in a new list: an append
        # racing with this lands after the copied values, stays, and is folded next time. Only
        # folds remove values, under the lock, so the front is still what was copied.
        del pending[: len(values)]
        total = sum(values, self.sum)  # in arrival order, as adding them one by one does
        if math.isnan(total):  # inf - inf (a NaN never gets here: updates skip it)
            values = [v for v in values if not math.isnan(v)]
            if not values:
                return
            total = sum(values, self.sum)
        values.sort()  # stable: see QuantileSketch._add_sorted
        self._count_buckets(values, bounds)
        self._add_sorted(values, total)

    def _count_buckets(self, ordered: list[float], bounds: tuple[float, ...]) -> None:
        pass


class _Distribution(_Summary):
    """A distribution series: a summary plus explicit bucket counts (not cumulative; +Inf
    last)."""

    __slots__ = ("counts",)

    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.counts = [0] * (buckets + 1)

    def _count_buckets(self, ordered: list[float], bounds: tuple[float, ...]) -> None:
        # Bucket i holds bounds[i-1] < v <= bounds[i]. In sorted values, one bisect per bound
        # that the batch spans (none when the batch lies within one bucket). A loop costs less
        # here than map() over the bounds: there are few, and each bisect starts past the last.
        n = len(ordered)
        counts = self.counts
        first = bisect_left(bounds, ordered[0])
        last = bisect_left(bounds, ordered[-1])
        below = 0
        for i in range(first, last):
            upto = bisect_right(ordered, bounds[i], below)
            counts[i] += upto - below
            below = upto
        counts[last] += n - below


class _MetricState:
    """The series of one metric and its bookkeeping; updated by compiled closures."""

    def __init__(self, metric: Metric, limit: int) -> None:
        self.metric = metric
        self.limit = limit
        self.lock = threading.Lock()
        self.series: dict[tuple[str, ...], Any] = {}
        self.overflow: Any = None
        self.overflow_hits = 0
        self.dropped: dict[str, int] = {}
        self.bounds: tuple[float, ...] = ()
        if metric.kind == "distribution":
            buckets = metric.reporter_options.get("buckets")
            self.bounds = tuple(buckets) if buckets else default_buckets(metric.unit)
        self.atomic_count = metric.kind == "counter" and _ATOMIC_COUNT

    def make(self) -> Any:
        kind = self.metric.kind
        if kind == "counter":
            return itertools.count() if self.atomic_count else [0.0]
        if kind == "sum":
            return [0.0]
        if kind == "last_value":
            return [None]
        if kind == "summary":
            return _Summary()
        return _Distribution(len(self.bounds))

    def fold(self, series: _Summary) -> None:
        """Fold the pending values of a summary or distribution series into its state, unless
        the lock is busy: then the next update folds (the batch grows by the updates made
        meanwhile), so an update never waits, nor deadlocks when a finalizer run by the garbage
        collector during a fold executes an event that updates the same metric."""
        lock = self.lock
        if lock.acquire(False):
            try:
                series.fold(self.bounds)
            finally:
                lock.release()

    def new_series(self, key: tuple[str, ...]) -> Any:
        """The series for a key not seen yet: a new one, or the overflow series at the limit."""
        with self.lock:
            state = self.series.get(key)
            if state is not None:  # another thread made it meanwhile
                return state
            if len(self.series) < self.limit:
                state = self.series[key] = self.make()
                return state
            self.overflow_hits += 1
            if self.overflow is None:
                self.overflow = self.make()
                first = True
            else:
                first = False
            state = self.overflow
        if first:
            _logger.warning(
                "radiosonde: metric %r (%s) reached its limit of %d series; updates for new tag"
                ' combinations now go to the series {overflow="true"} (counted as'
                " radiosonde.metrics.overflow; raise max_series= or drop a tag)",
                self.metric.name,
                self.metric.kind,
                self.limit,
            )
        return state

    def skip(
        self,
        reason: str | None,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
        detail: str | None = None,
    ) -> None:
        """Count a skipped update; never raises.

        ``reason=None`` means: find it out (the fast path raised). The fast path gives no
        ``detail``; it is worked out with :func:`evaluate` for the one skip that is logged (the
        fast path runs no user function, so evaluating again has no side effect).
        """
        try:
            if reason is None or (detail is None and reason not in self.dropped):
                evaluation = evaluate(self.metric, measurements, metadata)
                reason = reason or evaluation.skipped or ERROR
                detail = evaluation.detail
            with self.lock:
                n = self.dropped.get(reason, 0)
                self.dropped[reason] = n + 1
            if n == 0 and reason != FILTERED:
                _logger.warning(
                    "radiosonde: metric %r (%s) skipped an update of event %r: %s (%s). Skips"
                    " are counted in radiosonde.metrics.dropped; the next ones are not logged.",
                    self.metric.name,
                    self.metric.kind,
                    ".".join(self.metric.event_name),
                    reason,
                    detail or "no detail",
                )
        except Exception:
            pass

    def series_items(self) -> list[tuple[dict[str, str], Any]]:
        with self.lock:
            items = list(self.series.items())
            overflow = self.overflow
        tags = self.metric.tags
        labelled = [(dict(zip(tags, key, strict=True)), state) for key, state in items]
        if overflow is not None:
            labelled.append((dict(OVERFLOW_TAGS), overflow))
        return labelled

    def rows(self) -> ScalarRows:
        """The series of a counter, sum or last value, without per-series objects."""
        with self.lock:
            items = list(self.series.items())
            overflow = self.overflow
        if self.metric.kind == "counter":
            if self.atomic_count:
                # A count's value shows only in its repr; reading it takes no lock.
                rows = [(key, float(repr(state)[6:-1])) for key, state in items]
                total = None if overflow is None else float(repr(overflow)[6:-1])
            else:
                rows = [(key, state[0]) for key, state in items]
                total = None if overflow is None else overflow[0]
            return ScalarRows(self.metric, rows, total)
        rows = [(key, state[0]) for key, state in items if state[0] is not None]
        last = None if overflow is None else overflow[0]
        return ScalarRows(self.metric, rows, last)

    def snapshot(self, quantiles: Sequence[float]) -> MetricSnapshot:
        kind = self.metric.kind
        if kind in _SCALAR_KINDS:
            return MetricSnapshot(self.metric, self.rows().series)
        lock = self.lock
        result: list[SeriesSnapshot] = []
        for tags, state in self.series_items():
            with lock:  # per series, so that writers are never held up for long
                if state.pending:
                    state.fold(self.bounds)
                sketch = state.copy()
                counts: list[int] = list(state.counts) if kind == "distribution" else []
            if sketch.count == 0:
                continue
            cumulative = tuple(itertools.accumulate(counts)) if counts else ()
            values = sketch.quantiles(quantiles) if quantiles else []
            result.append(
                SeriesSnapshot(
                    tags,
                    count=sketch.count,
                    sum=sketch.sum,
                    min=sketch.min,
                    max=sketch.max,
                    bucket_bounds=self.bounds,
                    bucket_counts=cumulative,
                    quantiles={
                        q: v for q, v in zip(quantiles, values, strict=True) if v is not None
                    },
                )
            )
        return MetricSnapshot(self.metric, result)

    def stats(self) -> MetricStats:
        with self.lock:
            return MetricStats(
                metric=self.metric,
                series=len(self.series),
                max_series=self.limit,
                overflow=self.overflow_hits,
                dropped=dict(self.dropped),
            )


# --------------------------------------------------------------------------------------------
# Compiled update functions
#
# Each metric gets a handler generated for its shape: the measurement key and tag names are
# constants, tags are unrolled, and the series update is the minimum for the kind. This is the
# hot path of every application that uses metrics; the generic path (user functions, keep/drop,
# tag_values) goes through evaluate() instead. Both follow the same semantics (tested).


def _compile(state: _MetricState) -> events.Handler:
    """Generate the handler that feeds one metric: :func:`_source` run in :func:`_namespace`."""
    namespace = _namespace(state)
    name = f"<radiosonde {state.metric.kind} {state.metric.name}>"
    exec(compile(_source(state), name, "exec"), namespace)
    update: events.Handler = namespace["update"]
    return update


def _namespace(state: _MetricState) -> dict[str, Any]:
    metric = state.metric
    return {
        "MISSING_MEASUREMENT": MISSING_MEASUREMENT,
        "INVALID_MEASUREMENT": INVALID_MEASUREMENT,
        "MISSING_TAG": MISSING_TAG,
        "skip": state.skip,
        "number": _number,
        "tag_string": tag_text,
        "evaluate": evaluate,
        "metric": metric,
        "series": state.series,
        "new_series": state.new_series,
        "acquire": state.lock.acquire,
        "release": state.lock.release,
        "fold": state.fold,
        # Module globals are found a little faster than builtins.
        "STR": str,
        "FLOAT": float,
        "INT": int,
    }


def _source(state: _MetricState) -> str:
    metric = state.metric
    kind = metric.kind
    fast = (
        metric.keep is None
        and metric.drop is None
        and metric.tag_values is None
        and (kind == "counter" or isinstance(metric.measurement, str))
    )
    body: list[str] = []
    if not fast:
        body += [
            "e = evaluate(metric, measurements, metadata)",
            "if e.skipped is not None:",
            "    return skip(e.skipped, measurements, metadata, e.detail)",
            "v = e.value",
            "key = e.tags",
        ]
        key = "key"
    else:
        if kind != "counter":
            # Same checks as Metric.value, the common types first; a float() that overflows
            # raises into the outer except, whose skip() finds the reason with evaluate().
            body += [
                "try:",
                f"    v = measurements[{metric.measurement!r}]",
                "except KeyError:",
                "    return skip(MISSING_MEASUREMENT, measurements, metadata)",
                "c = v.__class__",
                "if c is FLOAT:",
                "    if v != v:",
                "        return skip(INVALID_MEASUREMENT, measurements, metadata)",
            ]
            if metric.scale == 1.0:
                body += ["elif c is INT:", "    v = float(v)"]
            else:
                body += ["elif c is INT:", "    pass"]
            body += [
                "else:",
                "    v = number(v)",
                "    if v is None:",
                "        return skip(INVALID_MEASUREMENT, measurements, metadata)",
            ]
            if metric.scale != 1.0:
                body.append(f"v = v * {metric.scale!r}")
        names = [f"t{i}" for i in range(len(metric.tags))]
        if names:
            # Same as Metric.tags_for: str values as they are, anything else via tag_text.
            body.append("try:")
            body += [f"    {n} = metadata[{t!r}]" for n, t in zip(names, metric.tags, strict=True)]
            body += ["except KeyError:", "    return skip(MISSING_TAG, measurements, metadata)"]
            for n in names:
                body += [f"if {n}.__class__ is not STR:", f"    {n} = tag_string({n})"]
        # The key tuple built in place (a local costs a store and a load).
        key = f"({', '.join(names)},)" if names else "()"
    body += ["try:", f"    s = series[{key}]", "except KeyError:", f"    s = new_series({key})"]
    if kind == "counter" and state.atomic_count:
        body.append("next(s)")
    elif kind == "last_value":
        body.append("s[0] = v")
    elif kind in ("counter", "sum"):
        increment = "1.0" if kind == "counter" else "v"
        body += ["acquire()", "try:", f"    s[0] += {increment}", "finally:", "    release()"]
    else:
        # No lock and no per-value arithmetic here: the value joins the series' pending batch
        # (list.append is atomic), which is folded in bulk once full (see _Summary).
        body += ["p = s.pending", "p.append(v)", f"if len(p) >= {_BATCH}:", "    fold(s)"]
    lines = ["def update(_event, measurements, metadata, _config):", "    try:"]
    lines += [f"        {line}" for line in body]
    lines += ["    except Exception:", "        skip(None, measurements, metadata)"]
    return "\n".join(lines) + "\n"


def _fan_out(
    event: events.EventName,
    measurements: dict[str, Any],
    metadata: dict[str, Any],
    updates: tuple[events.Handler, ...],
) -> None:
    for update in updates:
        update(event, measurements, metadata, None)


# --------------------------------------------------------------------------------------------
# The aggregator


class Aggregator:
    """Aggregates the updates of ``metrics`` in memory; reporters render its :meth:`snapshot`.

    ``max_series`` is the series limit of the metrics that set none themselves (``None``: the
    global default, :func:`default_max_series`). ``name`` labels its self-metrics (by default
    ``"aggregator-N"``). Nothing is counted until :meth:`attach` (or ``with``).

    Raises ``ValueError`` at construction for something that is not a metric definition, or
    for two metrics of the same kind and name (they would collide in every backend).
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        *,
        max_series: int | None = None,
        name: str | None = None,
    ) -> None:
        self._seq = next(_ids)
        self.name = name if name is not None else f"aggregator-{self._seq}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Aggregator name must be a non-empty string, got {name!r}")
        limit = (
            default_max_series()
            if max_series is None
            else _check_limit(max_series, "Aggregator max_series")
        )
        if isinstance(metrics, Metric):
            raise ValueError("Aggregator takes a list of metrics, got a single metric")
        checked: list[Metric] = []
        seen: set[tuple[str, str]] = set()
        for metric in metrics:
            if not isinstance(metric, Metric):
                raise ValueError(
                    f"Aggregator: {metric!r} is not a metric definition; make metrics with"
                    " radiosonde.metrics.counter(), sum(), last_value(), summary(), distribution()"
                )
            if (metric.kind, metric.name) in seen:
                raise ValueError(
                    f"Aggregator: {metric.kind} {metric.name!r} is defined twice; give one of"
                    " them another name"
                )
            seen.add((metric.kind, metric.name))
            checked.append(metric)
        self._metrics = tuple(checked)
        self._states = [
            _MetricState(metric, metric.max_series if metric.max_series is not None else limit)
            for metric in self._metrics
        ]
        self._lock = threading.Lock()
        self._handler_ids: list[str] = []
        # For add_metric() and record(): states by id(metric), the metrics fed only by
        # record() (never attached to events), and whether attach() is in effect.
        self._by_id = {id(state.metric): state for state in self._states}
        self._direct_only: set[int] = set()
        self._attach_wanted = False
        self._max_series = limit

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The metric definitions, in the order given."""
        return self._metrics

    def attach(self) -> None:
        """Attach to the events of the metrics: one handler per event name. Idempotent."""
        with self._lock:
            if self._handler_ids:
                return
            by_event: dict[events.EventName, list[events.Handler]] = {}
            for state in self._states:
                if id(state.metric) in self._direct_only:
                    continue
                by_event.setdefault(state.metric.event_name, []).append(_compile(state))
            ids: list[str] = []
            try:
                for event, updates in by_event.items():
                    handler_id = f"radiosonde.aggregator:{self.name}#{self._seq}:{'.'.join(event)}"
                    if len(updates) == 1:
                        events.attach(handler_id, event, updates[0], on_error="keep")
                    else:
                        events.attach(handler_id, event, _fan_out, tuple(updates), on_error="keep")
                    ids.append(handler_id)
            except Exception:
                for handler_id in ids:
                    events.detach(handler_id)
                raise
            self._handler_ids = ids
            self._attach_wanted = True

    def detach(self) -> None:
        """Detach from the events; the aggregated values stay readable. Idempotent."""
        with self._lock:
            self._attach_wanted = False
            for handler_id in self._handler_ids:
                events.detach(handler_id)
            self._handler_ids = []

    @property
    def attached(self) -> bool:
        """Whether the aggregator is attached to its events."""
        return bool(self._handler_ids)

    def add_metric(self, metric: Metric, *, attach: bool = True) -> None:
        """Aggregate one more metric from now on (a definition made at run time).

        Checked as at construction: ``ValueError`` for something that is not a metric
        definition, or when a metric of the same kind and name is already here. The metric's
        series limit is its own ``max_series``, else this aggregator's.

        ``attach=True``: the metric is fed by its events like the others, from now on if the
        aggregator is attached, else from :meth:`attach`. ``attach=False``: it is never attached
        to events and only :meth:`record` updates it (how the metrics facade's Prometheus
        backend feeds the metrics it defines for each name). Thread-safe; :meth:`snapshot` shows
        the metric once added.
        """
        if not isinstance(metric, Metric):
            raise ValueError(
                f"Aggregator.add_metric: {metric!r} is not a metric definition; make metrics with"
                " radiosonde.metrics.counter(), sum(), last_value(), summary(), distribution()"
            )
        with self._lock:
            if any(
                state.metric.kind == metric.kind and state.metric.name == metric.name
                for state in self._states
            ):
                raise ValueError(
                    f"Aggregator: {metric.kind} {metric.name!r} is defined twice; give one of"
                    " them another name"
                )
            limit = metric.max_series if metric.max_series is not None else self._max_series
            state = _MetricState(metric, limit)
            handler_id = None
            if attach and self._attach_wanted:
                handler_id = (
                    f"radiosonde.aggregator:{self.name}#{self._seq}:"
                    f"{'.'.join(metric.event_name)}+{len(self._states)}"
                )
                events.attach(handler_id, metric.event_name, _compile(state), on_error="keep")
                self._handler_ids.append(handler_id)
            if not attach:
                self._direct_only.add(id(metric))
            # Readers iterate the list without the lock: it only ever grows at its end.
            self._states.append(state)
            self._by_id[id(metric)] = state
            self._metrics = (*self._metrics, metric)

    def record(self, metric: Metric, value: float, tags: tuple[str, ...] = ()) -> bool:
        """Fold ``value`` into the series of ``metric`` with tag values ``tags`` (in
        ``metric.tags`` order), without an event: for callers that already hold the value and
        the tags, such as the metrics facade's Prometheus backend.

        The same semantics as an event-fed update: ``value`` is scaled by ``metric.scale``; a
        counter counts one (the value is not read); the series limit sends new tag combinations
        past it to the overflow series; a value that is not a number (a bool, NaN, a string) or
        a wrong number of tag values is skipped, counted by reason (:meth:`stats`) and logged
        once, and ``False`` is returned. Thread-safe; never raises because of the value or the
        tags. Raises ``ValueError`` if ``metric`` is not one of this aggregator's metrics
        (add it with :meth:`add_metric` first).
        """
        state = self._by_id.get(id(metric))
        if state is None or state.metric is not metric:
            raise ValueError(
                f"Aggregator {self.name!r}: {metric!r} is not one of its metrics; add it with"
                " add_metric() first"
            )
        try:
            kind = metric.kind
            if kind != "counter":
                if value.__class__ is not float or math.isnan(value):
                    number = _number(value)
                    if number is None:
                        state.skip(
                            INVALID_MEASUREMENT,
                            {"value": value},
                            {},
                            f"the recorded value is {value!r}, not a number",
                        )
                        return False
                    value = number
                if metric.scale != 1.0:
                    value = value * metric.scale
            if len(tags) != len(metric.tags):
                state.skip(
                    MISSING_TAG,
                    {"value": value},
                    {},
                    f"{len(tags)} tag values recorded for the tags {metric.tags!r}",
                )
                return False
            if any(tag.__class__ is not str for tag in tags):
                tags = tuple(tag_text(tag) for tag in tags)
            series = state.series.get(tags)
            if series is None:
                series = state.new_series(tags)
            if kind == "last_value":
                series[0] = value
            elif kind == "counter" and state.atomic_count:
                next(series)
            elif kind in ("counter", "sum"):
                with state.lock:
                    series[0] += 1.0 if kind == "counter" else value
            elif kind == "summary":
                with state.lock:
                    series.add(value)
            else:
                bucket = bisect_left(state.bounds, value)
                with state.lock:
                    series.add(value)
                    series.counts[bucket] += 1
            return True
        except Exception as exc:
            state.skip(ERROR, {"value": value}, {}, f"record raised {type(exc).__name__}: {exc}")
            return False

    def recorder(self, metric: Metric) -> Callable[[float, tuple[str, ...]], bool]:
        """``record`` bound to ``metric``: ``recorder(metric)(value, tags)`` does what
        ``record(metric, value, tags)`` does, in about half the time, for callers that update
        one metric many times. Raises ``ValueError`` now if ``metric`` is not one of this
        aggregator's metrics.
        """
        state = self._by_id.get(id(metric))
        if state is None or state.metric is not metric:
            raise ValueError(
                f"Aggregator {self.name!r}: {metric!r} is not one of its metrics; add it with"
                " add_metric() first"
            )
        record = self.record
        kind = metric.kind
        if metric.scale != 1.0 or kind == "counter":

            def generic(value: float, tags: tuple[str, ...]) -> bool:
                return record(metric, value, tags)

            return generic
        # The common case inline: a float that is not NaN (checked without a call), a series
        # that exists (so the tags are valid: they equal a key made by record()); anything else
        # goes through record().
        get = state.series.get
        lock = state.lock
        if kind == "last_value":

            def last_value(value: float, tags: tuple[str, ...]) -> bool:
                if value.__class__ is float:
                    series = get(tags)
                    if series is not None and value == value:  # noqa: PLR0124 (not NaN)
                        series[0] = value
                        return True
                return record(metric, value, tags)

            return last_value
        if kind == "sum":

            def add(value: float, tags: tuple[str, ...]) -> bool:
                if value.__class__ is float:
                    series = get(tags)
                    if series is not None and value == value:  # noqa: PLR0124 (not NaN)
                        with lock:
                            series[0] += value
                        return True
                return record(metric, value, tags)

            return add
        bounds = state.bounds if kind == "distribution" else None

        def observe(value: float, tags: tuple[str, ...]) -> bool:
            if value.__class__ is float:
                series = get(tags)
                if series is not None and value == value:  # noqa: PLR0124 (not NaN)
                    if bounds is None:
                        with lock:
                            series.add(value)
                    else:
                        bucket = bisect_left(bounds, value)
                        with lock:
                            series.add(value)
                            series.counts[bucket] += 1
                    return True
            return record(metric, value, tags)

        return observe

    def __enter__(self) -> Aggregator:
        self.attach()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def snapshot(
        self, *, quantiles: Sequence[float] = DEFAULT_QUANTILES, emit_stats: bool = True
    ) -> list[MetricSnapshot]:
        """The aggregated values of every metric, in the order of :attr:`metrics`.

        Series appear once they received an update. ``quantiles`` picks the quantiles computed
        for summaries and distributions (``()`` to skip them, e.g. for a Prometheus histogram).
        With ``emit_stats`` (the default) the self-metric events are emitted first, see
        :meth:`emit_stats`, so self-metrics aggregated here are current.
        """
        for q in quantiles:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantiles must be between 0 and 1, got {q!r}")
        if emit_stats:
            self.emit_stats()
        return [state.snapshot(quantiles) for state in self._states]

    def snapshot_rows(
        self, *, quantiles: Sequence[float] = DEFAULT_QUANTILES, emit_stats: bool = True
    ) -> list[MetricSnapshot | ScalarRows]:
        """:meth:`snapshot`, but counters, sums and last values come as :class:`ScalarRows`:
        bare ``(tag values, value)`` rows instead of a :class:`SeriesSnapshot` and a tag dict
        per series, which is most of a scrape's cost for 10,000 counters. For exporters."""
        for q in quantiles:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantiles must be between 0 and 1, got {q!r}")
        if emit_stats:
            self.emit_stats()
        return [
            state.rows() if state.metric.kind in _SCALAR_KINDS else state.snapshot(quantiles)
            for state in self._states
        ]

    def stats(self) -> list[MetricStats]:
        """Per metric, in order: series held, series limit, overflow hits, skipped updates by
        reason (only reasons that occurred). Running totals since construction."""
        return [state.stats() for state in self._states]

    def emit_stats(self) -> None:
        """Emit the self-metric events of :mod:`radiosonde.selfmetrics` for every metric."""
        for stats in self.stats():
            metadata = {
                "aggregator": self.name,
                "metric": stats.metric.name,
                "kind": stats.metric.kind,
            }
            events.execute(
                SERIES_EVENT, {"series": stats.series, "overflow": stats.overflow}, metadata
            )
            for reason, dropped in stats.dropped.items():
                events.execute(DROPPED_EVENT, {"dropped": dropped}, {**metadata, "reason": reason})

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<Aggregator {self.name!r} {len(self._metrics)} metrics, {state}>"
