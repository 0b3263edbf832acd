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

A span records when, as it opens, some handler listens to one of its three events; it then
emits each event that has handlers when it is due. A span opened while nothing listens stays
silent to the end, even if a handler is attached meanwhile (the choice is made once, like a
sampling decision), and costs little more than its context bookkeeping: no clock is read and
no measurements or metadata are built for it. Its context is still tracked, so spans opened
inside it name it as their parent.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from radiosonde import events as _events
from radiosonde.events import WILDCARD, EventName, EventNameLike, event_name, execute

__all__ = ["Span", "current_span_context", "span"]

P = ParamSpec("P")
R = TypeVar("R")

_next_span_id = itertools.count(1).__next__
_id_lock = threading.Lock()
# The innermost open span of this thread or task. The span object itself, not its id: a silent
# span gets an id only if something asks for it (a child's events, current_span_context()).
_current: ContextVar[Span | None] = ContextVar("radiosonde_current_span", default=None)
_monotonic_ns = time.monotonic_ns


class _SpanNames:
    """The event names of one span prefix, and whether they have handlers in the current table.

    ``listening`` is ``(generation, any, start)``: ``generation`` is the event core's token of
    the handler table the answers were computed against. Every attach/detach publishes a new
    token, so one ``is`` tells whether the answers still hold; the tuple is replaced in one
    assignment, so threads never see half an update.
    """

    __slots__ = ("exception", "listening", "prefix", "start", "stop")

    def __init__(self, prefix: EventName) -> None:
        self.prefix = prefix
        self.start: EventName = (*prefix, "start")
        self.stop: EventName = (*prefix, "stop")
        self.exception: EventName = (*prefix, "exception")
        self.listening: tuple[object, bool, bool] = (None, False, False)

    def refresh(self) -> tuple[object, bool, bool]:
        generation = _events._generation  # read first: the answers below are this recent or more
        start = _events._lookup(self.start) is not None
        rest = _events._lookup(self.stop) is not None or _events._lookup(self.exception) is not None
        self.listening = listening = (generation, start or rest, start)
        return listening


# prefix as given -> its names. Spans are opened with a handful of literal prefixes, so
# validating each once saves most of a span's set-up; the bound only matters for code that
# builds prefixes on the fly.
_names_cache: dict[object, _SpanNames] = {}
_NAMES_CACHE_LIMIT = 1_000


def _names_for(prefix: object) -> _SpanNames:
    name = event_name(prefix)
    if name[-1] == WILDCARD:
        raise ValueError(f"invalid span prefix {prefix!r}: a span prefix cannot end in '*'")
    names = _SpanNames(name)
    if len(_names_cache) >= _NAMES_CACHE_LIMIT:
        _names_cache.clear()
    with contextlib.suppress(TypeError):  # an unhashable prefix (a list) is validated each time
        _names_cache[prefix] = names
    return names


def _context_of(span: Span | None) -> int | None:
    """The span's ``telemetry_span_context``, given to it now if it has none yet."""
    if span is None:
        return None
    context: int | None = getattr(span, "_id", None)  # unset until the span first opens
    if context is None:
        with _id_lock:  # two child threads may ask at once: they must get the same id
            context = span._id
            if context is None:
                context = span._id = _next_span_id()
    return context


def current_span_context() -> int | None:
    """The ``telemetry_span_context`` of the innermost span open in this context, or ``None``."""
    return _context_of(_current.get())


class Span:
    """One span around a block of work; see the module docstring for the events it emits.

    ``span(prefix, metadata=None)`` creates one (``span`` is this class). ``metadata`` is copied
    into every event of the span. Inside the block, add to ``.metadata`` (merged into the
    stop/exception metadata) and to ``.measurements`` (merged into the stop measurements) to
    report results; ``.context`` and ``.parent`` are this span's ``telemetry_span_context``
    and ``parent_span_context``. A ``Span`` object is used for one block at a time; as a
    decorator it opens a fresh span on every call.

    Raises ``ValueError`` for an invalid prefix (including one ending in ``"*"``).
    """

    __slots__ = ("_id", "_measurements", "_metadata", "_names", "_parent", "_start", "_token")

    _names: _SpanNames
    _metadata: dict[str, Any] | None
    _measurements: dict[str, Any] | None
    _id: int | None  # unset until the span opens; then fresh on every opening
    _parent: Span | None
    _start: int | None  # None: silent (nothing listened when it opened)
    _token: Token[Span | None] | None

    def __init__(self, event_prefix: EventNameLike, metadata: dict[str, Any] | None = None) -> None:
        try:
            self._names = _names_cache[event_prefix]
        except (KeyError, TypeError):
            self._names = _names_for(event_prefix)
        self._metadata = dict(metadata) if metadata else None
        self._measurements = None

    @property
    def prefix(self) -> EventName:
        """The span's event prefix, in tuple form."""
        return self._names.prefix

    @property
    def start_event(self) -> EventName:
        """``prefix + ("start",)``."""
        return self._names.start

    @property
    def stop_event(self) -> EventName:
        """``prefix + ("stop",)``."""
        return self._names.stop

    @property
    def exception_event(self) -> EventName:
        """``prefix + ("exception",)``."""
        return self._names.exception

    @property
    def metadata(self) -> dict[str, Any]:
        """Metadata of this span's events; add to it inside the block to report results."""
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = {}
        return metadata

    @property
    def measurements(self) -> dict[str, Any]:
        """Extra measurements merged into the stop event, after ``duration``/``monotonic_time``."""
        measurements = self._measurements
        if measurements is None:
            measurements = self._measurements = {}
        return measurements

    @property
    def context(self) -> int:
        """This span's ``telemetry_span_context``: unique among the spans of the process."""
        return _context_of(self)  # type: ignore[return-value]  # never None for a Span

    @property
    def parent(self) -> int | None:
        """The ``telemetry_span_context`` of the span this one opened in, or ``None``."""
        return _context_of(getattr(self, "_parent", None))

    def _event_metadata(self) -> dict[str, Any]:
        metadata = dict(self._metadata) if self._metadata else {}
        metadata["telemetry_span_context"] = self._id
        metadata["parent_span_context"] = _context_of(self._parent)
        return metadata

    # -- context manager -------------------------------------------------------------------
    # Kept lean on purpose (see bench/core.py): a silent span reads no clock, looks up no
    # handlers beyond one identity check, and builds nothing.

    def __enter__(self) -> Span:
        names = self._names
        listening = names.listening
        if listening[0] is not _events._generation:
            listening = names.refresh()
        self._parent = _current.get()
        if listening[1]:
            self._id = _next_span_id()
            self._token = _current.set(self)
            self._start = start = _monotonic_ns()
            if listening[2]:
                execute(
                    names.start,
                    {"monotonic_time": start, "system_time": time.time_ns()},
                    self._event_metadata(),
                )
        else:
            self._id = None  # given on demand, by _context_of
            self._token = _current.set(self)
            self._start = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is not None:
            self._token = None
            try:  # noqa: SIM105  # contextlib.suppress costs more than the rest of a span
                _current.reset(token)
            except ValueError:  # exited in another context than it entered: nothing to restore
                pass
        start = self._start
        if start is None:
            return
        event = self._names.stop if exc is None else self._names.exception
        if _events._lookup(event) is None:
            return
        end = _monotonic_ns()
        measurements: dict[str, Any] = {"duration": end - start, "monotonic_time": end}
        metadata = self._event_metadata()
        if exc is None:
            if self._measurements:
                measurements.update(self._measurements)
        else:
            metadata["kind"] = exc_type
            metadata["reason"] = exc
            metadata["stacktrace"] = traceback.extract_tb(tb)
        execute(event, measurements, metadata)

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
        """Decorate ``fn`` so that every call runs in a fresh span with this prefix and metadata.

        Raises ``TypeError`` for generator functions: their body runs after the call returns,
        outside the span; open the span inside the generator instead.
        """
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"span({'.'.join(self.prefix)!r}) cannot decorate the generator function"
                f" {fn.__qualname__}: its body runs outside the call; use `with span(...)`"
                " inside it instead"
            )
        prefix = self._names.prefix
        base_metadata = dict(self._metadata) if self._metadata else None

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
        return f"Span({'.'.join(self.prefix)!r}, context={getattr(self, '_id', None)!r})"


span = Span
"""``span(event_prefix, metadata=None)``: open a span, as ``with``, ``async with`` or decorator.

The same as :class:`Span`; see it and the module docstring for the events and their contents.
"""
