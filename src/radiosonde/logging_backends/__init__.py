"""Where log records go: the :class:`LogBackend` protocol and the backends radiosonde ships.

* :class:`ConsoleBackend` (the default): coloured lines on a terminal, JSON lines otherwise.
* :class:`JsonFileBackend`: JSON lines in a file, rotated by size.
* :class:`SyslogBackend`: RFC 5424 with structured data over UDP, TCP or a Unix socket.
* :class:`DatadogBackend`: the Datadog HTTP logs intake (v2), batched on a background thread.

Anything with ``log``, ``flush`` and ``close`` methods is a backend too (see
:class:`LogBackend`). Backends are plugged into the facade with
``radiosonde.log.configure(backends=[...])`` or ``radiosonde.log.add_backend(backend)``.

All of them use the standard library only. The syslog and Datadog modules are imported on first
use (``urllib`` is slow to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from radiosonde.logging_backends.console import ConsoleBackend
from radiosonde.logging_backends.file import JsonFileBackend

if TYPE_CHECKING:
    from radiosonde.logging_backends.datadog import DatadogBackend
    from radiosonde.logging_backends.syslog import SyslogBackend

__all__ = [
    "ConsoleBackend",
    "DatadogBackend",
    "JsonFileBackend",
    "LogBackend",
    "SyslogBackend",
]


@runtime_checkable
class LogBackend(Protocol):
    """What the log facade calls. Implement these three methods to write your own backend.

    * ``log(level, message, metadata)`` is called in the caller's thread for every record that
      passed the level filter: ``level`` is one of ``"debug"``, ``"info"``, ``"warning"``,
      ``"error"``, ``"critical"``; ``metadata`` holds the enrichment (``timestamp``,
      ``service``, ``environment``, ``pid``, ``span_id`` when a span is open) and the record's
      own fields, already redacted. It must return quickly: hand slow work to a background
      thread (see how the Datadog backend does it). It must not modify ``metadata``, which is
      shared with the other backends. An exception is counted and reported as the event
      ``("radiosonde", "log", "backend_failure")``, never raised into the caller.
    * ``flush(timeout)`` sends whatever is pending, waiting at most ``timeout`` seconds.
    * ``close()`` releases the backend's resources; it is not used afterwards.

    An optional ``name`` attribute names the backend in failure and drop reports.
    """

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        """Write one record."""

    def flush(self, timeout: float) -> None:
        """Send what is pending, waiting at most ``timeout`` seconds."""

    def close(self) -> None:
        """Release resources; the backend is not used afterwards."""


def __getattr__(name: str) -> Any:
    # Lazy: the syslog and Datadog modules pull in sockets and urllib only when asked for.
    if name == "SyslogBackend":
        from radiosonde.logging_backends.syslog import SyslogBackend

        return SyslogBackend
    if name == "DatadogBackend":
        from radiosonde.logging_backends.datadog import DatadogBackend

        return DatadogBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
