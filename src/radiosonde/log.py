"""The structured logger facade: one call, enriched, redacted, sent to every configured backend.

::

    from radiosonde import log

    log.info("User logged in", {"user_id": 1})      # metadata as a dict...
    log.info("User logged in", user_id=1)           # ...or as keyword arguments (or both)
    log.exception("Payment failed", order_id=42)    # error level + the exception being handled

    request_log = log.bind(request_id="r-17")       # a logger that adds request_id to each record
    with log.contextualize(tenant="acme"):           # context for everything logged in the block,
        ...                                          # asyncio tasks created in it included

Levels: ``debug`` < ``info`` < ``warning`` < ``error`` < ``critical``; the threshold comes from
``LOG_LEVEL`` (via :func:`radiosonde.config.get_settings`) and :func:`set_level` changes it. A
call below the threshold costs one integer comparison.

Every record that passes reaches each backend as ``backend.log(level, message, metadata)``
where ``metadata`` holds, in this order (later keys win on a clash):

1. the enrichment: ``timestamp`` (RFC 3339, UTC, microseconds), ``service``, ``environment``,
   ``pid``, and ``span_id`` (:func:`radiosonde.current_span_context`) when a span is open;
2. the context from :func:`contextualize`; 3. the fields of a :func:`bind` logger;
4. the call's metadata dict; 5. the call's keyword fields; 6. ``error`` (``kind``, ``message``,
   ``stack``) when an exception is logged.

Unless turned off with ``configure(redact=False)``, metadata and message go through
:func:`radiosonde.redact.redact` first (and ``key=value`` pairs in the message whose key names a
secret are masked), so no backend ever sees a secret the deny-list knows.

The facade never raises into the caller and never blocks on a backend: a backend that raises is
counted and reported as the event ``("radiosonde", "log", "backend_failure")``; slow backends
(syslog over TCP, Datadog) queue to their own thread. Pending records are flushed at interpreter
exit, within ``exit_timeout`` seconds (2 by default).

Records from the standard :mod:`logging` module reach the same backends through
:class:`LoggingBridge`, installed with :func:`capture_stdlib`.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeAlias

from radiosonde import config as _config
from radiosonde.events import attach, detach
from radiosonde.logging_backends import ConsoleBackend, LogBackend, _report
from radiosonde.logging_backends._json import dumps
from radiosonde.logging_backends._record import RESERVED_KEYS as _RESERVED_KEYS
from radiosonde.logging_backends._record import Record
from radiosonde.redact import REDACTED, is_sensitive_key
from radiosonde.redact import redact as _default_redact
from radiosonde.spans import current_span_context

__all__ = [
    "CRITICAL",
    "DEBUG",
    "ERROR",
    "INFO",
    "LEVELS",
    "WARNING",
    "BoundLogger",
    "LogBackend",
    "LoggingBridge",
    "add_backend",
    "backends",
    "bind",
    "bound_context",
    "capture_stdlib",
    "configure",
    "configure_from_settings",
    "contextualize",
    "critical",
    "debug",
    "error",
    "exception",
    "flush",
    "get_level",
    "info",
    "is_enabled_for",
    "log",
    "release_stdlib",
    "remove_backend",
    "set_level",
    "shutdown",
    "stats",
    "warning",
]

DEBUG: Final = 10
INFO: Final = 20
WARNING: Final = 30
ERROR: Final = 40
CRITICAL: Final = 50

LEVELS: Final[Mapping[str, int]] = MappingProxyType(
    {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "critical": CRITICAL}
)
"""Level names and their numbers (the same numbers as the :mod:`logging` module's)."""

_ALIASES: Final = {"warn": "warning", "fatal": "critical", "notset": "debug", "trace": "debug"}
_NAMES_BY_NUMBER: Final = {number: name for name, number in LEVELS.items()}

Metadata: TypeAlias = "Mapping[str, Any] | None"
ExcInfo: TypeAlias = (
    "bool | BaseException | tuple[type[BaseException], BaseException, TracebackType | None]"
    " | tuple[None, None, None] | None"
)

# Re-entrant dispatch deeper than this (a backend or handler that logs, that logs...) is dropped.
_MAX_DEPTH = 8
_DEFAULT_EXIT_TIMEOUT = 2.0

# -- facade state (module globals: the hot path reads them without indirection) ---------------

_threshold: int = INFO
_backends: tuple[LogBackend, ...] = ()
_redactor: Callable[[Any], Any] | None = _default_redact
_service: str = "python"
_environment: str = "development"
_pid: int = os.getpid()
_exit_timeout: float = _DEFAULT_EXIT_TIMEOUT
_config_lock = threading.RLock()
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "radiosonde_log_context", default=MappingProxyType({})
)
_guard = _report.guard
_internal_errors = [0]
# The Datadog backend made from the settings (ENABLE_DATADOG), and what it was made from.
_settings_datadog: LogBackend | None = None
_settings_datadog_key: tuple[str, str, str] | None = None


# The constant enrichment: the first keys of every record (copied from this template), and
# their JSON, encoded once for the JSON writers' fast path. Rebuilt when one of them changes.
_template: dict[str, Any] = {}
_static_json: str = ""


def _encode_static() -> None:
    global _static_json, _template
    constant = {"service": _service, "environment": _environment, "pid": _pid}
    _template = {"timestamp": "", **constant}
    _static_json = dumps(constant)[1:-1]


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()
    _encode_static()


os.register_at_fork(after_in_child=_refresh_pid)

# -- timestamps --------------------------------------------------------------------------------

# (second, "YYYY-MM-DDTHH:MM:SS") of the last formatted second: strftime once a second, not per
# record. One tuple, replaced whole, so threads never see a torn pair.
_second_cache: tuple[int, str] = (-1, "")


def _rfc3339(ns: int) -> str:
    global _second_cache
    second, rest = divmod(ns, 1_000_000_000)
    cached = _second_cache
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _second_cache = cached
    return f"{cached[1]}.{rest // 1000:06d}Z"


# -- message redaction -------------------------------------------------------------------------

# "password=hunter2", "token: abc", 'secret="x y"' in free text; the key decides (deny-list).
# An Authorization-style value ("Basic dXNlcjpwYXNz") is masked whole, scheme and credentials.
_KV_IN_TEXT = re.compile(
    r"(?P<key>[A-Za-z_][\w.-]{0,63})(?P<sep>\s*[=:]\s*)"
    r"(?P<value>(?i:basic|bearer|digest|token|negotiate|ntlm|apikey)\s+[^\s,;&]+"
    r"|\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
_clean_messages: set[str] = set()
_CLEAN_LIMIT = 4096
_CLEAN_MAX_LENGTH = 256


def _mask_pair(match: re.Match[str]) -> str:
    if is_sensitive_key(match.group("key")):
        return f"{match.group('key')}{match.group('sep')}{REDACTED}"
    return match.group(0)


def _mask_pairs(text: str) -> str:
    if "=" in text or ":" in text:
        return _KV_IN_TEXT.sub(_mask_pair, text)
    return text


def _redact_message(message: str, redactor: Callable[[Any], Any]) -> str:
    if message in _clean_messages:
        return message
    result = redactor(message)
    if not isinstance(result, str):
        result = str(result)
    result = _mask_pairs(result)
    if result == message and len(message) <= _CLEAN_MAX_LENGTH:
        if len(_clean_messages) >= _CLEAN_LIMIT:
            _clean_messages.clear()
        _clean_messages.add(message)
    return result


# -- the dispatch ------------------------------------------------------------------------------


def _error_info(exc_info: object) -> dict[str, Any] | None:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[1] is None:
        return None
    kind, exc, tb = exc_info
    return {
        "kind": getattr(kind, "__qualname__", str(kind)),
        "message": str(exc),
        "stack": "".join(traceback.format_exception(kind, exc, tb)),
    }


def _emit(
    level: str,
    message: object,
    metadata: object,
    fields: dict[str, Any] | None,
    bound: Mapping[str, Any] | None,
    *,
    time_ns: int | None = None,
) -> None:
    """Build the record and hand it to every backend. Never raises."""
    guard = _guard
    depth: int = getattr(guard, "dispatching", 0)
    if depth >= _MAX_DEPTH:
        _report.count("dropped_reentrant")
        return
    guard.dispatching = depth + 1
    try:
        now = time.time_ns() if time_ns is None else time_ns
        context = _context.get()
        if context or bound or metadata is not None:
            user: dict[str, Any] = {}
            if context:
                user.update(context)
            if bound:
                user.update(bound)
            if metadata is not None:
                if isinstance(metadata, Mapping):
                    user.update(metadata)
                else:  # log.info("msg", "not a dict"): keep it rather than lose it
                    user["metadata"] = metadata
            if fields:
                user.update(fields)
        else:
            # The keyword-arguments dict is a fresh one per call: ours to use as it is.
            user = fields if fields is not None else {}
        if "exc_info" in user:
            error = _error_info(user.pop("exc_info"))
            if error is not None:
                user["error"] = error
        text = message if type(message) is str else str(message)
        redactor = _redactor
        if redactor is not None:
            # Only the caller's part: the enrichment is ours and holds no secret (and the
            # timestamp, unique per record, would defeat the redactor's cache of clean strings).
            if user:
                user = redactor(user)
                error = user.get("error")
                if type(error) is dict:  # exception texts are free text, like messages
                    for key in ("message", "stack"):
                        if type(error.get(key)) is str:
                            error[key] = _mask_pairs(error[key])
            text = _redact_message(text, redactor)
        timestamp = _rfc3339(now)
        record = Record(_template)
        record["timestamp"] = timestamp
        span_id = current_span_context()
        if span_id is not None:
            record["span_id"] = span_id
        if user:
            record.update(user)
        record.timestamp = timestamp
        record.static_json = _static_json
        record.span_id = span_id if type(span_id) is int else None
        record.fields = user if _RESERVED_KEYS.isdisjoint(user) else None
        if span_id is not None and record.span_id is None:
            record.fields = None
        for backend in _backends:
            try:
                backend.log(level, text, record)
            except Exception as exc:
                _report.report_failure(backend, exc)
    except Exception:
        # A bug of ours or an unprintable message: counted, never raised into the caller.
        _internal_errors[0] += 1
    finally:
        guard.dispatching = depth


def debug(message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at debug level. ``metadata`` (a dict) and ``fields`` are merged into the record."""
    if _threshold > DEBUG:
        return
    _emit("debug", message, metadata, fields, None)


def info(message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at info level. ``metadata`` (a dict) and ``fields`` are merged into the record."""
    if _threshold > INFO:
        return
    _emit("info", message, metadata, fields, None)


def warning(message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at warning level. ``metadata`` (a dict) and ``fields`` are merged into the record."""
    if _threshold > WARNING:
        return
    _emit("warning", message, metadata, fields, None)


def error(message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at error level; ``exc_info=True`` (or an exception) adds the ``error`` field."""
    if _threshold > ERROR:
        return
    _emit("error", message, metadata, fields, None)


def critical(message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at critical level. ``metadata`` (a dict) and ``fields`` are merged into the record."""
    if _threshold > CRITICAL:
        return
    _emit("critical", message, metadata, fields, None)


def exception(message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at error level with the exception being handled (call it in an ``except`` block).

    The record gets ``error``: ``{"kind": "ValueError", "message": "...", "stack": "Traceback…"}``.
    """
    if _threshold > ERROR:
        return
    fields.setdefault("exc_info", True)
    _emit("error", message, metadata, fields, None)


def log(level: str | int, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
    """Log at ``level`` (a name or a number, as :func:`set_level` accepts; never raises)."""
    try:
        number, name = _parse_level(level)
    except ValueError:
        number, name = ERROR, "error"
        fields.setdefault("invalid_level", repr(level))
    if _threshold > number:
        return
    _emit(name, message, metadata, fields, None)


# -- levels ------------------------------------------------------------------------------------


def _parse_level(level: str | int) -> tuple[int, str]:
    if isinstance(level, int) and not isinstance(level, bool):
        if level <= DEBUG:
            return DEBUG, "debug"
        for number in (INFO, WARNING, ERROR):
            if level <= number:
                return number, _NAMES_BY_NUMBER[number]
        return CRITICAL, "critical"
    if isinstance(level, str):
        name = level.strip().lower()
        if name.isdigit():
            return _parse_level(int(name))
        name = _ALIASES.get(name, name)
        if name in LEVELS:
            return LEVELS[name], name
    raise ValueError(
        f"invalid log level {level!r}: use one of {', '.join(LEVELS)} (LOG_LEVEL takes the same)"
    )


def set_level(level: str | int) -> None:
    """Set the threshold: ``"debug"``, ``"info"``, ``"warning"``, ``"error"``, ``"critical"``
    (any case; ``"warn"`` too) or a :mod:`logging` number. Raises ``ValueError`` otherwise."""
    global _threshold
    _threshold = _parse_level(level)[0]


def get_level() -> str:
    """The current threshold's name."""
    return _NAMES_BY_NUMBER[_threshold]


def is_enabled_for(level: str | int) -> bool:
    """True when a record at ``level`` would be logged (to skip building costly metadata)."""
    return _parse_level(level)[0] >= _threshold


# -- bound loggers and context -----------------------------------------------------------------


class BoundLogger:
    """A logger that adds its bound fields to every record (see :func:`bind`).

    Immutable: :meth:`bind` returns a new logger with more fields, :meth:`unbind` one with
    fewer. It follows the facade's level, backends and redaction as they change.
    """

    __slots__ = ("_bound",)

    def __init__(self, bound: Mapping[str, Any] | None = None) -> None:
        self._bound: Mapping[str, Any] = MappingProxyType(dict(bound or {}))

    @property
    def context(self) -> dict[str, Any]:
        """A copy of the bound fields."""
        return dict(self._bound)

    def bind(self, **fields: Any) -> BoundLogger:
        """A new logger with these fields added (replacing same-named ones)."""
        return BoundLogger({**self._bound, **fields})

    def unbind(self, *keys: str) -> BoundLogger:
        """A new logger without these fields."""
        return BoundLogger({k: v for k, v in self._bound.items() if k not in keys})

    def debug(self, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
        """Log at debug level with the bound fields."""
        if _threshold > DEBUG:
            return
        _emit("debug", message, metadata, fields, self._bound)

    def info(self, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
        """Log at info level with the bound fields."""
        if _threshold > INFO:
            return
        _emit("info", message, metadata, fields, self._bound)

    def warning(self, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
        """Log at warning level with the bound fields."""
        if _threshold > WARNING:
            return
        _emit("warning", message, metadata, fields, self._bound)

    def error(self, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
        """Log at error level with the bound fields."""
        if _threshold > ERROR:
            return
        _emit("error", message, metadata, fields, self._bound)

    def critical(self, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
        """Log at critical level with the bound fields."""
        if _threshold > CRITICAL:
            return
        _emit("critical", message, metadata, fields, self._bound)

    def exception(self, message: object, metadata: Metadata = None, /, **fields: Any) -> None:
        """Log at error level with the bound fields and the exception being handled."""
        if _threshold > ERROR:
            return
        fields.setdefault("exc_info", True)
        _emit("error", message, metadata, fields, self._bound)

    def log(
        self, level: str | int, message: object, metadata: Metadata = None, /, **fields: Any
    ) -> None:
        """Log at ``level`` with the bound fields."""
        try:
            number, name = _parse_level(level)
        except ValueError:
            number, name = ERROR, "error"
            fields.setdefault("invalid_level", repr(level))
        if _threshold > number:
            return
        _emit(name, message, metadata, fields, self._bound)

    def __repr__(self) -> str:
        return f"BoundLogger({dict(self._bound)!r})"


def bind(**fields: Any) -> BoundLogger:
    """A logger that adds ``fields`` to every record it logs (the facade is not changed)."""
    return BoundLogger(fields)


class _Contextualize:
    __slots__ = ("_fields", "_tokens")

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields
        self._tokens: list[contextvars.Token[Mapping[str, Any]]] = []

    def __enter__(self) -> None:
        merged = MappingProxyType({**_context.get(), **self._fields})
        self._tokens.append(_context.set(merged))

    def __exit__(self, *exc: object) -> None:
        token = self._tokens.pop()
        # Left in another context than entered: nothing of ours to undo there.
        with contextlib.suppress(ValueError):
            _context.reset(token)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)


def contextualize(**fields: Any) -> _Contextualize:
    """Add ``fields`` to every record logged inside the ``with`` (or ``async with``) block.

    Kept in a :class:`contextvars.ContextVar`: asyncio tasks created inside the block carry it
    (each task has its own copy), and so does ``asyncio.to_thread``. A plain thread starts
    without it: run the thread's function in ``contextvars.copy_context().run(fn)``, or pass
    :func:`bound_context` along and re-enter it with ``contextualize(**ctx)``.
    """
    return _Contextualize(fields)


def bound_context() -> dict[str, Any]:
    """A copy of the context fields in force here (from :func:`contextualize`)."""
    return dict(_context.get())


# -- configuration -----------------------------------------------------------------------------


def _check_backends(candidates: Iterable[object]) -> tuple[LogBackend, ...]:
    checked: list[LogBackend] = []
    for backend in candidates:
        if not isinstance(backend, LogBackend):
            missing = [
                m for m in ("log", "flush", "close") if not callable(getattr(backend, m, None))
            ]
            raise TypeError(
                f"{backend!r} is not a log backend: it lacks {', '.join(missing)}"
                " (see radiosonde.logging_backends.LogBackend)"
            )
        checked.append(backend)
    return tuple(checked)


def _retire(backend: LogBackend, timeout: float) -> None:
    try:
        backend.flush(timeout)
    except Exception as exc:
        _report.report_failure(backend, exc)
    try:
        backend.close()
    except Exception as exc:
        _report.report_failure(backend, exc)


def configure(
    *,
    level: str | int | None = None,
    backends: Iterable[LogBackend] | None = None,
    service: str | None = None,
    environment: str | None = None,
    redact: bool | Callable[[Any], Any] | None = None,
    exit_timeout: float | None = None,
) -> None:
    """Change the facade; arguments left out keep their current value.

    * ``level``: as :func:`set_level`.
    * ``backends``: the new list (replacing the current one). Backends dropped from the list
      are flushed (1 s at most) and closed.
    * ``service`` / ``environment``: the enrichment values (default from the settings:
      ``RADIOSONDE_SERVICE`` / ``RADIOSONDE_ENVIRONMENT``, see :mod:`radiosonde.config`).
    * ``redact``: ``True`` (the default policy, :func:`radiosonde.redact.redact`), ``False``
      (no redaction: only for sinks you trust with secrets) or a callable
      ``redactor(value) -> redacted copy`` applied to the metadata dict and to the message.
    * ``exit_timeout``: how long flushing at interpreter exit may take, in seconds.

    Invalid values raise ``ValueError``/``TypeError`` here, before anything changes.
    """
    global _backends, _service, _environment, _redactor, _exit_timeout, _threshold
    new_threshold = _parse_level(level)[0] if level is not None else None
    new_backends = _check_backends(backends) if backends is not None else None
    if redact is not None and not (isinstance(redact, bool) or callable(redact)):
        raise TypeError(f"redact must be True, False or a callable, got {redact!r}")
    if exit_timeout is not None and not exit_timeout >= 0:
        raise ValueError(f"exit_timeout must be >= 0 seconds, got {exit_timeout!r}")
    for label, value in (("service", service), ("environment", environment)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{label} must be a string, got {value!r}")
    retired: list[LogBackend] = []
    with _config_lock:
        if new_threshold is not None:
            _threshold = new_threshold
        if new_backends is not None:
            retired = [b for b in _backends if not any(b is n for n in new_backends)]
            _backends = new_backends
        if service is not None:
            _service = service
        if environment is not None:
            _environment = environment
        if redact is not None:
            if isinstance(redact, bool):
                _redactor = _default_redact if redact else None
            else:
                _redactor = redact
        if exit_timeout is not None:
            _exit_timeout = exit_timeout
        _encode_static()
    for backend in retired:
        _retire(backend, 1.0)


def configure_from_settings(settings: _config.Settings | None = None) -> None:
    """Apply the settings (:func:`radiosonde.config.get_settings` unless ``settings`` is given).

    Sets the level (``LOG_LEVEL``), service and environment, and keeps one Datadog backend in
    the list while ``ENABLE_DATADOG`` is true (``DATADOG_API_KEY``, ``DATADOG_SITE``); other
    backends are left as they are. Runs when this module is imported and again whenever
    :func:`radiosonde.config.configure` changes the settings. Invalid settings raise
    :class:`radiosonde.config.ConfigurationError` saying what to fix.
    """
    global _backends, _settings_datadog, _settings_datadog_key
    if settings is None:
        settings = _config.get_settings()
    try:
        configure(
            level=settings.log_level,
            service=settings.service,
            environment=settings.environment,
        )
    except ValueError as exc:
        raise _config.ConfigurationError(str(exc)) from None
    wanted = (
        (settings.datadog_api_key or "", settings.datadog_site, settings.service)
        if settings.enable_datadog
        else None
    )
    if wanted == _settings_datadog_key:
        return
    new: LogBackend | None = None
    if wanted is not None:
        from radiosonde.logging_backends.datadog import DatadogBackend

        try:
            new = DatadogBackend(wanted[0], site=wanted[1], service=wanted[2])
        except ValueError as exc:
            raise _config.ConfigurationError(str(exc)) from None
    with _config_lock:
        old = _settings_datadog
        kept = tuple(b for b in _backends if b is not old)
        _backends = (*kept, new) if new is not None else kept
        _settings_datadog, _settings_datadog_key = new, wanted
    if old is not None:
        _retire(old, 1.0)


def _on_settings_changed(
    event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any], _: Any
) -> None:
    settings = metadata.get("settings")
    if isinstance(settings, _config.Settings):
        configure_from_settings(settings)


_SETTINGS_HANDLER_ID = "radiosonde.log.settings"


def _follow_settings() -> None:
    detach(_SETTINGS_HANDLER_ID)
    attach(_SETTINGS_HANDLER_ID, _config.CHANGED_EVENT, _on_settings_changed, on_error="keep")


def add_backend(backend: LogBackend) -> None:
    """Add one backend to those in use (a ``TypeError`` if it lacks a protocol method)."""
    global _backends
    (checked,) = _check_backends([backend])
    with _config_lock:
        if not any(b is checked for b in _backends):
            _backends = (*_backends, checked)


def remove_backend(backend: LogBackend, *, timeout: float = 1.0) -> bool:
    """Stop using ``backend``: flush it (``timeout`` s at most), close it; True if it was in use."""
    global _backends
    with _config_lock:
        if not any(b is backend for b in _backends):
            return False
        _backends = tuple(b for b in _backends if b is not backend)
    _retire(backend, timeout)
    return True


def backends() -> list[LogBackend]:
    """The backends in use, in call order."""
    return list(_backends)


def flush(timeout: float = 2.0) -> None:
    """Flush every backend, all within ``timeout`` seconds in total."""
    deadline = time.monotonic() + timeout
    for backend in _backends:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            backend.flush(remaining)
        except Exception as exc:
            _report.report_failure(backend, exc)


def shutdown(timeout: float | None = None) -> None:
    """Flush (``timeout`` s, default ``exit_timeout``) and close every backend; the facade then
    has none (records are dropped until :func:`configure` or :func:`add_backend`).

    Registered with :mod:`atexit`, so pending records are sent at interpreter exit.
    """
    global _backends
    flush(_exit_timeout if timeout is None else timeout)
    with _config_lock:
        retired, _backends = _backends, ()
    for backend in retired:
        try:
            backend.close()
        except Exception as exc:
            _report.report_failure(backend, exc)


def stats() -> dict[str, int]:
    """Counters since start-up: ``backend_failures``, ``dropped`` (by queued backends),
    ``bridge_skipped`` (stdlib records from inside the logging machinery, not forwarded),
    ``dropped_reentrant`` (log calls nested too deep in backends/handlers) and
    ``internal_errors``."""
    out = _report.counters()
    out.setdefault("dropped_reentrant", 0)
    out["internal_errors"] = _internal_errors[0]
    return out


# -- the stdlib bridge -------------------------------------------------------------------------

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _stdlib_level_name(levelno: int) -> str:
    if levelno >= CRITICAL:
        return "critical"
    if levelno >= ERROR:
        return "error"
    if levelno >= WARNING:
        return "warning"
    if levelno >= INFO:
        return "info"
    return "debug"


class LoggingBridge(logging.Handler):
    """A :class:`logging.Handler` that sends stdlib records through the facade.

    Each record keeps its logger name (``logger``), its ``extra=`` fields, its exception
    (``error``) and its creation time; it is then enriched, redacted and filtered by the
    facade's level like any other record. Records logged from inside the logging machinery (a
    backend, a failure report, a sender thread) are not forwarded, so the bridge can never feed
    a backend its own complaints. Install it with :func:`capture_stdlib`.
    """

    def __init__(self, level: int | str = logging.NOTSET) -> None:
        super().__init__(_parse_level(level)[0] if level not in (0, "notset", "NOTSET") else 0)
        self.set_name("radiosonde-bridge")

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the backends have their own, and a lock here would serialise every
        # thread's logging on it.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record (never raises)."""
        if _report.in_machinery():
            _report.count("bridge_skipped")
            return
        try:
            if record.levelno < _threshold:
                return
            try:
                message = record.getMessage()
            except Exception:  # bad %-args: keep what we can
                message = f"{record.msg!s} {record.args!r}"
            metadata: dict[str, Any] = {"logger": record.name}
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRS and not key.startswith("_"):
                    metadata[key] = value
            if record.stack_info:
                metadata["stack_info"] = record.stack_info
            exc_info = record.exc_info
            _emit(
                _stdlib_level_name(record.levelno),
                message,
                metadata,
                {"exc_info": exc_info} if exc_info and exc_info[1] is not None else None,
                None,
                time_ns=int(record.created * 1_000_000_000),
            )
        except Exception as exc:
            _report.report_failure(self, exc)


_bridges: dict[str, LoggingBridge] = {}


def capture_stdlib(level: str | int | None = None, *, logger: str | None = None) -> LoggingBridge:
    """Route records of the :mod:`logging` logger ``logger`` (the root by default, so every
    library's) into the facade's backends; returns the installed :class:`LoggingBridge`.

    ``level``: the lowest level forwarded. When given, the logger's own level is lowered to it
    if needed (the root logger is at WARNING by default, which would stop INFO records before
    any handler sees them). Calling again updates the level; the bridge is installed once.
    Other handlers on the logger keep working: remove them if you want records once.
    """
    target = logging.getLogger(logger)
    key = target.name
    with _config_lock:
        bridge = _bridges.get(key)
        if bridge is None or bridge not in target.handlers:
            bridge = LoggingBridge()
            target.addHandler(bridge)
            _bridges[key] = bridge
        if level is not None:
            number = _parse_level(level)[0]
            bridge.setLevel(number)
            if target.getEffectiveLevel() > number:
                target.setLevel(number)
    return bridge


def release_stdlib(logger: str | None = None) -> bool:
    """Remove the bridge :func:`capture_stdlib` installed on ``logger``; True if there was one."""
    target = logging.getLogger(logger)
    with _config_lock:
        bridge = _bridges.pop(target.name, None)
        if bridge is None:
            return False
        target.removeHandler(bridge)
    return True


# -- start-up and exit -------------------------------------------------------------------------


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        shutdown(_exit_timeout)


def _reset_for_tests() -> None:
    """Back to the settings' configuration with fresh counters (tests only)."""
    global _second_cache, _backends, _settings_datadog, _settings_datadog_key
    for name in list(_bridges):
        release_stdlib(None if name == "root" else name)
    with _config_lock:
        current, _backends = _backends, (ConsoleBackend(),)
        _settings_datadog = _settings_datadog_key = None
    for backend in current:
        _retire(backend, 0.0)
    configure(redact=True, exit_timeout=_DEFAULT_EXIT_TIMEOUT)
    configure_from_settings()
    _follow_settings()
    _report.reset_counters()
    _internal_errors[0] = 0
    _clean_messages.clear()
    _second_cache = (-1, "")


_backends = (ConsoleBackend(),)
configure_from_settings()
_follow_settings()
atexit.register(_at_exit)
