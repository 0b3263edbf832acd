"""Print every event your metrics listen to, and what each metric takes from it.

The Python counterpart of Elixir's ``Telemetry.Metrics.ConsoleReporter``: a development tool to
see, while writing instrumentation, whether the events carry what the metric definitions
expect::

    from radiosonde import metrics as m
    from radiosonde.reporters import ConsoleReporter

    with ConsoleReporter([m.distribution("http.request.stop.duration", tags=["route"],
                                         unit=("nanosecond", "millisecond"))]):
        ...

prints, for each ``("http", "request", "stop")`` event::

    [radiosonde] event http.request.stop
      measurements: {'duration': 1200000}
      metadata:     {'method': 'GET', 'route': '/users'}
      distribution http.request.stop.duration = 1.2 millisecond  {route="/users"}

and for a metric that cannot use the event, why::

      distribution http.request.stop.duration skipped: missing_tag (tag 'route' missing
      from the metadata)

Secrets are kept off the console by default: measurements, metadata, tag values and skip
reasons go through :mod:`radiosonde.redact` before they are printed (``redact=False`` shows them
as they are, for a terminal you trust).

It aggregates nothing. Writing happens in the thread that executes the event; a stream that
fails (closed, broken pipe) never raises into ``execute``: the error is counted in
:attr:`ConsoleReporter.errors` and reported as a ``("radiosonde", "reporter", "error")`` event.
Long measurements and metadata are abbreviated (:mod:`reprlib`).
"""

from __future__ import annotations

import itertools
import reprlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from radiosonde import events
from radiosonde.aggregation import evaluate
from radiosonde.metrics import Metric
from radiosonde.redact import Redactor, default_redactor
from radiosonde.reporters._base import Reporter

__all__ = ["ConsoleReporter"]

_ids = itertools.count(1)

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = 20
_repr.maxlist = 20
_repr.maxstring = 160
_repr.maxother = 160


class ConsoleReporter(Reporter):
    """Prints each event of ``metrics`` with its measurements, metadata and metric updates.

    ``stream`` is any object with ``write(str)`` (``flush()`` is called when it has one);
    ``None`` means ``sys.stdout`` as it is at each write, so it follows redirections.
    ``start()`` attaches one handler per event name, ``stop()`` detaches them.
    ``redact`` (default True): what is printed goes through
    :data:`radiosonde.redact.default_redactor` (values under sensitive keys and tags become
    ``[REDACTED]``, secrets inside strings are replaced); ``False`` prints everything as it is.

    Raises ``ValueError`` for something in ``metrics`` that is not a metric definition.
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        stream: TextIO | None = None,
        *,
        name: str | None = None,
        redact: bool = True,
    ) -> None:
        super().__init__(name if name is not None else f"console-{next(_ids)}")
        if isinstance(metrics, Metric):
            raise ValueError("ConsoleReporter takes a list of metrics, got a single metric")
        if not isinstance(redact, bool):
            raise ValueError(f"redact must be True or False, got {redact!r}")
        self._redactor: Redactor | None = default_redactor if redact else None
        checked: list[Metric] = []
        for metric in metrics:
            if not isinstance(metric, Metric):
                raise ValueError(
                    f"ConsoleReporter: {metric!r} is not a metric definition; make metrics with"
                    " radiosonde.metrics.counter(), sum(), last_value(), summary(), distribution()"
                )
            checked.append(metric)
        self._metrics = tuple(checked)
        self._stream = stream
        self._by_event: dict[events.EventName, tuple[Metric, ...]] = {}
        for metric in self._metrics:
            self._by_event[metric.event_name] = (*self._by_event.get(metric.event_name, ()), metric)
        self._handler_ids: list[str] = []

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The metric definitions, in the order given."""
        return self._metrics

    def _start(self) -> None:
        ids: list[str] = []
        try:
            for event, metrics in self._by_event.items():
                handler_id = f"radiosonde.console:{self.name}:{'.'.join(event)}"
                events.attach(handler_id, event, self._handle, metrics, on_error="keep")
                ids.append(handler_id)
        except Exception:
            for handler_id in ids:
                events.detach(handler_id)
            raise
        self._handler_ids = ids

    def _stop(self) -> None:
        for handler_id in self._handler_ids:
            events.detach(handler_id)
        self._handler_ids = []

    def _handle(
        self,
        event: events.EventName,
        measurements: dict[str, Any],
        metadata: dict[str, Any],
        metrics: tuple[Metric, ...],
    ) -> None:
        try:
            text = self.format(event, measurements, metadata, metrics)
        except Exception as exc:  # a repr that raises, say
            self._error("format", exc)
            return
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(text)
            flush = getattr(stream, "flush", None)
            if flush is not None:
                flush()
        except Exception as exc:
            self._error("write", exc)

    def format(
        self,
        event: events.EventName,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
        metrics: Iterable[Metric] | None = None,
    ) -> str:
        """The text printed for one event (``metrics``: those listening to it by default)."""
        chosen = self._by_event.get(event, ()) if metrics is None else tuple(metrics)
        redactor = self._redactor
        shown_measurements: Any = dict(measurements)
        shown_metadata: Any = dict(metadata)
        if redactor is not None:
            shown_measurements = redactor.redact(shown_measurements)
            shown_metadata = redactor.redact(shown_metadata)
        lines = [
            f"[radiosonde] event {'.'.join(event)}",
            f"  measurements: {_redacted_text(_repr.repr(shown_measurements), redactor)}",
            f"  metadata:     {_redacted_text(_repr.repr(shown_metadata), redactor)}",
        ]
        for metric in chosen:
            lines.append("  " + _describe(metric, measurements, metadata, redactor))
        return "\n".join(lines) + "\n"


def _redacted_text(text: str, redactor: Redactor | None) -> str:
    # Objects other than containers and strings are not redacted as objects: their repr may
    # still hold a secret (an exception's message, a dataclass's fields).
    return text if redactor is None else redactor.redact_string(text)


def _describe(
    metric: Metric,
    measurements: Mapping[str, Any],
    metadata: Mapping[str, Any],
    redactor: Redactor | None = None,
) -> str:
    head = f"{metric.kind} {metric.name}"
    result = evaluate(metric, measurements, metadata)
    if result.skipped is not None:
        # The reason may quote a value ("measurement 'x' is 'Bearer ...', not a number").
        return f"{head} skipped: {result.skipped} ({_redacted_text(result.detail, redactor)})"
    values: Iterable[str] = result.tags or ()
    if redactor is not None:
        marker = redactor.marker
        values = [
            marker if redactor.is_sensitive_key(tag) else redactor.redact_string(value)
            for tag, value in zip(metric.tags, values, strict=True)
        ]
    tags = ", ".join(f'{tag}="{value}"' for tag, value in zip(metric.tags, values, strict=True))
    if metric.kind == "counter":
        shown = "+1"
    else:
        shown = _number(result.value)
        if metric.unit is not None:
            shown += f" {metric.unit}"
    return f"{head} = {shown}" + (f"  {{{tags}}}" if tags else "")


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
