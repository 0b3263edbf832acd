"""radiosonde's own health as metrics: series counts, overflow hits, skipped updates, errors.

Nothing here costs anything on the hot path. Aggregators count skipped updates and overflow hits
in plain counters and publish them as events when they are read (:meth:`Aggregator.snapshot
<radiosonde.aggregation.Aggregator.snapshot>` or :meth:`~radiosonde.aggregation.Aggregator.
emit_stats`); reporters publish their errors as events when they happen. Add
:func:`self_metrics` to the metrics a reporter exports to see them next to your own::

    from radiosonde.selfmetrics import self_metrics

    PrometheusReporter([*METRICS, *self_metrics()])

The events (measurements; metadata):

* :data:`SERIES_EVENT` ``("radiosonde", "metrics", "series")``: ``series`` (regular series held
  by one metric), ``overflow`` (updates sent to its overflow series so far);
  ``aggregator``, ``metric`` (the metric's dotted name), ``kind``.
* :data:`DROPPED_EVENT` ``("radiosonde", "metrics", "dropped")``: ``dropped`` (updates skipped
  so far for one reason); ``aggregator``, ``metric``, ``kind``, ``reason`` (see
  :data:`radiosonde.aggregation.SKIP_REASONS`). Emitted only for reasons that occurred.
* :data:`REPORTER_ERROR_EVENT` ``("radiosonde", "reporter", "error")``: ``count`` (1);
  ``reporter`` (the reporter's name), ``kind`` (a short word: ``"write"``, ``"send"``,
  ``"render"``...), ``reason`` (the exception, if any). Emitted by :func:`report_error`.
* the event core's :data:`radiosonde.events.FAILURE_EVENT` for handlers that raised.
"""

from __future__ import annotations

import threading
from typing import Any

from radiosonde import metrics as m
from radiosonde.events import FAILURE_EVENT, EventName, execute

__all__ = [
    "DROPPED_EVENT",
    "REPORTER_ERROR_EVENT",
    "SERIES_EVENT",
    "report_error",
    "self_metrics",
]

SERIES_EVENT: EventName = ("radiosonde", "metrics", "series")
DROPPED_EVENT: EventName = ("radiosonde", "metrics", "dropped")
REPORTER_ERROR_EVENT: EventName = ("radiosonde", "reporter", "error")

_METRIC_TAGS = ("aggregator", "metric", "kind")
_local = threading.local()


def self_metrics() -> list[m.Metric]:
    """Definitions of radiosonde's self-metrics, to pass to a reporter with your own.

    * ``radiosonde.metrics.series`` (last_value): series per metric;
    * ``radiosonde.metrics.overflow`` (a running total: a Prometheus counter): updates that went
      to a metric's overflow series because it had reached its series limit;
    * ``radiosonde.metrics.dropped`` (a running total, by ``reason``): updates skipped;
    * ``radiosonde.reporter.errors`` (counter, by ``reporter`` and ``kind``);
    * ``radiosonde.handler.failures`` (counter, by ``handler_id``): handlers that raised.
    """
    total = {"prometheus_type": "counter"}
    return [
        m.last_value(
            "radiosonde.metrics.series",
            event_name=SERIES_EVENT,
            measurement="series",
            tags=_METRIC_TAGS,
            description="Series held by each metric (not counting its overflow series).",
        ),
        m.last_value(
            "radiosonde.metrics.overflow",
            event_name=SERIES_EVENT,
            measurement="overflow",
            tags=_METRIC_TAGS,
            description="Updates sent to the overflow series of a metric at its series limit.",
            reporter_options=total,
        ),
        m.last_value(
            "radiosonde.metrics.dropped",
            event_name=DROPPED_EVENT,
            measurement="dropped",
            tags=(*_METRIC_TAGS, "reason"),
            description="Metric updates skipped (missing or invalid measurement, missing tag...).",
            reporter_options=total,
        ),
        m.counter(
            "radiosonde.reporter.errors",
            event_name=REPORTER_ERROR_EVENT,
            tags=("reporter", "kind"),
            description="Errors met by reporters (writing, sending, rendering).",
        ),
        m.counter(
            "radiosonde.handler.failures",
            event_name=FAILURE_EVENT,
            tags=("handler_id",),
            description="Event handlers that raised.",
        ),
    ]


def report_error(reporter: str, kind: str, reason: BaseException | None = None) -> None:
    """Emit :data:`REPORTER_ERROR_EVENT` for one error of ``reporter``; never raises.

    An error met while reporting an error (say, a console reporter whose stream is broken and
    that prints its own error events) is not reported again: no loop.
    """
    if getattr(_local, "busy", False):
        return
    _local.busy = True
    try:
        metadata: dict[str, Any] = {"reporter": reporter, "kind": kind, "reason": reason}
        execute(REPORTER_ERROR_EVENT, {"count": 1}, metadata)
    except Exception:
        pass
    finally:
        _local.busy = False
