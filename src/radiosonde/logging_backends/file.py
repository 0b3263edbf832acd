"""JSON lines in a file, rotated by size.

``JsonFileBackend("app.log", max_bytes=10_000_000, backup_count=5)`` writes one JSON object per
line to ``app.log``; when a line would take the file past ``max_bytes``, ``app.log`` becomes
``app.log.1`` (``app.log.1`` becomes ``app.log.2``… and the oldest beyond ``backup_count`` is
deleted) and a fresh ``app.log`` is started — the same scheme as
:class:`logging.handlers.RotatingFileHandler`, so log shippers that follow it work unchanged.

Writes are direct (appending a line is fast) and flushed to the OS after each record, so a crash
loses nothing already logged. One process per file: rotation is not coordinated between
processes writing the same file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

from radiosonde.logging_backends import _report
from radiosonde.logging_backends._record import json_line

__all__ = ["JsonFileBackend"]


class JsonFileBackend:
    """Append records as JSON lines to ``path``; rotate at ``max_bytes`` keeping ``backup_count``.

    ``max_bytes=0`` never rotates. ``backup_count=0`` with rotation truncates: the full file is
    deleted and started again. The directory must exist and the file be writable: both are
    checked here, so a wrong path fails at start-up, not at the first record.
    """

    name = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backup_count: int = 5,
        encoding: str = "utf-8",
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0: never rotate), got {max_bytes!r}")
        if backup_count < 0:
            raise ValueError(f"backup_count must be >= 0, got {backup_count!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.encoding = encoding
        self._lock = threading.Lock()
        _report.renew_lock_after_fork(self)
        self._file: IO[bytes] | None = None
        self._size = 0
        self._closed = False
        if not self.path.parent.is_dir():
            raise ValueError(
                f"log file directory {str(self.path.parent)!r} does not exist: create it or"
                " choose another path for JsonFileBackend"
            )
        self._open()

    def _open(self) -> IO[bytes]:
        handle = open(self.path, "ab")  # noqa: SIM115  # kept open across records, closed in close()
        handle.seek(0, os.SEEK_END)
        self._size = handle.tell()
        self._file = handle
        return handle

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.backup_count > 0:
            for index in range(self.backup_count - 1, 0, -1):
                source = self.path.with_name(f"{self.path.name}.{index}")
                if source.exists():
                    os.replace(source, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        """Append one line (rotating first when it would not fit)."""
        data = (json_line(level, message, metadata) + "\n").encode(self.encoding, "replace")
        with self._lock:
            if self._closed:
                return
            handle = self._file
            if handle is None:
                handle = self._open()
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
                handle = self._open()
            handle.write(data)
            handle.flush()
            self._size += len(data)

    def flush(self, timeout: float = 0.0) -> None:
        """Flush to the OS (records are flushed as written; this is for the protocol)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Close the file; later records are ignored."""
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None

    def __repr__(self) -> str:
        return f"JsonFileBackend({str(self.path)!r}, max_bytes={self.max_bytes})"
