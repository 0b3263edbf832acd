"""The log facade next to stdlib ``logging`` and structlog, each writing JSON lines.

Targets (issue 4), as ratios measured in the same run:

* a ``log.info`` call with 3 fields to the JSON console backend <= 0.5x the same call through
  stdlib ``logging`` with a JSON formatter, and <= 1x structlog with its ``JSONRenderer``;
* a filtered-out ``log.debug`` call <= 3x a no-op call with the same arguments.

Every writer writes to ``/dev/null`` and flushes each record (as ``logging.StreamHandler``
does), so the figures hold the cost of the write but not of a disk or a terminal. radiosonde
runs with its default configuration: enrichment (timestamp, service, environment, pid) and
redaction of the fields and message. Peers are imported here only, never in ``src/``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from bench._harness import Case, CheckResult, Group, require
from radiosonde import log
from radiosonde.logging_backends import ConsoleBackend

logs = Group("logging", "the log facade next to stdlib logging and structlog", baseline="noop call")
GROUPS = [logs]


def _null_stream() -> io.TextIOWrapper:
    return open(os.devnull, "w", encoding="utf-8")  # closed by the case cleanup


def _facade(level: str) -> Case:
    """Point the facade at a JSON console on /dev/null for the run; restore it afterwards.

    Every facade case gets the same configuration (cases are set up together, then timed).
    """
    saved_backends, saved_level = log.backends(), log.get_level()
    stream = _null_stream()
    log.configure(backends=[ConsoleBackend(stream, format="json")], level=level)

    def restore() -> None:
        log.configure(backends=saved_backends, level=saved_level)
        stream.close()

    return Case("", {"log": log}, cleanup=restore)


# -- radiosonde ----------------------------------------------------------------------------


@logs.case("noop call")
def _noop() -> Case:
    def noop(message: Any, **fields: Any) -> None:
        pass

    return Case("noop('Cache miss', key='user:1')", {"noop": noop})


@logs.case("log.debug, filtered out", peer="stdlib logger.debug, filtered out")
def _debug_filtered() -> Case:
    case = _facade("info")
    case.stmt = "log.debug('Cache miss', key='user:1')"
    return case


@logs.case("log.info, 3 fields, JSON console", peer="stdlib logging, JSON formatter")
def _info_console() -> Case:
    case = _facade("info")
    case.stmt = "log.info('User logged in', user_id=42, route='/login', status=200)"
    return case


@logs.case("log.info, 3 fields, bound logger", peer="structlog, JSONRenderer")
def _info_bound() -> Case:
    case = _facade("info")
    case.globals["bound"] = log.bind(user_id=42)
    case.stmt = "bound.info('User logged in', route='/login', status=200)"
    return case


# -- peers ---------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    """The usual hand-rolled JSON formatter: time, level, logger, message, pid and extras."""

    _standard = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "taskName",
    }

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in self._standard:
                payload[key] = value
        return json.dumps(payload, default=str)


def _stdlib_case(name: str, stmt: str) -> Case:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = _null_stream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter())
    logger.addHandler(handler)

    def cleanup() -> None:
        logger.removeHandler(handler)
        stream.close()

    return Case(stmt, {"logger": logger}, cleanup=cleanup)


@logs.case("stdlib logger.debug, filtered out")
def _stdlib_debug() -> Case:
    return _stdlib_case(
        "bench.logging.filtered", "logger.debug('Cache miss', extra={'key': 'user:1'})"
    )


@logs.case("stdlib logging, JSON formatter")
def _stdlib_json() -> Case:
    return _stdlib_case(
        "bench.logging.json",
        "logger.info('User logged in', extra={'user_id': 42, 'route': '/login', 'status': 200})",
    )


@logs.case("structlog, JSONRenderer")
def _structlog_json() -> Case:
    structlog = require("structlog", "structlog")
    stream = _null_stream()
    logger = structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return Case(
        "logger.info('User logged in', user_id=42, route='/login', status=200)",
        {"logger": logger},
        cleanup=stream.close,
    )


logs.target("log.info, 3 fields, JSON console", "stdlib logging, JSON formatter", 0.5)
logs.target("log.info, 3 fields, JSON console", "structlog, JSONRenderer", 1.0)
logs.target("log.debug, filtered out", "noop call", 3.0)


# -- what the timed case writes ------------------------------------------------------------


@logs.check("the timed JSON console call writes one complete, enriched, redacted JSON line")
def _writes_what_it_should() -> CheckResult:
    stream = io.StringIO()
    saved_backends, saved_level = log.backends(), log.get_level()
    log.configure(backends=[ConsoleBackend(stream, format="json")], level="info")
    try:
        log.info("User logged in", user_id=42, route="/login", status=200, password="hunter2")
    finally:
        log.configure(backends=saved_backends, level=saved_level)
    try:
        line = json.loads(stream.getvalue())
    except ValueError as exc:
        return CheckResult(False, f"not one JSON line: {exc}: {stream.getvalue()!r}")
    wanted = {"timestamp", "level", "message", "service", "environment", "pid", "user_id"}
    missing = sorted(wanted - set(line))
    ok = not missing and line.get("password") == "[REDACTED]"
    return CheckResult(ok, f"keys {sorted(line)}; password {line.get('password')!r}")
