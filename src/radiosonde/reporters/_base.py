"""The small base every reporter shares: ``start()``/``stop()`` and the context manager.

Interface (what a subclass provides and what it gets):

* ``_start()`` and ``_stop()``: the subclass's work (attach handlers, open sockets, start a
  thread...; the reverse). :meth:`Reporter.start` and :meth:`Reporter.stop` call them at most
  once per state change, under a lock: starting a started reporter, or stopping a stopped one,
  does nothing. ``_start`` may raise (bad configuration, a port in use): the reporter then stays
  stopped and the exception reaches the caller of ``start()``.
* ``with reporter:`` starts it and returns the reporter itself; leaving the block stops it.
* :attr:`Reporter.running` says whether it is started; :attr:`Reporter.name` labels its
  errors and self-metrics.
* ``self._error(kind, exc)`` counts an error by ``kind`` in :attr:`Reporter.errors` and reports
  it through :func:`radiosonde.selfmetrics.report_error`; it never raises, so it is safe to call
  from an event handler.
"""

from __future__ import annotations

import threading
from typing import Self

from radiosonde.selfmetrics import report_error

__all__ = ["Reporter"]


class Reporter:
    """Base class of radiosonde's reporters (see the module docstring for the interface)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._running = False
        self._state_lock = threading.Lock()
        self._errors: dict[str, int] = {}

    def _start(self) -> None:
        """Begin reporting (subclasses override)."""

    def _stop(self) -> None:
        """Stop reporting and release resources (subclasses override)."""

    def start(self) -> None:
        """Start reporting; does nothing when already started."""
        with self._state_lock:
            if self._running:
                return
            self._start()
            self._running = True

    def stop(self) -> None:
        """Stop reporting; does nothing when not started."""
        with self._state_lock:
            if not self._running:
                return
            self._running = False
            self._stop()

    @property
    def running(self) -> bool:
        """Whether the reporter is started."""
        return self._running

    @property
    def errors(self) -> dict[str, int]:
        """Errors met so far, by kind (a copy)."""
        return dict(self._errors)

    def _error(self, kind: str, reason: BaseException | None = None) -> None:
        try:
            self._errors[kind] = self._errors.get(kind, 0) + 1
            report_error(self.name, kind, reason)
        except Exception:
            pass

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<{type(self).__name__} {self.name!r} {state}>"
