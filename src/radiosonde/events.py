"""The event core: ``execute`` events, ``attach`` handlers to them.

This is the Python counterpart of Erlang's ``telemetry``: an event is a name, a dict of
measurements and a dict of metadata; handlers attached to a name are called synchronously, in
the caller, each time an event of that name is executed.

Contracts that the rest of radiosonde (and its users) rely on:

* ``execute`` never raises because of a handler. A handler that raises is reported through the
  ``("radiosonde", "handler", "failure")`` event and, by default, detached.
* ``execute`` takes no lock. The handler table is copy-on-write: ``attach`` and ``detach``
  build a new table under a lock and publish it with one assignment, so a dispatch always sees
  one consistent table.
* A dispatch uses the handlers that were attached when it began. A handler attached or detached
  from inside a handler takes effect from the next ``execute`` on.
* Prefix subscriptions (``("myapp", "*")``) are resolved once per event name, on its first
  ``execute``, and cached; the cache is emptied on every attach/detach and when it grows past
  :data:`RESOLVED_CACHE_LIMIT` names, so ``execute`` stays a single dict lookup. A handler id
  subscribed to an event through several of its names is called once per event.
* A handler that re-enters itself through ``execute`` is stopped about
  :data:`MAX_DISPATCH_DEPTH` levels deep in one thread (the deeper call is skipped and counted
  in :func:`stats`). ``execute`` keeps no per-thread state until a handler has several calls in
  flight, which is what keeps a dispatch cheap.

This module imports nothing of radiosonde's and only the standard library.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "FAILURE_EVENT",
    "RESOLVED_CACHE_LIMIT",
    "EventName",
    "EventNameLike",
    "Handler",
    "HandlerExistsError",
    "HandlerInfo",
    "attach",
    "attach_many",
    "detach",
    "event_name",
    "execute",
    "has_handlers",
    "list_handlers",
    "stats",
]

EventName: TypeAlias = tuple[str, ...]
"""An event name in its canonical form: a non-empty tuple of non-empty strings."""

EventNameLike: TypeAlias = "tuple[str, ...] | str"
"""What the API accepts as an event name: the tuple, or the same parts joined with dots."""

Handler: TypeAlias = Callable[[EventName, dict[str, Any], dict[str, Any], Any], object]
"""``handler(event, measurements, metadata, config)``; its return value is ignored."""

OnError: TypeAlias = Literal["detach", "keep"]

FAILURE_EVENT: EventName = ("radiosonde", "handler", "failure")
"""Emitted when a handler raises; see :func:`attach` for its measurements and metadata."""

RESOLVED_CACHE_LIMIT = 10_000
"""How many distinct event names keep their resolved handler list before the cache is emptied."""

WILDCARD = "*"

# A handler re-entering itself (through execute) deeper than this is skipped (and counted): it
# would otherwise recurse until RecursionError, far from the code at fault, taking innocent
# handlers of the failure event down with it.
MAX_DISPATCH_DEPTH = 32

# Per-thread bookkeeping costs more than the rest of a dispatch, so it is paid only by calls
# that may be deep: a handler with fewer than this many calls in flight (in all threads) cannot
# be deeper than that in this thread, and is called directly.
_SHALLOW_CALLS = 4

# A handler kept attached after failing is logged at most once per this many seconds.
_KEEP_LOG_INTERVAL_S = 60.0

_logger = logging.getLogger("radiosonde")


class HandlerExistsError(ValueError):
    """Raised by :func:`attach` when the handler id is already attached."""


@dataclass(frozen=True, slots=True)
class HandlerInfo:
    """One attachment of a handler to one event name, as listed by :func:`list_handlers`.

    A prefix subscription shows its name with the ``"*"`` part, e.g. ``("myapp", "*")``.
    """

    id: str
    event: EventName
    function: Handler
    config: Any
    on_error: OnError = "detach"


class _Attachment:
    """The mutable side of a handler id: failure bookkeeping shared by all its events."""

    __slots__ = (
        "active",
        "failures",
        "handler_id",
        "last_logged",
        "on_error",
        "order",
        "suppressed",
    )

    def __init__(self, handler_id: str, on_error: OnError) -> None:
        # Calls of this handler in flight, in all threads: a hint (see _SHALLOW_CALLS). A rare
        # lost update between threads only makes it take the exact, slower path more or less
        # often; the exact per-thread depth is what bounds recursion.
        self.active = 0
        self.handler_id = handler_id
        self.on_error: OnError = on_error
        # Global attach sequence number per event name: handlers run in attachment order.
        self.order: dict[EventName, int] = {}
        self.failures = 0
        self.last_logged = float("-inf")
        self.suppressed = 0


# What execute iterates over: (function, config, info, attachment) per handler.
_Dispatch: TypeAlias = tuple[Handler, Any, HandlerInfo, _Attachment]
# A resolved cache entry, or None when nothing listens: the canonical name, the first handler
# spread out (most events have one, and execute calls it without a loop), then the others.
_Resolved: TypeAlias = (
    "tuple[EventName, Handler, Any, HandlerInfo, _Attachment, tuple[_Dispatch, ...]] | None"
)


class _Registry:
    """One immutable generation of the handler table, plus its resolution cache."""

    __slots__ = ("by_id", "cache", "exact", "prefix")

    def __init__(
        self,
        by_id: dict[str, tuple[_Attachment, tuple[HandlerInfo, ...]]],
    ) -> None:
        self.by_id = by_id
        self.exact: dict[EventName, list[_Dispatch]] = {}
        self.prefix: dict[EventName, list[_Dispatch]] = {}
        # Attachment order is kept: handlers run in the order they were attached.
        entries = sorted(
            ((att, info) for att, infos in by_id.values() for info in infos),
            key=lambda pair: pair[0].order[pair[1].event],
        )
        for att, info in entries:
            dispatch: _Dispatch = (info.function, info.config, info, att)
            if info.event[-1] == WILDCARD:
                self.prefix.setdefault(info.event[:-1], []).append(dispatch)
            else:
                self.exact.setdefault(info.event, []).append(dispatch)
        self.cache: dict[object, _Resolved] = {}

    def resolve(self, key: object, name: EventName) -> _Resolved:
        """Resolve the handlers of ``name`` and cache them under ``key`` (what execute got)."""
        handlers: list[_Dispatch] = []
        if self.prefix:
            for length in range(len(name)):
                handlers.extend(self.prefix.get(name[:length], ()))
        handlers.extend(self.exact.get(name, ()))
        if len(handlers) > 1 and self.prefix:
            handlers.sort(key=lambda d: d[3].order[d[2].event])
            # A handler id reached through two of its names (("a", "*") and ("a", "b")) runs
            # once, at its first position: a metric must not count one event twice.
            seen: set[int] = set()
            unique: list[_Dispatch] = []
            for dispatch in handlers:
                if id(dispatch[3]) not in seen:
                    seen.add(id(dispatch[3]))
                    unique.append(dispatch)
            handlers = unique
        resolved: _Resolved = (name, *handlers[0], tuple(handlers[1:])) if handlers else None
        if len(self.cache) >= RESOLVED_CACHE_LIMIT:
            self.cache.clear()
        with contextlib.suppress(TypeError):  # an unhashable name (a list) is never cached
            self.cache[key] = resolved
        return resolved


class _DispatchState(threading.local):
    """Per-thread depth of counted calls; the class attribute is each new thread's start."""

    depth = 0


_lock = threading.Lock()
_attach_counter = 0
_registry = _Registry({})
# The hot path reads only this dict; it is always the cache of the current _registry.
_cache: dict[object, _Resolved] = _registry.cache
# A fresh token on every publish: what spans compare to know whether their cached answer to
# "does anyone listen?" still holds (a token, not the cache itself, so no old table is kept).
_generation = object()
_state = _DispatchState()
_stats_lock = threading.Lock()
_stats: dict[str, int] = {
    "handler_failures": 0,
    "handlers_detached": 0,
    "invalid_events": 0,
    "dropped_reentrant": 0,
}


def execute(
    event: EventNameLike,
    measurements: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Emit an event: call every handler attached to ``event``, in the caller's thread.

    Handlers are called as ``handler(event, measurements, metadata, config)`` in the order they
    were attached, with ``event`` always in tuple form. ``None`` measurements or metadata reach
    handlers as empty dicts. Handlers share the dicts passed here and must not modify them.

    Never raises because of a handler (see :func:`attach` for the failure policy). An invalid
    event name reaches no handler and is counted in :func:`stats` as ``invalid_events``.
    """
    # The common path is kept minimal on purpose (see bench/core.py): one dict lookup when
    # nothing listens; the first handler called without a loop; no per-thread state.
    try:
        resolved = _cache[event]
    except (KeyError, TypeError):
        resolved = _resolve(event)
    if resolved is None:
        return
    name, function, config, info, attachment, others = resolved
    if measurements is None:
        measurements = {}
    if metadata is None:
        metadata = {}
    active = attachment.active
    if active < _SHALLOW_CALLS:
        attachment.active = active + 1
        try:
            function(name, measurements, metadata, config)
        except Exception as exc:
            _handler_failed(info, attachment, name, exc)
        finally:
            attachment.active -= 1
    else:
        _call_counted(function, name, measurements, metadata, config, info, attachment)
    if others:
        _dispatch_others(name, others, measurements, metadata)


def _dispatch_others(
    name: EventName,
    dispatches: tuple[_Dispatch, ...],
    measurements: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """The second and later handlers of an event: the same as execute's call of the first."""
    for function, config, info, attachment in dispatches:
        active = attachment.active
        if active < _SHALLOW_CALLS:
            attachment.active = active + 1
            try:
                function(name, measurements, metadata, config)
            except Exception as exc:
                _handler_failed(info, attachment, name, exc)
            finally:
                attachment.active -= 1
        else:
            _call_counted(function, name, measurements, metadata, config, info, attachment)


def _call_counted(  # noqa: PLR0917  # positional on purpose: this is the dispatch path
    function: Handler,
    name: EventName,
    measurements: dict[str, Any],
    metadata: dict[str, Any],
    config: Any,
    info: HandlerInfo,
    attachment: _Attachment,
) -> None:
    """Call a handler that may be re-entering itself, counting this thread's depth exactly.

    Reached when the handler has several calls in flight: either threads running it at once
    (the depth here is then small, and the call goes ahead) or a recursion, stopped here.
    """
    state = _state
    depth = state.depth
    if depth >= MAX_DISPATCH_DEPTH - _SHALLOW_CALLS:
        _count("dropped_reentrant")
        return
    state.depth = depth + 1
    attachment.active += 1
    try:
        function(name, measurements, metadata, config)
    except Exception as exc:
        _handler_failed(info, attachment, name, exc)
    finally:
        attachment.active -= 1
        state.depth = depth


def attach(
    handler_id: str,
    event: EventNameLike,
    handler: Handler,
    config: Any = None,
    *,
    on_error: OnError = "detach",
) -> None:
    """Attach ``handler`` under ``handler_id`` to one event name.

    ``event`` may end in ``"*"`` (``("myapp", "*")`` or ``"myapp.*"``) to receive every event
    whose name starts with the parts before it; ``"*"`` alone receives every event.

    When the handler raises, the exception never reaches the caller of :func:`execute`. The
    event :data:`FAILURE_EVENT` is emitted with measurements ``monotonic_time`` and
    ``system_time`` (integer nanoseconds) and metadata ``event_name``, ``handler_id``,
    ``handler_config``, ``kind`` (the exception class), ``reason`` (the exception) and
    ``stacktrace`` (a :class:`traceback.StackSummary`). With ``on_error="detach"`` (the default)
    the handler is then detached from all its events and a warning is logged through the
    ``radiosonde`` logger; with ``on_error="keep"`` it stays attached and the warning is logged
    at most once a minute per handler.

    Raises :class:`HandlerExistsError` if ``handler_id`` is attached already, and
    :class:`ValueError` for an invalid event name or ``on_error``.
    """
    attach_many(handler_id, [event], handler, config, on_error=on_error)


def attach_many(
    handler_id: str,
    events: Iterable[EventNameLike],
    handler: Handler,
    config: Any = None,
    *,
    on_error: OnError = "detach",
) -> None:
    """Attach ``handler`` under one ``handler_id`` to several event names at once.

    The same contract as :func:`attach`; detaching the id detaches it from all of them.
    """
    global _attach_counter
    if not isinstance(handler_id, str) or not handler_id:
        raise ValueError(f"handler_id must be a non-empty string, got {handler_id!r}")
    if not callable(handler):
        raise TypeError(f"handler for {handler_id!r} must be callable, got {handler!r}")
    if on_error not in ("detach", "keep"):
        raise ValueError(f"on_error must be 'detach' or 'keep', got {on_error!r}")
    if isinstance(events, str) or (
        isinstance(events, tuple) and all(isinstance(part, str) for part in events)
    ):
        raise ValueError(
            f"attach_many takes a list of event names, got the single name {events!r};"
            " use attach() for one event"
        )
    names: list[EventName] = []
    for raw in events:
        name = event_name(raw)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"attach_many({handler_id!r}) needs at least one event name")
    with _lock:
        if handler_id in _registry.by_id:
            raise HandlerExistsError(f"a handler with id {handler_id!r} is attached already")
        attachment = _Attachment(handler_id, on_error)
        infos = tuple(HandlerInfo(handler_id, n, handler, config, on_error) for n in names)
        for info in infos:
            _attach_counter += 1
            attachment.order[info.event] = _attach_counter
        by_id = dict(_registry.by_id)
        by_id[handler_id] = (attachment, infos)
        _publish(_Registry(by_id))


def detach(handler_id: str) -> bool:
    """Detach ``handler_id`` from all its events. Returns True when it was attached.

    A dispatch already under way (in this or another thread) may still call the handler once;
    every ``execute`` that starts after ``detach`` returns does not.
    """
    return _detach(handler_id, None)


def _detach(handler_id: str, attachment: _Attachment | None) -> bool:
    """Detach ``handler_id``; when ``attachment`` is given, only if it is still that one."""
    with _lock:
        current = _registry.by_id.get(handler_id)
        if current is None or (attachment is not None and current[0] is not attachment):
            return False
        by_id = dict(_registry.by_id)
        del by_id[handler_id]
        _publish(_Registry(by_id))
        return True


def list_handlers(prefix: EventNameLike | tuple[()] = ()) -> list[HandlerInfo]:
    """List the attachments whose event name starts with ``prefix``; ``()`` lists them all.

    A trailing ``"*"`` is ignored (``"myapp.*"`` lists the same as ``"myapp"``), so prefix
    subscriptions are listed under their prefix. A handler attached to several names appears
    once per name, in attachment order.
    """
    wanted: EventName = () if prefix in ((), "") else event_name(prefix)
    if wanted and wanted[-1] == WILDCARD:
        wanted = wanted[:-1]
    registry = _registry
    found = [
        (att.order[info.event], info)
        for att, infos in registry.by_id.values()
        for info in infos
        if info.event[: len(wanted)] == wanted
    ]
    found.sort(key=lambda pair: pair[0])
    return [info for _order, info in found]


def event_name(event: object) -> EventName:
    """Return the canonical tuple form of an event name, or raise ``ValueError``.

    ``("a", "b")`` and ``"a.b"`` are the same name. Parts must be non-empty strings; ``"*"`` may
    only be the last part (a prefix subscription).
    """
    name = _coerce(event)
    if name is None:
        raise ValueError(
            f"invalid event name {event!r}: expected a non-empty tuple of non-empty strings,"
            ' e.g. ("myapp", "repo", "query"), or the dotted string "myapp.repo.query"'
        )
    return name


def stats() -> dict[str, int]:
    """Counters of what the event core skipped or absorbed since start-up (a copy).

    ``handler_failures``: handler calls that raised; ``handlers_detached``: handlers detached
    for it; ``invalid_events``: executes with an invalid name (including a ``"*"`` name: those
    subscribe, they are not events); ``dropped_reentrant``: handler calls skipped because the
    handler re-entered itself (through ``execute``) about :data:`MAX_DISPATCH_DEPTH` levels deep.
    """
    with _stats_lock:
        return dict(_stats)


def _count(key: str) -> None:
    # Only the slow paths count; the lock keeps concurrent failures from losing increments.
    with _stats_lock:
        _stats[key] += 1


def has_handlers(event: EventNameLike) -> bool:
    """True when :func:`execute` of ``event`` would call at least one handler now.

    As cheap as an ``execute`` with nothing attached (one lookup): use it to skip building
    costly measurements nobody listens to. An invalid name has no handlers.
    """
    return _lookup(event) is not None


def _lookup(event: object) -> _Resolved:
    """What :func:`execute` would dispatch ``event`` to (None: nothing listens); for spans."""
    try:
        return _cache[event]
    except (KeyError, TypeError):
        return _resolve(event)


def _resolve(event: object) -> _Resolved:
    """The cache-miss path of :func:`execute`: canonicalise, resolve, cache."""
    registry = _registry  # resolve and cache within one generation of the table
    name = event if type(event) is tuple and _is_valid(event) else _coerce(event)
    if name is None or name[-1] == WILDCARD:
        # Not cached, so that every execute with a bad name is counted.
        _count("invalid_events")
        return None
    return registry.resolve(event, name)


def _publish(registry: _Registry) -> None:
    global _registry, _cache, _generation
    _registry = registry
    _cache = registry.cache
    _generation = object()


def _is_valid(name: tuple[object, ...]) -> bool:
    if not name:
        return False
    last = len(name) - 1
    for i, part in enumerate(name):
        if type(part) is not str or not part:
            return False
        if part == WILDCARD and i != last:
            return False
    return True


def _coerce(event: object) -> EventName | None:
    if isinstance(event, str):
        parts: tuple[object, ...] = tuple(event.split("."))
    elif isinstance(event, tuple | list):
        parts = tuple(event)
    else:
        return None
    if not _is_valid(parts):
        return None
    return parts  # type: ignore[return-value]  # _is_valid checked every part is a str


def _handler_failed(
    info: HandlerInfo, attachment: _Attachment, name: EventName, exc: Exception
) -> None:
    """Report a failed handler call; never raises."""
    try:
        _count("handler_failures")
        attachment.failures += 1
        if attachment.on_error == "detach":
            # Only this attachment: the id may have been detached and attached anew meanwhile.
            if _detach(info.id, attachment):
                _count("handlers_detached")
                _logger.warning(
                    "radiosonde: handler %r failed on event %r and was detached: %s: %s",
                    info.id,
                    name,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
        else:
            now = time.monotonic()
            if now - attachment.last_logged >= _KEEP_LOG_INTERVAL_S:
                suppressed = attachment.suppressed
                attachment.last_logged = now
                attachment.suppressed = 0
                _logger.warning(
                    "radiosonde: handler %r failed on event %r (kept attached; %d more failures"
                    " not logged since the last report): %s: %s",
                    info.id,
                    name,
                    suppressed,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
            else:
                attachment.suppressed += 1
        if name == FAILURE_EVENT:
            # A failure while reporting a failure is logged, never re-emitted: no loop.
            return
        execute(
            FAILURE_EVENT,
            {"monotonic_time": time.monotonic_ns(), "system_time": time.time_ns()},
            {
                "event_name": name,
                "handler_id": info.id,
                "handler_config": info.config,
                "kind": type(exc),
                "reason": exc,
                "stacktrace": traceback.extract_tb(exc.__traceback__),
            },
        )
    except Exception:  # the failure path itself must never raise into execute's caller
        pass


def _reset_for_tests() -> None:
    """Detach everything and zero the counters (for radiosonde's own test suite)."""
    with _lock, _stats_lock:
        _publish(_Registry({}))
        for key in _stats:
            _stats[key] = 0
