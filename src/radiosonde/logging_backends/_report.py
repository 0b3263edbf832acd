"""How the logging machinery reports its own trouble without ever raising or looping.

Two events, both emitted through the event core:

* ``("radiosonde", "log", "backend_failure")``: a backend raised. Measurements ``count``;
  metadata ``backend`` (its name), ``kind`` (the exception class) and ``reason`` (the exception).
* ``("radiosonde", "log", "dropped")``: records were dropped. Measurements ``count``; metadata
  ``backend`` and ``reason`` (``"queue_full"``, ``"rejected"``, ``"retries_exhausted"``,
  ``"send_failed"``, ``"too_large"``...).

A handler of these events may itself log; a report made while a report is being made on the
same thread is only counted, so a failing backend cannot feed itself forever.

The thread-local :data:`guard` also tells the stdlib bridge when a record comes from inside the
logging machinery (a dispatch in progress, or a background sender thread): the bridge drops
such records instead of routing them back into the backends that produced them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from radiosonde.events import execute

__all__ = [
    "BACKEND_FAILURE_EVENT",
    "DROPPED_EVENT",
    "backend_name",
    "counters",
    "guard",
    "in_machinery",
    "mark_worker_thread",
    "renew_lock_after_fork",
    "report_dropped",
    "report_failure",
    "reset_counters",
]

BACKEND_FAILURE_EVENT = ("radiosonde", "log", "backend_failure")
DROPPED_EVENT = ("radiosonde", "log", "dropped")

# A failing backend is also logged through stdlib logging, at most this often per backend, so a
# developer sees it even with no handler attached to the events.
_WARN_INTERVAL_S = 60.0

_logger = logging.getLogger("radiosonde.log")

guard = threading.local()
"""Per-thread flags: ``dispatching`` (depth of log dispatches in progress), ``reporting`` and
``worker`` (the thread is one of the logging machinery's background senders)."""

_lock = threading.Lock()
_counters: dict[str, int] = {"backend_failures": 0, "dropped": 0, "bridge_skipped": 0}
_last_warned: dict[str, float] = {}


def counters() -> dict[str, int]:
    """A copy of the machinery's counters since start-up (or the last reset)."""
    with _lock:
        return dict(_counters)


def reset_counters() -> None:
    """Zero the counters (for tests)."""
    with _lock:
        for key in _counters:
            _counters[key] = 0
        _last_warned.clear()


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to one counter."""
    with _lock:
        _counters[key] = _counters.get(key, 0) + n


# Objects whose ``_lock`` is replaced in a forked child: a lock held by another thread at the
# moment of the fork would otherwise stay held forever in the child.
_lock_owners: weakref.WeakSet[Any] = weakref.WeakSet()


def renew_lock_after_fork(owner: Any) -> None:
    """Give ``owner._lock`` a fresh :class:`threading.Lock` in every forked child."""
    _lock_owners.add(owner)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for owner in list(_lock_owners):
        owner._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def backend_name(backend: object) -> str:
    """The name a backend is reported under: its ``name`` attribute, else its class name."""
    name = getattr(backend, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(backend).__name__


def in_machinery() -> bool:
    """True on a thread that is dispatching a log record or is a background sender."""
    return bool(getattr(guard, "dispatching", 0) or getattr(guard, "worker", False))


def mark_worker_thread() -> None:
    """Mark the current thread as a background sender (called first thing in its run loop)."""
    guard.worker = True


def report_failure(backend: object, exc: BaseException) -> None:
    """Count a backend failure, emit :data:`BACKEND_FAILURE_EVENT` and warn (rate-limited).

    Never raises.
    """
    try:
        name = backend_name(backend)
        count("backend_failures")
        if getattr(guard, "reporting", False):
            return
        guard.reporting = True
        try:
            execute(
                BACKEND_FAILURE_EVENT,
                {"count": 1},
                {"backend": name, "kind": type(exc), "reason": exc},
            )
            now = time.monotonic()
            with _lock:
                due = now - _last_warned.get(name, float("-inf")) >= _WARN_INTERVAL_S
                if due:
                    _last_warned[name] = now
            if due:
                _logger.warning(
                    "radiosonde: log backend %s failed: %s: %s (reported as the event %s;"
                    " further failures of this backend are not logged for %ds)",
                    name,
                    type(exc).__name__,
                    exc,
                    ".".join(BACKEND_FAILURE_EVENT),
                    int(_WARN_INTERVAL_S),
                )
        finally:
            guard.reporting = False
    except Exception:  # reporting must never be the thing that breaks the host
        pass


def report_dropped(backend: object, n: int, reason: str, **extra: Any) -> None:
    """Count ``n`` dropped records and emit :data:`DROPPED_EVENT`. Never raises."""
    if n <= 0:
        return
    try:
        count("dropped", n)
        if getattr(guard, "reporting", False):
            return
        guard.reporting = True
        try:
            execute(
                DROPPED_EVENT,
                {"count": n},
                {"backend": backend_name(backend), "reason": reason, **extra},
            )
        finally:
            guard.reporting = False
    except Exception:
        pass
