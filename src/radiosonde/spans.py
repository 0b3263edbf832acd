"""Spans: a start event, then a stop or an exception event, around a piece of work.

``span(prefix)`` is a context manager (``with`` and ``async with``) and a decorator (for sync and
async functions). It emits:

* ``prefix + ("start",)``: measurements ``monotonic_time``, ``system_time``;
* ``prefix + ("stop",)``: measurements ``duration``, ``monotonic_time`` plus the span's
  ``.measurements``;
* on an exception, ``prefix + ("exception",)``: measurements ``duration``, ``monotonic_time``,
  metadata ``kind`` (the exception class), ``reason`` (the exception) and ``stacktrace``; the
  exception is then re-raised.

Times are integer nanoseconds (radiosonde's "native" unit). Every event of a span carries the
metadata ``telemetry_span_context`` (unique per span) and ``parent_span_context`` (that of the
enclosing span in the same thread or asyncio task, or ``None``), tracked with a
:class:`contextvars.ContextVar`: asyncio tasks inherit the span they were created in, threads
start with none unless they run in a copied context (``contextvars.copy_context().run`` or
``asyncio.to_thread``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
import traceback
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from radiosonde.events import EventName, EventNameLike, event_name, execute

__all__ = ["Span", "current_span_context", "span"]

P = ParamSpec("P")
R = TypeVar("R")

_next_span_id = itertools.count(1).__next__
_current: ContextVar[int | None] = ContextVar("radiosonde_span_context", default=None)


def current_span_context() -> int | None:
    """The ``telemetry_span_context`` of the innermost span open in this context, or ``None``."""
    return _current.get()


class Span:
    """One span around a block of work; see the module docstring for the events it emits.

    Inside the block, add to ``.metadata`` (merged into the stop/exception metadata) and to
    ``.measurements`` (merged into the stop measurements) to report results. A ``Span`` object
    is used for one block at a time; as a decorator it opens a fresh span on every call.
    """

    __slots__ = (
        "_start",
        "_token",
        "context",
        "exception_event",
        "measurements",
        "metadata",
        "parent",
        "prefix",
        "start_event",
        "stop_event",
    )

    def __init__(self, prefix: EventNameLike, metadata: dict[str, Any] | None = None) -> None:
        self.prefix: EventName = event_name(prefix)
        self.start_event = (*self.prefix, "start")
        self.stop_event = (*self.prefix, "stop")
        self.exception_event = (*self.prefix, "exception")
        self.metadata: dict[str, Any] = dict(metadata) if metadata else {}
        self.measurements: dict[str, Any] = {}
        self.context: int | None = None
        self.parent: int | None = None
        self._start = 0
        self._token: Token[int | None] | None = None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Span:
        context = _next_span_id()
        self.context = context
        self.parent = _current.get()
        self._token = _current.set(context)
        metadata = self.metadata
        metadata["telemetry_span_context"] = context
        metadata["parent_span_context"] = self.parent
        start = time.monotonic_ns()
        self._start = start
        execute(
            self.start_event,
            {"monotonic_time": start, "system_time": time.time_ns()},
            dict(metadata),
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time.monotonic_ns()
        token = self._token
        if token is not None:
            self._token = None
            try:
                _current.reset(token)
            except ValueError:  # exited in another context than it entered: nothing to restore
                pass
        metadata = self.metadata
        metadata["telemetry_span_context"] = self.context
        metadata["parent_span_context"] = self.parent
        if exc is None:
            measurements = {"duration": end - self._start, "monotonic_time": end}
            if self.measurements:
                measurements.update(self.measurements)
            execute(self.stop_event, measurements, metadata)
        else:
            metadata["kind"] = exc_type
            metadata["reason"] = exc
            metadata["stacktrace"] = traceback.extract_tb(tb)
            execute(
                self.exception_event,
                {"duration": end - self._start, "monotonic_time": end},
                metadata,
            )

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------------------------

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        prefix = self.prefix
        base_metadata = dict(self.metadata)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with Span(prefix, base_metadata):
                    return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            with Span(prefix, base_metadata):
                return fn(*args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return f"Span({'.'.join(self.prefix)!r}, context={self.context!r})"


def span(event_prefix: EventNameLike, metadata: dict[str, Any] | None = None) -> Span:
    """Open a span named ``event_prefix``: use as ``with``, ``async with`` or a decorator.

    ``metadata`` is copied into every event of the span. Raises ``ValueError`` for an invalid
    event prefix.
    """
    return Span(event_prefix, metadata)
