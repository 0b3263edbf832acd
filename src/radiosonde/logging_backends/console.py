"""The console backend: readable coloured lines on a terminal, JSON lines anywhere else.

Writes go straight to the stream, in the caller's thread, under a lock (one line per record,
never interleaved); a stream that is a terminal is written in the human format, anything else
(a pipe, a file, a container's log collector) gets one JSON object per line.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Literal, TextIO

from radiosonde.logging_backends import _report
from radiosonde.logging_backends._json import dumps
from radiosonde.logging_backends._record import json_line

__all__ = ["ConsoleBackend"]

Format = Literal["auto", "json", "human"]

_COLOURS = {
    "debug": "\x1b[2m",  # dim
    "info": "\x1b[32m",  # green
    "warning": "\x1b[33m",  # yellow
    "error": "\x1b[31m",  # red
    "critical": "\x1b[1;41m",  # bold on red
}
_RESET = "\x1b[0m"
_KEY = "\x1b[36m"  # cyan
# Enrichment that is the same on every line: left out of the human format to keep it readable.
_HUMAN_SKIP = frozenset({"timestamp", "service", "environment", "pid"})


class ConsoleBackend:
    """Write each record as one line to ``stream`` (``sys.stderr`` by default).

    ``stream=None`` means "whatever ``sys.stderr`` is at the time of the write", so redirecting
    ``sys.stderr`` (or pytest's capture) takes effect. ``format``: ``"auto"`` (human on a
    terminal, JSON otherwise), ``"json"`` or ``"human"``. ``colour`` (human format only)
    defaults to on for a terminal. ``flush_each`` flushes the stream after every line, like
    :class:`logging.StreamHandler`.

    JSON lines look like ``{"timestamp":"…","level":"info","message":"…","service":"…",…}``;
    human lines like ``12:00:01.123 INFO  User logged in  user_id=1 span_id=7``.
    """

    name = "console"

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        format: Format = "auto",
        colour: bool | None = None,
        flush_each: bool = True,
    ) -> None:
        if format not in ("auto", "json", "human"):
            raise ValueError(f"format must be 'auto', 'json' or 'human', got {format!r}")
        self._stream = stream
        self.format: Format = format
        self.colour = colour
        self.flush_each = flush_each
        self._lock = threading.Lock()
        _report.renew_lock_after_fork(self)
        # (stream, human?, colour?) of the last stream written to: isatty() is a system call.
        self._decided: tuple[object, bool, bool] | None = None

    @property
    def stream(self) -> TextIO:
        """The stream written to now."""
        return self._stream if self._stream is not None else sys.stderr

    def _mode(self, stream: TextIO) -> tuple[bool, bool]:
        decided = self._decided
        if decided is not None and decided[0] is stream:
            return decided[1], decided[2]
        try:
            tty = bool(stream.isatty())
        except Exception:
            tty = False
        human = self.format == "human" or (self.format == "auto" and tty)
        colour = human and (self.colour if self.colour is not None else tty)
        self._decided = (stream, human, colour)
        return human, colour

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        """Write one line; raises only if the stream does (the facade counts that)."""
        stream = self.stream
        if stream is None:  # sys.stderr can be None under pythonw or after interpreter teardown
            return
        human, colour = self._mode(stream)
        if human:
            line = _human_line(level, message, metadata, colour)
        else:
            line = json_line(level, message, metadata)
        with self._lock:
            stream.write(line + "\n")
            if self.flush_each:
                stream.flush()

    def flush(self, timeout: float = 0.0) -> None:
        """Flush the stream."""
        stream = self.stream
        if stream is not None:
            with self._lock:
                stream.flush()

    def close(self) -> None:
        """Flush; the stream is the caller's and stays open."""
        with contextlib.suppress(Exception):
            self.flush()

    def __repr__(self) -> str:
        return f"ConsoleBackend(format={self.format!r})"


def _human_value(value: object) -> str:
    if isinstance(value, str):
        return value if value and " " not in value and "=" not in value else repr(value)
    if isinstance(value, dict | list | tuple):
        return dumps(value)
    return str(value)


def _human_line(level: str, message: str, metadata: dict[str, Any], colour: bool) -> str:
    timestamp = metadata.get("timestamp")
    clock = timestamp[11:23] if isinstance(timestamp, str) and len(timestamp) >= 23 else ""
    label = level.upper().ljust(8)
    parts = []
    for key, value in metadata.items():
        if key in _HUMAN_SKIP:
            continue
        if key == "error" and isinstance(value, dict) and "stack" in value:
            continue  # printed below the line
        text = _human_value(value)
        parts.append(f"{_KEY}{key}{_RESET}={text}" if colour else f"{key}={text}")
    fields = "  " + " ".join(parts) if parts else ""
    if colour:
        line = f"\x1b[2m{clock}{_RESET} {_COLOURS.get(level, '')}{label}{_RESET}{message}{fields}"
    else:
        line = f"{clock} {label}{message}{fields}"
    error = metadata.get("error")
    if isinstance(error, dict) and isinstance(error.get("stack"), str):
        line += "\n" + error["stack"].rstrip("\n")
    return line
