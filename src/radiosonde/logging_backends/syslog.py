"""The syslog backend: RFC 5424 messages with STRUCTURED-DATA over UDP, TCP or a Unix socket.

Each record becomes one message (here on two lines)::

    <14>1 2024-05-01T12:00:00.123456Z web-1 checkout 4242 -
    [radiosonde@32473 environment="prod" user_id="1"] User logged in

* PRI from the facility (``user`` by default) and the level (debug 7, info 6, warning 4,
  error 3, critical 2);
* TIMESTAMP the record's RFC 3339 UTC time, HOSTNAME the machine's name, APP-NAME the service
  (or ``app_name``), PROCID the process id, MSGID the stdlib logger name for bridged records;
* one SD-ELEMENT (``radiosonde@32473`` by default) with the metadata as parameters: strings
  as they are, other values as JSON, ``"``, ``\\`` and ``]`` escaped as RFC 5424 says;
  parameter names reduced to what SD-NAME allows (printable ASCII without ``= ]"`` and space,
  32 characters at most);
* the message as MSG.

Transports (``address``): ``"udp://host:514"``, ``"tcp://host:514"``, ``"unix:///dev/log"``, or
a path (Unix datagram socket) or a ``(host, port)`` tuple with ``transport="udp"|"tcp"``.

* UDP and Unix datagrams are sent from the caller's thread on a non-blocking socket: a full
  socket buffer or an absent receiver drops the record (counted, never blocks).
* TCP (octet-counting framing, RFC 6587) goes through a bounded queue and a background thread
  that connects, reconnects with backoff and sends in batches.

A message longer than ``max_message_size`` bytes (8192 by default, rsyslog's default limit)
has its MSG shortened; if the structured data alone is too long it is replaced by
``[radiosonde@32473 truncated="true"]``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from radiosonde.logging_backends import _report
from radiosonde.logging_backends._json import dumps
from radiosonde.logging_backends._queue import BackgroundQueue

__all__ = ["FACILITIES", "SEVERITIES", "SyslogBackend", "escape_param_value", "sd_name"]

Transport = Literal["udp", "tcp", "unix"]

FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
"""Syslog facility codes by name (RFC 5424 table 1)."""

SEVERITIES: dict[str, int] = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""Syslog severity of each radiosonde level."""

# Carried in the header: not repeated as SD parameters.
_HEADER_KEYS = frozenset({"timestamp", "pid", "logger"})
_SD_NAME_BAD = re.compile(r'[^\x21-\x7e]|[= \]"]')
_HEADER_BAD = re.compile(r"[^\x21-\x7e]")
_SD_ID_OK = re.compile(r"^[\x21-\x7e]{1,32}$")
_UDP_MAX = 65_507


def sd_name(name: str) -> str:
    """``name`` reduced to a valid RFC 5424 SD-NAME (bad characters become ``_``, max 32)."""
    cleaned = _SD_NAME_BAD.sub("_", name)[:32]
    return cleaned or "_"


def escape_param_value(value: str) -> str:
    """Escape ``\\``, ``"`` and ``]`` in a PARAM-VALUE, as RFC 5424 section 6.3.3 requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: object, limit: int) -> str:
    text = _HEADER_BAD.sub("_", str(value))[:limit]
    return text or "-"


def _param_text(value: object) -> str:
    return value if isinstance(value, str) else dumps(value)


class SyslogBackend:
    """Send records to a syslog daemon as RFC 5424 messages (see the module docstring).

    ``app_name`` defaults to the record's ``service``; ``hostname`` to this machine's name;
    ``facility`` is a name from :data:`FACILITIES` or its code; ``sd_id`` must be a valid SD-ID
    (``name@<private enterprise number>``). For TCP, ``max_queue`` bounds the records waiting
    for the sender thread and ``batch_size`` how many are written at once; a failed write is
    retried ``max_retries`` times on a new connection, ``backoff`` seconds apart, 4x longer
    each time (at most 5 s), then the batch is dropped and reported. Bad arguments raise
    ``ValueError`` here; a daemon that is down only drops records (counted and reported).
    """

    def __init__(
        self,
        address: str | tuple[str, int] = "/dev/log",
        *,
        transport: Transport | None = None,
        facility: str | int = "user",
        app_name: str | None = None,
        hostname: str | None = None,
        sd_id: str = "radiosonde@32473",
        max_message_size: int = 8192,
        max_queue: int = 10_000,
        batch_size: int = 100,
        timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.1,
        name: str = "syslog",
    ) -> None:
        self.name = name
        self.transport, self.address = _parse_address(address, transport)
        if isinstance(facility, str):
            if facility not in FACILITIES:
                raise ValueError(
                    f"unknown syslog facility {facility!r}; use one of {', '.join(FACILITIES)}"
                )
            facility = FACILITIES[facility]
        if not 0 <= facility <= 23:
            raise ValueError(f"syslog facility code must be 0..23, got {facility!r}")
        if not _SD_ID_OK.match(sd_id) or _SD_NAME_BAD.sub("", sd_id.replace("@", "")) != (
            sd_id.replace("@", "")
        ):
            raise ValueError(f"invalid RFC 5424 SD-ID {sd_id!r}; e.g. 'myapp@32473'")
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("max_retries and backoff must be >= 0, timeout > 0")
        if max_message_size < 480:
            raise ValueError(f"max_message_size must be >= 480 bytes, got {max_message_size!r}")
        self.facility = facility
        self.app_name = app_name
        self.hostname = _header_field(hostname or socket.gethostname(), 255)
        self.sd_id = sd_id
        limit = max_message_size
        if self.transport == "udp":
            limit = min(limit, _UDP_MAX)
        self.max_message_size = limit
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._app_cache: dict[str, str] = {}
        self._sock: socket.socket | None = None
        self._sockaddr: Any = None
        self._lock = threading.Lock()
        _report.renew_lock_after_fork(self)
        self._next_connect = 0.0
        self._queue: BackgroundQueue[bytes] | None = None
        if self.transport == "tcp":
            self._queue = BackgroundQueue(
                self,
                self._send_tcp,
                max_queue=max_queue,
                batch_size=batch_size,
                thread_name="radiosonde-syslog",
            )

    # -- formatting ---------------------------------------------------------------------------

    def format(self, level: str, message: str, metadata: dict[str, Any]) -> bytes:
        """The RFC 5424 message for one record, as bytes (no transport framing)."""
        pri = self.facility * 8 + SEVERITIES.get(level, 6)
        timestamp = metadata.get("timestamp")
        if not isinstance(timestamp, str) or not timestamp:
            timestamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        app_source = self.app_name or metadata.get("service") or "-"
        if not isinstance(app_source, str):
            app_source = str(app_source)
        app = self._app_cache.get(app_source)
        if app is None:
            app = _header_field(app_source, 48)
            if len(self._app_cache) < 64:
                self._app_cache[app_source] = app
        procid = _header_field(metadata.get("pid") or os.getpid(), 128)
        logger = metadata.get("logger")
        msgid = _header_field(logger, 32) if logger else "-"
        header = f"<{pri}>1 {_header_field(timestamp, 64)} {self.hostname} {app} {procid} {msgid} "
        params = [
            f'{sd_name(str(key))}="{escape_param_value(_param_text(value))}"'
            for key, value in metadata.items()
            if key not in _HEADER_KEYS
        ]
        sd = f"[{self.sd_id} {' '.join(params)}]" if params else "-"
        head = (header + sd).encode("utf-8", "replace")
        body = message.encode("utf-8", "replace")
        limit = self.max_message_size
        if len(head) + 1 + len(body) <= limit:
            return head + b" " + body if body else head
        if len(head) > limit // 2:
            head = (header + f'[{self.sd_id} truncated="true"]').encode("utf-8", "replace")
        room = max(0, limit - len(head) - 1)
        body = body[:room].decode("utf-8", "ignore").encode("utf-8")
        return head + b" " + body if body else head

    # -- the backend protocol ---------------------------------------------------------------

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        """Format and send (UDP/Unix) or queue (TCP) one record; never blocks."""
        data = self.format(level, message, metadata)
        if self._queue is not None:
            self._queue.put(str(len(data)).encode("ascii") + b" " + data)
        else:
            self._send_datagram(data)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` s) until queued TCP records are written; no-op otherwise."""
        if self._queue is not None:
            self._queue.flush(timeout)

    def close(self, timeout: float = 0.0) -> None:
        """Close the socket, after sending what is queued (TCP) for at most ``timeout`` s.

        As for the Datadog backend, the facade flushes first; ``close()`` does not wait.
        """
        if self._queue is not None:
            self._queue.close(timeout)
        with self._lock:
            self._disconnect()

    # -- transports ---------------------------------------------------------------------------

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _datagram_socket(self) -> socket.socket | None:
        sock = self._sock
        if sock is not None:
            return sock
        now = time.monotonic()
        if now < self._next_connect:
            return None
        # A missing /dev/log is retried once a second, not on every record.
        self._next_connect = now + 1.0
        if self.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.connect(str(self.address))
            except OSError:
                sock.close()
                raise
        else:
            assert isinstance(self.address, tuple)
            # Resolved once per socket: sendto() with a host name would resolve on every record.
            family, _, _, _, sockaddr = socket.getaddrinfo(
                self.address[0], self.address[1], type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sockaddr = sockaddr
        sock.setblocking(False)
        self._sock = sock
        return sock

    def _send_datagram(self, data: bytes) -> None:
        with self._lock:
            try:
                sock = self._datagram_socket()
                if sock is None:
                    _report.report_dropped(self, 1, "not_connected")
                    return
                if self.transport == "unix":
                    sock.send(data)
                else:
                    sock.sendto(data, self._sockaddr)
            except BlockingIOError:
                _report.report_dropped(self, 1, "would_block")
            except OSError as exc:
                self._disconnect()
                _report.report_dropped(self, 1, "send_failed", error=repr(exc))

    def _connect_tcp(self) -> socket.socket:
        assert isinstance(self.address, tuple)
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.settimeout(self.timeout)
        return sock

    def _send_tcp(self, frames: list[bytes]) -> None:
        payload = b"".join(frames)
        queue = self._queue
        assert queue is not None
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            try:
                if self._sock is None:
                    self._sock = self._connect_tcp()
                self._sock.sendall(payload)
                return
            except OSError as exc:
                self._disconnect()
                if attempt == self.max_retries or queue.stop_event.is_set():
                    _report.report_dropped(self, len(frames), "send_failed", error=repr(exc))
                    return
                if queue.stop_event.wait(delay):
                    _report.report_dropped(self, len(frames), "closed")
                    return
                delay = min(delay * 4, 5.0)

    def __repr__(self) -> str:
        return f"SyslogBackend({self.transport}:{self.address!r})"


def _parse_address(
    address: str | tuple[str, int], transport: Transport | None
) -> tuple[Transport, str | tuple[str, int]]:
    if transport is not None and transport not in ("udp", "tcp", "unix"):
        raise ValueError(f"syslog transport must be 'udp', 'tcp' or 'unix', got {transport!r}")
    if isinstance(address, tuple):
        if len(address) != 2 or not isinstance(address[1], int):
            raise ValueError(f"syslog address must be (host, port), got {address!r}")
        if transport == "unix":
            raise ValueError("a (host, port) syslog address needs transport 'udp' or 'tcp'")
        return transport or "udp", (address[0], address[1])
    if "://" in address:
        parts = urlsplit(address)
        scheme = parts.scheme
        if scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise ValueError(f"syslog address {address!r} has no socket path")
            return "unix", path
        if scheme in ("udp", "tcp"):
            if not parts.hostname:
                raise ValueError(f"syslog address {address!r} has no host")
            try:
                port = parts.port or 514
            except ValueError:
                raise ValueError(f"syslog address {address!r} has an invalid port") from None
            return scheme, (parts.hostname, port)  # type: ignore[return-value]
        raise ValueError(f"syslog address {address!r}: scheme must be udp://, tcp:// or unix://")
    if transport not in (None, "unix"):
        raise ValueError(f"syslog address {address!r} is a socket path: use transport 'unix'")
    return "unix", address
