"""Declarative metric definitions: what to aggregate from which event.

The Python counterpart of Elixir's ``Telemetry.Metrics``. A definition says nothing about how
a value is stored or sent; reporters read definitions and aggregate (see
:mod:`radiosonde.aggregation`) or forward (StatsD) the values they describe::

    from radiosonde import metrics as m

    METRICS = [
        m.counter("http.request.stop.duration", tags=["route", "status"]),
        m.distribution(
            "http.request.stop.duration",
            unit=("nanosecond", "millisecond"),
            tags=["route"],
            reporter_options={"buckets": [5, 10, 50, 100, 500]},
        ),
        m.last_value("radiosonde.runtime.memory.rss", unit="byte"),
    ]

The name ``"http.request.stop.duration"`` means: event ``("http", "request", "stop")``,
measurement ``"duration"``. ``event_name=`` and ``measurement=`` override either half.

Every definition is validated when it is made: a bad name, tag, unit or option raises
``ValueError`` saying what to fix. At run time, :meth:`Metric.value` and :meth:`Metric.tags_for`
return ``None`` for an update to skip (missing or non-numeric measurement, missing tag, dropped
by ``keep``/``drop``); they never raise.
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

from radiosonde.events import EventName, EventNameLike, event_name

__all__ = [
    "BYTE_UNITS",
    "OVERFLOW_TAG",
    "Metric",
    "MetricKind",
    "counter",
    "distribution",
    "last_value",
    "sum",
    "summary",
    "tag_text",
]

MetricKind: TypeAlias = Literal["counter", "sum", "last_value", "summary", "distribution"]
Measurement: TypeAlias = (
    "str"
    " | Callable[[Mapping[str, Any]], Any]"
    " | Callable[[Mapping[str, Any], Mapping[str, Any]], Any]"
)
Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]

OVERFLOW_TAG = "overflow"
"""The tag of the one series that takes updates past a metric's series limit (reserved)."""

# Time units in nanoseconds and byte units in bytes; "native" is radiosonde's time unit.
_TIME_UNITS: dict[str, int] = {
    "native": 1,
    "nanosecond": 1,
    "microsecond": 1_000,
    "millisecond": 1_000_000,
    "second": 1_000_000_000,
    "minute": 60_000_000_000,
    "hour": 3_600_000_000_000,
}
BYTE_UNITS: Final[Mapping[str, int]] = {
    "byte": 1,
    "kilobyte": 1_000,
    "megabyte": 1_000_000,
    "gigabyte": 1_000_000_000,
    "kibibyte": 1_024,
    "mebibyte": 1_024**2,
    "gibibyte": 1_024**3,
}
"""Bytes per byte unit: decimal (``kilobyte`` = 1000) and binary (``kibibyte`` = 1024)."""
_NAME_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_MEASUREMENT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_UNIT = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True, slots=True, eq=False)
class Metric:
    """One metric definition (immutable). Build it with :func:`counter`, :func:`sum`, ...

    Attributes reporters use:

    * ``kind``, ``name`` (the dotted name, as given), ``name_parts``;
    * ``event_name`` (the event it listens to) and ``measurement`` (a key or a function);
    * ``tags`` (tag keys, in order), ``tag_values``, ``keep``, ``drop``;
    * ``unit`` (the unit values are reported in, after conversion; ``None`` if not set),
      ``scale`` (the factor applied to each measurement for the conversion);
    * ``description``, ``reporter_options`` (read-only mapping), ``max_series``.
    """

    kind: MetricKind
    name: str
    name_parts: tuple[str, ...]
    event_name: EventName
    measurement: Measurement
    tags: tuple[str, ...] = ()
    tag_values: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    keep: Predicate | None = None
    drop: Predicate | None = None
    description: str | None = None
    unit: str | None = None
    scale: float = 1.0
    reporter_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_series: int | None = None
    _value: Callable[[Mapping[str, Any], Mapping[str, Any]], Any] = field(
        default=None, repr=False, compare=False
    )  # type: ignore[assignment]

    def value(self, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> float | None:
        """The number this event contributes (unit-converted), or ``None`` to skip the update.

        Counters count events: their value is 1 whenever the event passes ``keep``/``drop``.
        ``None`` means the measurement is missing, not a number (bools are not numbers), NaN,
        or that the measurement function raised.
        """
        if self.kind == "counter":
            return 1.0
        try:
            raw = self._value(measurements, metadata)
        except Exception:
            return None
        number = _number(raw)
        if number is None:
            return None
        return number * self.scale if self.scale != 1.0 else number

    def tags_for(self, metadata: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The tag values for this event as strings, in ``tags`` order; ``None`` to skip.

        ``None`` when ``keep`` says no, ``drop`` says yes, a tag is missing from the metadata
        (after ``tag_values``), or a predicate raised.
        """
        try:
            if self.keep is not None and not self.keep(metadata):
                return None
            if self.drop is not None and self.drop(metadata):
                return None
            source = self.tag_values(metadata) if self.tag_values is not None else metadata
            return tuple(tag_text(source[tag]) for tag in self.tags)
        except Exception:
            return None

    def __repr__(self) -> str:
        return f"{self.kind}({self.name!r}, event_name={self.event_name!r}, tags={self.tags!r})"


def counter(name: str | Sequence[str], **options: Any) -> Metric:
    """Count the events (the measurement is not read). Options as for every metric, below."""
    return _define("counter", name, **options)


def sum(name: str | Sequence[str], **options: Any) -> Metric:
    """Add up the measurement (floats allowed): a monotonic total when values are >= 0."""
    return _define("sum", name, **options)


def last_value(name: str | Sequence[str], **options: Any) -> Metric:
    """Keep the latest value of the measurement (a gauge)."""
    return _define("last_value", name, **options)


def summary(name: str | Sequence[str], **options: Any) -> Metric:
    """Count, sum, min, max and quantiles of the measurement (no buckets)."""
    return _define("summary", name, **options)


def distribution(name: str | Sequence[str], **options: Any) -> Metric:
    """A histogram of the measurement: ``reporter_options={"buckets": [...]}`` sets the bucket
    upper bounds (sensible unit-aware defaults otherwise); quantiles are reported as well."""
    return _define("distribution", name, **options)


def _define(
    kind: MetricKind,
    name: str | Sequence[str],
    *,
    event_name: EventNameLike | None = None,
    measurement: Measurement | None = None,
    tags: Iterable[str] = (),
    tag_values: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    keep: Predicate | None = None,
    drop: Predicate | None = None,
    description: str | None = None,
    unit: str | tuple[str, str] | None = None,
    reporter_options: Mapping[str, Any] | None = None,
    max_series: int | None = None,
) -> Metric:
    parts = _name_parts(name)
    label = ".".join(parts)
    if event_name is None:
        if len(parts) < 2:
            raise ValueError(
                f"metric name {label!r} needs at least two parts, the event and the"
                f' measurement (e.g. "http.request.stop.duration"), or an explicit event_name='
            )
        event = parts[:-1]
    else:
        try:
            event = _event_name(event_name)
        except ValueError as exc:
            raise ValueError(f"metric {label!r}: {exc}") from None
        if event[-1] == "*":
            raise ValueError(f"metric {label!r}: event_name cannot be a prefix subscription")
    if measurement is None:
        measurement = parts[-1]
    reader = _measurement_reader(label, measurement)
    tag_tuple = _tags(label, tags)
    if keep is not None and drop is not None:
        raise ValueError(f"metric {label!r}: keep= and drop= are mutually exclusive; use one")
    for option, predicate in (("keep", keep), ("drop", drop), ("tag_values", tag_values)):
        if predicate is not None and not callable(predicate):
            raise ValueError(f"metric {label!r}: {option}= must be a function of the metadata")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"metric {label!r}: description must be a string")
    reported_unit, scale = _unit(label, unit)
    options = _reporter_options(label, kind, reporter_options)
    if max_series is not None and (type(max_series) is not int or max_series < 1):
        raise ValueError(f"metric {label!r}: max_series must be a positive integer")
    return Metric(
        kind=kind,
        name=label,
        name_parts=parts,
        event_name=event,
        measurement=measurement,
        tags=tag_tuple,
        tag_values=tag_values,
        keep=keep,
        drop=drop,
        description=description,
        unit=reported_unit,
        scale=scale,
        reporter_options=options,
        max_series=max_series,
        _value=reader,
    )


def _event_name(name: EventNameLike) -> EventName:
    return event_name(name)


def _name_parts(name: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(name, str):
        parts: tuple[Any, ...] = tuple(name.split("."))
    elif isinstance(name, Sequence):
        parts = tuple(name)
    else:
        raise ValueError(f"metric name must be a dotted string or a list of strings, got {name!r}")
    for part in parts:
        if not isinstance(part, str) or not _NAME_PART.match(part):
            raise ValueError(
                f"invalid metric name {name!r}: each part must start with a letter or '_' and"
                f" hold only letters, digits, '_' or '-' (bad part: {part!r})"
            )
    return parts


def _measurement_reader(
    label: str, measurement: Measurement
) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Any]:
    if isinstance(measurement, str):
        if not _MEASUREMENT_KEY.match(measurement):
            raise ValueError(f"metric {label!r}: invalid measurement key {measurement!r}")
        key = measurement
        return lambda measurements, _metadata: measurements[key]
    if not callable(measurement):
        raise ValueError(
            f"metric {label!r}: measurement= must be a key or a function, got {measurement!r}"
        )
    try:
        params = inspect.signature(measurement).parameters.values()
    except (TypeError, ValueError):
        arity = 1
    else:
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
        arity = 2 if varargs or len(positional) >= 2 else 1
    if arity == 1:
        one = measurement
        return lambda measurements, _metadata: one(measurements)  # type: ignore[call-arg]
    return measurement  # type: ignore[return-value]  # takes (measurements, metadata)


def _tags(label: str, tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise ValueError(f"metric {label!r}: tags= takes a list of tag names, got {tags!r}")
    result: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.match(tag) or tag.startswith("__"):
            raise ValueError(
                f"metric {label!r}: invalid tag {tag!r}: tags must be identifiers"
                " (letters, digits, '_', not starting with a digit or '__')"
            )
        if tag == OVERFLOW_TAG:
            raise ValueError(
                f"metric {label!r}: the tag {OVERFLOW_TAG!r} is reserved for the overflow series"
            )
        if tag in result:
            raise ValueError(f"metric {label!r}: tag {tag!r} is listed twice")
        result.append(tag)
    return tuple(result)


def _unit(label: str, unit: str | tuple[str, str] | None) -> tuple[str | None, float]:
    if unit is None:
        return None, 1.0
    if isinstance(unit, str):
        if not _UNIT.match(unit):
            raise ValueError(
                f"metric {label!r}: invalid unit {unit!r}: use a lower-case word such as"
                ' "millisecond", "byte" or "request", or a conversion ("nanosecond", "millisecond")'
            )
        return ("nanosecond" if unit == "native" else unit), 1.0
    if isinstance(unit, tuple) and len(unit) == 2:
        source, target = unit
        for table in (_TIME_UNITS, BYTE_UNITS):
            if source in table and target in table:
                return ("nanosecond" if target == "native" else target), table[source] / table[
                    target
                ]
        known = ", ".join([*_TIME_UNITS, *BYTE_UNITS])
        raise ValueError(
            f"metric {label!r}: cannot convert {source!r} to {target!r}: both must be time units"
            f" or both byte units, out of: {known}"
        )
    raise ValueError(
        f"metric {label!r}: unit= must be a unit name or a (from, to) pair, got {unit!r}"
    )


def _reporter_options(
    label: str, kind: MetricKind, options: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    if options is None:
        return MappingProxyType({})
    if not isinstance(options, Mapping):
        raise ValueError(f"metric {label!r}: reporter_options must be a mapping")
    checked = dict(options)
    buckets = checked.get("buckets")
    if buckets is not None:
        if kind != "distribution":
            raise ValueError(f"metric {label!r}: buckets only apply to distribution metrics")
        try:
            bounds = [float(b) for b in buckets]
        except (TypeError, ValueError):
            raise ValueError(
                f"metric {label!r}: buckets must be a list of numbers, got {buckets!r}"
            ) from None
        if not bounds or any(math.isnan(b) or math.isinf(b) for b in bounds):
            raise ValueError(f"metric {label!r}: buckets must be finite numbers, got {buckets!r}")
        if any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"metric {label!r}: buckets must be strictly increasing: {buckets!r}")
        checked["buckets"] = tuple(bounds)
    rate = checked.get("sampling_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1
    ):
        raise ValueError(f"metric {label!r}: sampling_rate must be in (0, 1], got {rate!r}")
    prometheus_type = checked.get("prometheus_type")
    if prometheus_type is not None and prometheus_type not in ("counter", "gauge"):
        raise ValueError(
            f"metric {label!r}: prometheus_type must be 'counter' or 'gauge', got"
            f" {prometheus_type!r}"
        )
    return MappingProxyType(checked)


def tag_text(value: Any) -> str:
    """A tag value as text, as every reporter exports it: ``str`` as is, ``None`` as ``""``,
    ``bytes`` decoded as UTF-8 (bad bytes replaced), anything else through ``str()``."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _number(raw: Any) -> float | None:
    """``raw`` as a float, or ``None`` when it is not a usable number.

    Numbers are ints and floats and their subclasses, and other ``numbers.Real`` types (NumPy
    scalars, ``Fraction``); bools are not numbers, NaN is not a value, and an int too large for
    a float is skipped rather than raised.
    """
    if type(raw) is float:
        return None if math.isnan(raw) else raw
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return None
    try:
        number = float(raw)
    except (OverflowError, ValueError, TypeError):
        return None
    return None if math.isnan(number) else number
