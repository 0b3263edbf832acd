"""The Datadog backend: the HTTP logs intake (v2), batched on a background thread.

Records are queued (bounded; a full queue drops and counts) and a sender thread POSTs them to
``https://http-intake.logs.<site>/api/v2/logs`` as a gzip-compressed JSON array, with the
``DD-API-KEY`` header. Each entry carries the reserved attributes ``ddsource``, ``ddtags``,
``hostname``, ``service``, ``message`` and ``status`` plus the record's metadata as attributes
(``timestamp`` among them, which Datadog takes as the log's date).

The documented limits are kept: at most 1000 entries and 5 MB (uncompressed) per request; an
entry over 1 MB has its message shortened and, if still too big, its attributes left out.

Delivery: a 2xx answer is success; 408, 429 and 5xx answers and network errors are retried with
exponential backoff (honouring ``Retry-After``) up to ``max_retries`` times; any other 4xx is not
retried (the batch is dropped as ``"rejected"``). Every drop is counted and reported with the
event ``("radiosonde", "log", "dropped")``. The caller only ever appends to the queue: a slow or
dead endpoint never blocks it.
"""

from __future__ import annotations

import gzip
import http.client
import random
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from radiosonde.logging_backends import _report
from radiosonde.logging_backends._json import dumps
from radiosonde.logging_backends._queue import BackgroundQueue

__all__ = [
    "MAX_ENTRIES_PER_PAYLOAD",
    "MAX_ENTRY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "STATUSES",
    "DatadogBackend",
    "intake_url",
]

MAX_ENTRIES_PER_PAYLOAD = 1000
"""Datadog's limit on the number of log entries in one request."""
MAX_PAYLOAD_BYTES = 5 * 1000 * 1000
"""Datadog's limit on one request's uncompressed size (5 MB, counted conservatively)."""
MAX_ENTRY_BYTES = 1000 * 1000
"""Datadog's limit on one entry (1 MB; larger ones are truncated by Datadog itself)."""

STATUSES: dict[str, str] = {
    "debug": "debug",
    "info": "info",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
}
"""The Datadog ``status`` of each radiosonde level."""

_RESERVED = ("ddsource", "ddtags", "hostname", "service", "message", "status")
_SITE_OK = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")
_TRUNCATED = "…[truncated by radiosonde: entry over 1 MB]"

Record = tuple[str, str, dict[str, Any]]


def intake_url(site: str) -> str:
    """The v2 logs intake URL for a Datadog site (``"datadoghq.com"``, ``"datadoghq.eu"``…).

    A site with a port (``"127.0.0.1:8126"``, as ``DATADOG_SITE`` allows) is a local intake
    (a test receiver, a proxy): plain HTTP to that address.
    """
    if ":" in site:
        return f"http://{site}/api/v2/logs"
    return f"https://http-intake.logs.{site}/api/v2/logs"


def _tags_string(tags: Mapping[str, object] | Sequence[str] | str | None) -> str:
    if tags is None:
        return ""
    if isinstance(tags, str):
        return tags.strip(",")
    if isinstance(tags, Mapping):
        return ",".join(f"{k}:{v}" for k, v in tags.items())
    return ",".join(str(t) for t in tags)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class DatadogBackend:
    """Ship records to Datadog's HTTP logs intake (see the module docstring).

    ``api_key`` is required (usually ``DATADOG_API_KEY``, via the settings). ``site`` picks the
    intake (``datadoghq.com``, ``datadoghq.eu``, ``us3.datadoghq.com``…); ``url`` overrides the
    whole endpoint (tests point it at a local receiver). ``service`` defaults to each record's
    ``service``; ``source`` is the ``ddsource``; ``tags`` (``"k:v,k2:v2"``, a list or a dict) go
    in ``ddtags`` with ``env:<environment>`` added from the record unless an ``env`` tag is set.

    ``max_queue`` bounds the records waiting to be sent; ``batch_size`` (<= 1000) caps one
    request; ``flush_interval`` is how long the sender waits to fill a batch. Retries:
    ``max_retries`` attempts after the first, backing off from ``backoff`` seconds doubling up to
    ``max_backoff``; ``timeout`` limits each request.
    """

    def __init__(
        self,
        api_key: str,
        *,
        site: str = "datadoghq.com",
        url: str | None = None,
        service: str | None = None,
        source: str = "python",
        tags: Mapping[str, object] | Sequence[str] | str | None = None,
        hostname: str | None = None,
        max_queue: int = 10_000,
        batch_size: int = MAX_ENTRIES_PER_PAYLOAD,
        flush_interval: float = 2.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        compress: bool = True,
        name: str = "datadog",
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError(
                "DatadogBackend needs an API key: set DATADOG_API_KEY (or pass api_key=)"
            )
        if url is None:
            if not _SITE_OK.match(site):
                raise ValueError(
                    f"invalid Datadog site {site!r}: expected a domain such as 'datadoghq.com'"
                    " or 'datadoghq.eu'"
                )
            url = intake_url(site)
        elif not url.startswith(("http://", "https://")):
            raise ValueError(f"Datadog intake url must start with http:// or https://, got {url!r}")
        if not 1 <= batch_size <= MAX_ENTRIES_PER_PAYLOAD:
            raise ValueError(f"batch_size must be 1..{MAX_ENTRIES_PER_PAYLOAD}, got {batch_size!r}")
        if max_retries < 0 or backoff < 0 or max_backoff < 0 or timeout <= 0:
            raise ValueError("max_retries, backoff and max_backoff must be >= 0, timeout > 0")
        self.name = name
        self.url = url
        self._api_key = api_key.strip()
        self.service = service
        self.source = source
        self.tags = _tags_string(tags)
        self._has_env_tag = any(t.startswith("env:") for t in self.tags.split(","))
        self.hostname = hostname or socket.gethostname()
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.compress = compress
        self._tags_by_env: dict[object, str] = {}
        self._stats_lock = threading.Lock()
        self._stats = {"sent": 0, "requests": 0, "retries": 0, "truncated": 0, "dropped": 0}
        self._opener = urllib.request.build_opener()
        self._queue: BackgroundQueue[Record] = BackgroundQueue(
            self,
            self._send,
            max_queue=max_queue,
            batch_size=batch_size,
            linger=flush_interval,
            thread_name="radiosonde-datadog",
        )

    # -- the backend protocol -------------------------------------------------------------------

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        """Queue one record for the sender thread (drops and counts when the queue is full)."""
        if not self._queue.put((level, message, metadata)):
            self._count("dropped")

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` s) until queued records have been sent or given up."""
        self._queue.flush(timeout)

    def close(self, timeout: float = 0.0) -> None:
        """Stop the sender thread, after sending what is queued for at most ``timeout`` s.

        Records still queued then are dropped (and reported): the facade flushes before it
        closes, within its own time limit, so ``close()`` itself does not wait by default.
        """
        self._queue.close(timeout)

    def stats(self) -> dict[str, int]:
        """Counters: entries ``sent``, ``requests`` made, ``retries``, entries ``truncated`` and
        ``dropped``, plus ``queued`` (waiting now)."""
        with self._stats_lock:
            out = dict(self._stats)
        out["queued"] = len(self._queue)
        return out

    def __repr__(self) -> str:
        # Never the API key.
        return f"DatadogBackend(url={self.url!r}, service={self.service!r})"

    # -- building the payload ---------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _ddtags(self, metadata: Mapping[str, Any]) -> str:
        env = metadata.get("environment")
        if self._has_env_tag or env is None:
            return self.tags
        key = env if isinstance(env, str) else str(env)
        tags = self._tags_by_env.get(key)
        if tags is None:
            tags = f"{self.tags},env:{key}" if self.tags else f"env:{key}"
            if len(self._tags_by_env) < 64:
                self._tags_by_env[key] = tags
        return tags

    def entry(self, level: str, message: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The intake entry for one record: metadata as attributes, reserved keys on top."""
        entry: dict[str, Any] = {k: v for k, v in metadata.items() if k not in _RESERVED}
        entry["ddsource"] = self.source
        tags = self._ddtags(metadata)
        if tags:
            entry["ddtags"] = tags
        entry["hostname"] = self.hostname
        entry["service"] = self.service or str(metadata.get("service") or "python")
        entry["message"] = message
        entry["status"] = STATUSES.get(level, "info")
        return entry

    def _encode_entry(self, record: Record) -> bytes:
        entry = self.entry(*record)
        data = dumps(entry).encode("utf-8", "replace")
        if len(data) <= MAX_ENTRY_BYTES:
            return data
        self._count("truncated")
        overflow = len(data) - MAX_ENTRY_BYTES + len(_TRUNCATED.encode()) + 16
        message = entry["message"]
        if len(message.encode()) > overflow:
            keep = message.encode()[: len(message.encode()) - overflow]
            entry["message"] = keep.decode("utf-8", "ignore") + _TRUNCATED
            data = dumps(entry).encode("utf-8", "replace")
            if len(data) <= MAX_ENTRY_BYTES:
                return data
        # The attributes are what is too big: keep the reserved fields and a shortened message.
        slim = {k: entry[k] for k in _RESERVED if k in entry}
        slim["message"] = (
            message.encode()[: MAX_ENTRY_BYTES // 2].decode("utf-8", "ignore") + _TRUNCATED
        )
        return dumps(slim).encode("utf-8", "replace")

    def payloads(self, records: list[Record]) -> list[tuple[int, bytes]]:
        """Split records into request bodies within the limits: ``(entry count, JSON bytes)``."""
        out: list[tuple[int, bytes]] = []
        chunk: list[bytes] = []
        size = 2  # the brackets
        for record in records:
            data = self._encode_entry(record)
            extra = len(data) + (1 if chunk else 0)
            if chunk and (
                len(chunk) >= MAX_ENTRIES_PER_PAYLOAD or size + extra > MAX_PAYLOAD_BYTES
            ):
                out.append((len(chunk), b"[" + b",".join(chunk) + b"]"))
                chunk, size = [], 2
                extra = len(data)
            chunk.append(data)
            size += extra
        if chunk:
            out.append((len(chunk), b"[" + b",".join(chunk) + b"]"))
        return out

    # -- sending (on the sender thread) --------------------------------------------------------

    def _send(self, records: list[Record]) -> None:
        for count, body in self.payloads(records):
            self._deliver(count, body)

    def _post(self, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "DD-API-KEY": self._api_key,
            "User-Agent": "radiosonde",
        }
        if self.compress:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            if status in (408, 429) or status >= 500:
                raise _Retryable(f"HTTP {status}", retry_after) from None
            raise
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None

    def _deliver(self, count: int, body: bytes) -> None:
        stop = self._queue.stop_event
        for attempt in range(self.max_retries + 1):
            self._count("requests")
            try:
                self._post(body)
            except _Retryable as exc:
                if attempt == self.max_retries:
                    self._drop(count, "retries_exhausted", str(exc))
                    return
                delay = min(self.max_backoff, self.backoff * (2**attempt))
                delay *= 0.5 + random.random() / 2  # jitter: many processes must not sync up
                if exc.retry_after is not None:
                    delay = min(self.max_backoff, max(delay, exc.retry_after))
                self._count("retries")
                if stop.wait(delay):
                    self._drop(count, "closed", str(exc))
                    return
            except urllib.error.HTTPError as exc:
                self._drop(count, "rejected", f"HTTP {exc.code}")
                return
            else:
                self._count("sent", count)
                return

    def _drop(self, count: int, reason: str, detail: str) -> None:
        self._count("dropped", count)
        _report.report_dropped(self, count, reason, error=detail)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare for this API, fall back to our own backoff
    return max(0.0, seconds)
