"""The metrics facade: ``increment`` / ``gauge`` / ``histogram`` calls with pluggable backends.

For code that wants to say "count this" without declaring metric definitions first (seed 001's
``Metrics.increment("comments.created", 1, user_id: user.id)``)::

    from radiosonde import Metrics

    metrics = Metrics()                      # the Prometheus backend, on PROMETHEUS_PORT
    metrics.increment("comments.created", region="eu")
    metrics.gauge("users.online", 42, region="eu")
    metrics.histogram("request.duration", 12.5, route="/api/comments")

Every call travels through the event core as one of the events
``("radiosonde", "metrics", "increment" | "gauge" | "histogram")`` with measurement ``value``
and metadata ``name`` and ``tags``, so the console reporter, the dashboard or a handler of your
own see facade calls like any other event. A :class:`Metrics` instance attaches one handler to
those events and passes each call on to every backend it was given.

A backend is any object with ``increment(name, value, tags)``, ``gauge(name, value, tags)`` and
``histogram(name, value, tags)`` (see :class:`MetricsBackend`); ``start()``/``stop()`` are called
when present. A backend that raises is counted in :meth:`Metrics.stats`, reported through the
``("radiosonde", "metrics", "backend_failure")`` event, and stays attached: one failing backend
never stops the others, nor the caller.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypeGuard, runtime_checkable

from radiosonde.events import EventName, attach_many, detach, execute
from radiosonde.metrics import tag_text

__all__ = [
    "BACKEND_FAILURE_EVENT",
    "FACADE_EVENTS",
    "Metrics",
    "MetricsBackend",
]

FacadeKind = Literal["increment", "gauge", "histogram"]

INCREMENT_EVENT: EventName = ("radiosonde", "metrics", "increment")
GAUGE_EVENT: EventName = ("radiosonde", "metrics", "gauge")
HISTOGRAM_EVENT: EventName = ("radiosonde", "metrics", "histogram")
FACADE_EVENTS: tuple[EventName, ...] = (INCREMENT_EVENT, GAUGE_EVENT, HISTOGRAM_EVENT)
BACKEND_FAILURE_EVENT: EventName = ("radiosonde", "metrics", "backend_failure")

_logger = logging.getLogger("radiosonde")
_instances = itertools.count(1)
_LOG_INTERVAL_S = 60.0


@runtime_checkable
class MetricsBackend(Protocol):
    """What a metrics backend implements. ``tags`` values are strings; do not keep the dict."""

    def increment(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Add ``value`` to the counter ``name``."""

    def gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Set the gauge ``name`` to ``value``."""

    def histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        """Record one observation of ``name``."""


class Metrics:
    """The facade. ``Metrics()`` uses a Prometheus backend (``PROMETHEUS_PORT``, default 9568);
    ``Metrics(backends=[...])`` any list of backends (an empty list: events only).

    The instance is started when made (backends with ``start()`` are started) and attaches its
    handler to the facade events; :meth:`close` detaches it and stops the backends. Invalid
    calls (a name that is not a dotted string, a non-numeric value) are skipped and counted,
    never raised: the facade is called from hot paths.
    """

    def __init__(self, backends: Sequence[MetricsBackend] | None = None) -> None:
        if backends is None:
            backends = [_default_backend()]
        for backend in backends:
            missing = [
                method
                for method in ("increment", "gauge", "histogram")
                if not callable(getattr(backend, method, None))
            ]
            if missing:
                raise TypeError(
                    f"metrics backend {backend!r} lacks {', '.join(missing)}: a backend needs"
                    " increment(name, value, tags), gauge(...) and histogram(...)"
                )
        self.backends: tuple[MetricsBackend, ...] = tuple(backends)
        self._handler_id = f"radiosonde.facade.{next(_instances)}"
        self._lock = threading.Lock()
        self._stats = {"calls": 0, "invalid": 0, "backend_failures": 0}
        self._last_logged: dict[int, float] = {}
        for backend in self.backends:
            start = getattr(backend, "start", None)
            if callable(start):
                start()
        attach_many(self._handler_id, list(FACADE_EVENTS), self._dispatch, on_error="keep")

    # -- the facade ------------------------------------------------------------------------

    def increment(self, name: str, value: float = 1, /, **tags: object) -> None:
        """Add ``value`` (default 1) to the counter ``name``, e.g. ``"comments.created"``."""
        self._emit(INCREMENT_EVENT, name, value, tags)

    def gauge(self, name: str, value: float, /, **tags: object) -> None:
        """Set the gauge ``name`` to ``value``."""
        self._emit(GAUGE_EVENT, name, value, tags)

    def histogram(self, name: str, value: float, /, **tags: object) -> None:
        """Record ``value`` in the histogram ``name`` (a distribution with quantiles)."""
        self._emit(HISTOGRAM_EVENT, name, value, tags)

    def stats(self) -> dict[str, int]:
        """``calls`` dispatched, ``invalid`` calls skipped, ``backend_failures`` absorbed."""
        with self._lock:
            return dict(self._stats)

    def close(self) -> None:
        """Detach from the facade events and stop the backends (those with ``stop()``)."""
        detach(self._handler_id)
        for backend in self.backends:
            stop = getattr(backend, "stop", None)
            if callable(stop):
                try:
                    stop()
                except Exception:
                    _logger.warning("radiosonde: stopping %r failed", backend, exc_info=True)

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- mechanics -------------------------------------------------------------------------

    @staticmethod
    def _emit(event: EventName, name: str, value: float, tags: dict[str, object]) -> None:
        execute(
            event,
            {"value": value},
            {"name": name, "tags": {key: tag_text(tag) for key, tag in tags.items()}},
        )

    def _dispatch(
        self,
        event: EventName,
        measurements: dict[str, Any],
        metadata: dict[str, Any],
        _config: Any,
    ) -> None:
        name = metadata.get("name")
        value = measurements.get("value")
        tags = metadata.get("tags")
        if not _valid_name(name) or not _is_number(value) or not isinstance(tags, Mapping):
            with self._lock:
                self._stats["invalid"] += 1
            return
        # Locked so concurrent callers do not lose counts (`+=` on a dict item is not atomic).
        with self._lock:
            self._stats["calls"] += 1
        kind: FacadeKind = event[2]  # type: ignore[assignment]  # one of FACADE_EVENTS
        number = float(value)
        for backend in self.backends:
            try:
                getattr(backend, kind)(name, number, tags)
            except Exception as exc:
                self._backend_failed(backend, kind, name, exc)

    def _backend_failed(
        self, backend: MetricsBackend, kind: str, name: str, exc: Exception
    ) -> None:
        with self._lock:
            self._stats["backend_failures"] += 1
            now = time.monotonic()
            should_log = now - self._last_logged.get(id(backend), -math.inf) >= _LOG_INTERVAL_S
            if should_log:
                self._last_logged[id(backend)] = now
        if should_log:
            _logger.warning(
                "radiosonde: metrics backend %r failed on %s(%r): %s: %s",
                backend,
                kind,
                name,
                type(exc).__name__,
                exc,
            )
        execute(
            BACKEND_FAILURE_EVENT,
            {"count": 1},
            {"backend": backend, "call": kind, "name": name, "kind": type(exc), "reason": exc},
        )


def _default_backend() -> MetricsBackend:
    from radiosonde.reporters.facade import PrometheusBackend

    return PrometheusBackend()


def _valid_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and bool(name) and all(name.split("."))


def _is_number(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )
