"""Backends of the metrics facade (:class:`radiosonde.Metrics`): Prometheus and StatsD.

The facade's calls carry a name, a value and tags, with no definition declared beforehand::

    from radiosonde import Metrics
    from radiosonde.reporters.facade import PrometheusBackend, StatsDBackend

    metrics = Metrics()  # PrometheusBackend() on PROMETHEUS_PORT (default 9568)
    metrics = Metrics(backends=[PrometheusBackend(), StatsDBackend(formatter="datadog")])
    metrics.increment("comments.created", region="eu")

:class:`PrometheusBackend` defines a metric the first time it sees a name (``increment``: a sum
exposed as the counter ``<name>_total``; ``gauge``: a last value; ``histogram``: a
distribution, i.e. a Prometheus histogram) with the tag keys of that first call as its labels,
and then updates its series directly in the reporter's aggregator, with the same series limit,
skip counting and thread safety as event-fed metrics. :class:`StatsDBackend` sends each call as
a StatsD line (``|c``, ``|g``, ``|ms`` or with DogStatsD ``|d``/``|h``) through a
:class:`~radiosonde.reporters.statsd.StatsDReporter`'s buffer and flusher.

Both follow the facade's rule: a call never raises and never blocks. What cannot be honoured is
skipped (or adjusted), counted in :meth:`stats`, reported as a ``radiosonde.reporter.errors``
self-metric (:func:`radiosonde.selfmetrics.report_error`, ``kind`` = the reason) and logged
once per reason and name. Memory is bounded: at most ``max_names`` distinct names per backend
(calls for further names are skipped and counted), and each name's series are bounded by the
reporter's series limit.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, Generic, Literal, Protocol, Self, TypeVar

from radiosonde import metrics as m
from radiosonde.aggregation import Aggregator
from radiosonde.events import EventName
from radiosonde.metrics import OVERFLOW_TAG, Metric
from radiosonde.reporters._exposition import sanitize_metric_name
from radiosonde.reporters.prometheus import PrometheusReporter
from radiosonde.reporters.statsd import Formatter, StatsDReporter
from radiosonde.selfmetrics import report_error

__all__ = ["DEFAULT_MAX_NAMES", "SKIP_REASONS", "PrometheusBackend", "StatsDBackend"]

DEFAULT_MAX_NAMES: Final = 1000
"""Distinct facade names one backend takes (per kind for Prometheus); calls for more are
skipped and counted as ``too_many_names``."""

FacadeKind = Literal["increment", "gauge", "histogram"]

TOO_MANY_NAMES: Final = "too_many_names"
NAME_CLASH: Final = "name_clash"
TAG_MISMATCH: Final = "tag_mismatch"
ERROR: Final = "error"
SKIPPED: Final = "skipped"
SKIP_REASONS: Final = (TOO_MANY_NAMES, NAME_CLASH, TAG_MISMATCH, SKIPPED, ERROR)
"""What :meth:`PrometheusBackend.stats` and :meth:`StatsDBackend.stats` count besides
``calls``: calls skipped because the backend already holds ``max_names`` names
(``too_many_names``); calls skipped because their name cannot be defined next to the metrics
already served, e.g. a gauge and an increment of one name in Prometheus (``name_clash``); calls
whose tag keys differ from the first call of their name, adjusted as documented
(``tag_mismatch``, Prometheus only); calls the reporter skipped as bad data, such as an infinite
value for StatsD (``skipped``); calls that failed unexpectedly (``error``)."""

_FACADE_EVENTS: dict[str, EventName] = {
    "increment": ("radiosonde", "metrics", "increment"),
    "gauge": ("radiosonde", "metrics", "gauge"),
    "histogram": ("radiosonde", "metrics", "histogram"),
}
_NAME_PART_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Labels Prometheus reserves for histograms, and the tag of the overflow series.
_RESERVED_TAGS = frozenset({"le", "quantile", OVERFLOW_TAG})
_LOGGED_LIMIT = 4 * DEFAULT_MAX_NAMES

_logger = logging.getLogger("radiosonde")
_ids = itertools.count(1)
# next() on an itertools.count is atomic only while a GIL serialises C calls.
_ATOMIC_COUNT: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


class _Accounting:
    """Counting, reporting and log-once for a backend's calls and skips; thread-safe, never
    raises."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(SKIP_REASONS, 0)
        self.logged: set[tuple[str, str]] = set()
        # Applied calls: next() on a count is atomic under the GIL and cheaper than a lock.
        self.calls = itertools.count()
        self.applied: Callable[[], object] = self.calls.__next__ if _ATOMIC_COUNT else self._add

    def _add(self) -> None:
        with self.lock:
            next(self.calls)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            counts = dict(self.counts)
            calls = int(repr(self.calls)[6:-1])  # "count(42)": read without advancing it
        return {"calls": calls, **counts}

    def skip(self, reason: str, name: str, detail: str, exc: BaseException | None = None) -> None:
        try:
            with self.lock:
                self.counts[reason] += 1
                # Once per reason and name; names past max_names share one entry.
                key = (reason, name if reason != TOO_MANY_NAMES else "")
                first = key not in self.logged and len(self.logged) < _LOGGED_LIMIT
                if first:
                    self.logged.add(key)
            report_error(self.name, reason, exc)
            if first:
                _logger.warning(
                    "radiosonde: metrics backend %r: %s (%s). Counted in stats() and as"
                    " radiosonde.reporter.errors{kind=%r}; not logged again for this name.",
                    self.name,
                    detail,
                    reason,
                    reason,
                )
        except Exception:
            pass


class _Definition:
    """A facade name as Prometheus sees it: its metric, its label keys in order, how to take
    their values from a call's tags (``KeyError`` when one is missing), and its recorder."""

    __slots__ = ("keys", "metric", "record", "size", "values_of")

    def __init__(self, metric: Metric, record: Callable[[float, tuple[str, ...]], bool]) -> None:
        self.metric = metric
        self.record = record
        self.keys = metric.tags
        self.size = len(self.keys)
        self.values_of: Callable[[Mapping[str, str]], tuple[str, ...]]
        if self.size == 0:
            self.values_of = _no_values
        elif self.size == 1:
            self.values_of = _one_value(self.keys[0])
        else:
            self.values_of = itemgetter(*self.keys)


def _no_values(tags: Mapping[str, str]) -> tuple[str, ...]:
    return ()


def _one_value(key: str) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    def values_of(tags: Mapping[str, str]) -> tuple[str, ...]:
        return (tags[key],)

    return values_of


class _Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


_R = TypeVar("_R", bound=_Startable)


class _ReporterBackend(Generic[_R]):
    """What both backends share: the reporter they feed, started and stopped with the backend
    when the backend made it, left alone when it is the user's (the user runs it)."""

    _reporter: _R
    _owned: bool

    @property
    def reporter(self) -> _R:
        """The reporter the facade's calls go to."""
        return self._reporter

    def start(self) -> None:
        """Start the reporter (when the backend made it). Idempotent."""
        if self._owned:
            self._reporter.start()

    def stop(self) -> None:
        """Stop the reporter (when the backend made it), sending or keeping what it holds."""
        if self._owned:
            self._reporter.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class PrometheusBackend(_ReporterBackend[PrometheusReporter]):
    """The facade's Prometheus backend: ``/metrics`` serves every name called so far.

    * ``port``/``host``: where the reporter it starts listens. ``None``: ``PROMETHEUS_PORT``
      (default 9568) and ``PROMETHEUS_HOST`` (default ``127.0.0.1``) through
      :mod:`radiosonde.config`; ``port=0`` picks a free port (see :attr:`reporter`).
    * ``reporter``: instead, a :class:`~radiosonde.reporters.prometheus.PrometheusReporter` of
      yours, so that one endpoint serves your declared metrics and the facade's; you start and
      stop it (then ``port``/``host`` must not be given).
    * ``histogram_buckets``: bucket upper bounds for every histogram, or a mapping of facade
      name to bounds (names not listed get the default); the default is 1, 2.5, 5 ... 10000,
      which suits milliseconds.
    * ``max_series``: the series limit of each facade metric (default: the reporter's); past
      it, new tag combinations go to the ``overflow="true"`` series.
    * ``max_names``: distinct names taken per kind (default :data:`DEFAULT_MAX_NAMES`).

    Definition on first sight: ``increment`` -> a sum (float increments) exposed as the counter
    ``<name>_total``; ``gauge`` -> a last value; ``histogram`` -> a distribution, exposed as a
    histogram (quantiles of the sketch are in the aggregator's snapshot). The name's dots and
    other characters Prometheus does not allow become ``_``; the labels are the tag keys of
    the first call, sorted. Prometheus needs one label set per family, so later calls are
    fitted to it: a missing key gets the value ``""``, an extra key is dropped, and the call is
    counted as ``tag_mismatch``. Tag keys that cannot be labels (``le``, ``quantile``,
    ``overflow``, keys starting with ``__`` or not identifiers) are dropped likewise. A name
    whose Prometheus name is taken (a gauge and an increment of one name, a facade name equal
    to a declared metric's) is skipped and counted as ``name_clash``.

    Invalid arguments raise ``ValueError`` at construction; :meth:`start` raises ``OSError``
    when the port is taken. Calls never raise.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str | None = None,
        *,
        reporter: PrometheusReporter | None = None,
        histogram_buckets: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
        max_series: int | None = None,
        max_names: int = DEFAULT_MAX_NAMES,
    ) -> None:
        if reporter is not None:
            if port is not None or host is not None:
                raise ValueError(
                    "PrometheusBackend: give either reporter= (it serves on its own port) or"
                    " port=/host=, not both"
                )
            if not isinstance(reporter, PrometheusReporter):
                raise ValueError(
                    f"PrometheusBackend: reporter= takes a PrometheusReporter, got {reporter!r}"
                )
        self._max_names = _check_positive("max_names", max_names)
        self._max_series = None if max_series is None else _check_positive("max_series", max_series)
        self._buckets, self._buckets_by_name = _check_buckets(histogram_buckets)
        self._owned = reporter is None
        name = f"prometheus-facade-{next(_ids)}"
        self._reporter = (
            reporter
            if reporter is not None
            else PrometheusReporter([], port=port, host=host, name=name)
        )
        self._aggregator: Aggregator = self._reporter.aggregator
        self._account = _Accounting(name if self._owned else f"{self._reporter.name}-facade")
        self._lock = threading.Lock()
        # Per kind: name -> definition, or None for a name rejected as a clash.
        self._increments: dict[str, _Definition | None] = {}
        self._gauges: dict[str, _Definition | None] = {}
        self._histograms: dict[str, _Definition | None] = {}

    def stats(self) -> dict[str, int]:
        """``names`` defined, ``calls`` applied, and the counts of :data:`SKIP_REASONS`."""
        counts = self._account.snapshot()
        with self._lock:
            tables = (self._increments, self._gauges, self._histograms)
            counts["names"] = sum(d is not None for table in tables for d in table.values())
        return counts

    def __repr__(self) -> str:
        return f"<PrometheusBackend {self.stats()['names']} names via {self._reporter!r}>"

    # -- the facade ----------------------------------------------------------------------------

    def increment(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Add ``value`` to the counter ``name`` (the sum ``<name>_total``)."""
        self._update(self._increments, "increment", name, value, tags)

    def gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Set the gauge ``name``."""
        self._update(self._gauges, "gauge", name, value, tags)

    def histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Observe ``value`` in the histogram ``name``."""
        self._update(self._histograms, "histogram", name, value, tags)

    def _update(
        self,
        table: dict[str, _Definition | None],
        kind: str,
        name: str,
        value: float,
        tags: Mapping[str, str],
    ) -> None:
        try:
            definition = table.get(name)
            if definition is None:
                definition = self._define(table, kind, name, tags)  # counts a rejection
                if definition is None:
                    return
            try:
                values = definition.values_of(tags)
            except KeyError:
                values = tuple([tags.get(key, "") for key in definition.keys])
                self._mismatch(kind, name, tags, definition.keys)
            else:
                if len(tags) != definition.size:
                    self._mismatch(kind, name, tags, definition.keys)
            if definition.record(value, values):
                self._account.applied()
            else:
                self._account.skip(SKIPPED, name, f"{kind}({name!r}) was skipped as bad data")
        except Exception as exc:
            self._account.skip(ERROR, name, f"{kind}({name!r}) failed: {exc!r}", exc)

    def _mismatch(
        self, kind: str, name: str, tags: Mapping[str, str], keys: tuple[str, ...]
    ) -> None:
        self._account.skip(
            TAG_MISMATCH,
            name,
            f"{kind}({name!r}) got the tag keys {sorted(tags)}, but its Prometheus labels are"
            f" {list(keys)} (from its first call): missing keys get the value '', others are"
            " dropped",
        )

    def _define(
        self,
        table: dict[str, _Definition | None],
        kind: str,
        name: str,
        tags: Mapping[str, str],
    ) -> _Definition | None:
        """The definition of a name not seen yet (or that another thread just defined);
        ``None``, counted and logged, when it clashes or the backend holds ``max_names``."""
        with self._lock:
            if name in table:
                definition = table[name]
                if definition is not None:
                    return definition
                reason, detail = NAME_CLASH, f"{kind}({name!r}) skipped: name clash"
            elif len(table) >= self._max_names:
                reason = TOO_MANY_NAMES
                detail = (
                    f"{kind}({name!r}) skipped: the backend holds max_names={self._max_names}"
                    f" {kind} names already; further names are skipped"
                )
            else:
                keys = sorted(k for k in tags if _TAG_KEY.match(k) and not _reserved(k))
                try:
                    metric = self._metric(kind, name, keys)
                    self._reporter.add_metric(metric, attach=False)
                except ValueError as exc:
                    table[name] = None
                    reason, detail = NAME_CLASH, f"{kind}({name!r}) cannot be served: {exc}"
                else:
                    definition = table[name] = _Definition(
                        metric, self._aggregator.recorder(metric)
                    )
                    return definition
        self._account.skip(reason, name, detail)
        return None

    def _metric(self, kind: str, name: str, keys: list[str]) -> Metric:
        parts = [_safe_part(part) for part in name.split(".")]
        options: dict[str, Any] = {"prometheus_name": sanitize_metric_name(name.replace(".", "_"))}
        common: dict[str, Any] = {
            "event_name": _FACADE_EVENTS[kind],
            "measurement": "value",
            "tags": keys,
            "max_series": self._max_series,
            "description": f"Metrics.{kind}({name!r}) calls (radiosonde metrics facade).",
        }
        if kind == "increment":
            return m.sum(parts, reporter_options=options, **common)
        if kind == "gauge":
            return m.last_value(parts, reporter_options=options, **common)
        buckets = self._buckets_by_name.get(name, self._buckets)
        if buckets is not None:
            options["buckets"] = buckets
        return m.distribution(parts, reporter_options=options, **common)


class StatsDBackend(_ReporterBackend[StatsDReporter]):
    """The facade's StatsD / DogStatsD backend: each call becomes a StatsD update.

    ``increment`` -> a counter (``|c``), ``gauge`` -> a gauge (``|g``), ``histogram`` -> a
    timer (``|ms``) with the standard formatter, a distribution (``|d``) with the datadog one
    (``histogram_as="histogram"`` for ``|h``, ``"timer"`` for ``|ms``). Updates are buffered
    and aggregated per interval by a :class:`~radiosonde.reporters.statsd.StatsDReporter`
    (counters added up, the latest gauge) and sent by its flusher thread; see
    :meth:`StatsDReporter.record <radiosonde.reporters.statsd.StatsDReporter.record>` for how
    names and tags are made safe. Tags may differ from call to call.

    * ``host``/``port``/``socket_path``/``formatter``/``prefix``/``global_tags``/
      ``flush_interval``: as for :class:`~radiosonde.reporters.statsd.StatsDReporter`, which
      the backend makes, starts and stops;
    * ``reporter``: or a StatsDReporter of yours (then none of those may be given): the facade's
      updates share its socket and flusher; you start and stop it;
    * ``max_names``: distinct names taken (default :data:`DEFAULT_MAX_NAMES`).

    Invalid arguments raise ``ValueError`` at construction. Calls never raise and never block.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        formatter: Formatter | None = None,
        prefix: str | None = None,
        global_tags: Mapping[str, Any] | None = None,
        flush_interval: float | None = None,
        reporter: StatsDReporter | None = None,
        histogram_as: Literal["timer", "histogram", "distribution"] | None = None,
        max_names: int = DEFAULT_MAX_NAMES,
    ) -> None:
        options: dict[str, Any] = {
            "host": host,
            "port": port,
            "socket_path": socket_path,
            "formatter": formatter,
            "prefix": prefix,
            "global_tags": global_tags,
            "flush_interval": flush_interval,
        }
        given = {key: value for key, value in options.items() if value is not None}
        name = f"statsd-facade-{next(_ids)}"
        if reporter is not None:
            if given:
                raise ValueError(
                    f"StatsDBackend: with reporter=, the reporter's settings apply; do not give"
                    f" {', '.join(sorted(given))}"
                )
            if not isinstance(reporter, StatsDReporter):
                raise ValueError(
                    f"StatsDBackend: reporter= takes a StatsDReporter, got {reporter!r}"
                )
            self._reporter = reporter
        else:
            self._reporter = StatsDReporter([], name=name, **given)
        self._owned = reporter is None
        style = self._reporter.formatter
        if histogram_as is None:
            histogram_as = "distribution" if style == "datadog" else "timer"
        if histogram_as not in ("timer", "histogram", "distribution"):
            raise ValueError(
                "StatsDBackend: histogram_as must be 'timer', 'histogram' or 'distribution', got"
                f" {histogram_as!r}"
            )
        if style == "standard" and histogram_as != "timer":
            raise ValueError(
                f"StatsDBackend: histogram_as={histogram_as!r} needs formatter='datadog'; the Etsy"
                " StatsD daemon knows only timers"
            )
        self._kinds: dict[str, Literal["counter", "gauge", "timer", "histogram", "distribution"]]
        self._kinds = {"increment": "counter", "gauge": "gauge", "histogram": histogram_as}
        self._max_names = _check_positive("max_names", max_names)
        self._account = _Accounting(name if self._owned else f"{self._reporter.name}-facade")
        self._lock = threading.Lock()
        self._names: set[str] = set()

    def flush(self) -> int:
        """Send what is buffered now; the number of datagrams sent."""
        return self._reporter.flush()

    def stats(self) -> dict[str, int]:
        """``names`` taken, ``calls`` buffered, and the counts of :data:`SKIP_REASONS`; the
        reporter's own (sending, dropped datagrams...) are in ``reporter.stats()``."""
        counts = self._account.snapshot()
        counts["names"] = len(self._names)
        return counts

    def __repr__(self) -> str:
        return f"<StatsDBackend {len(self._names)} names via {self._reporter!r}>"

    def increment(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Add ``value`` to the counter ``name``."""
        self._update("increment", name, value, tags)

    def gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Set the gauge ``name``."""
        self._update("gauge", name, value, tags)

    def histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Send ``value`` as a timer, histogram or distribution value of ``name``."""
        self._update("histogram", name, value, tags)

    def _update(self, kind: str, name: str, value: float, tags: Mapping[str, str]) -> None:
        try:
            if name not in self._names:
                with self._lock:
                    full = name not in self._names and len(self._names) >= self._max_names
                    if not full:
                        self._names.add(name)
                if full:
                    self._account.skip(TOO_MANY_NAMES, name, f"{kind}({name!r}) skipped")
                    return
            if self._reporter.record(self._kinds[kind], name, value, tags):
                self._account.applied()
            else:
                self._account.skip(
                    SKIPPED,
                    name,
                    f"{kind}({name!r}, {value!r}) was skipped or dropped by the reporter (not a"
                    " finite number, or its buffer limits)",
                )
        except Exception as exc:
            self._account.skip(ERROR, name, f"{kind}({name!r}) failed: {exc!r}", exc)


def _reserved(key: str) -> bool:
    return key in _RESERVED_TAGS or key.startswith("__")


def _safe_part(part: str) -> str:
    part = _NAME_PART_UNSAFE.sub("_", part)
    return part if part and (part[0].isalpha() or part[0] == "_") else "_" + part


def _check_positive(label: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return value


def _check_buckets(
    buckets: Sequence[float] | Mapping[str, Sequence[float]] | None,
) -> tuple[tuple[float, ...] | None, dict[str, tuple[float, ...]]]:
    """Validate ``histogram_buckets`` as metric definitions do (raising their ValueError)."""
    if buckets is None:
        return None, {}
    if isinstance(buckets, Mapping):
        by_name: dict[str, tuple[float, ...]] = {}
        for name, bounds in buckets.items():
            checked = m.distribution(
                "facade.histogram",
                measurement="value",
                reporter_options={"buckets": bounds},
            )
            by_name[str(name)] = checked.reporter_options["buckets"]
        return None, by_name
    if isinstance(buckets, str):
        raise ValueError(f"histogram_buckets must be a list of numbers, got {buckets!r}")
    checked = m.distribution(
        "facade.histogram", measurement="value", reporter_options={"buckets": buckets}
    )
    return checked.reporter_options["buckets"], {}
