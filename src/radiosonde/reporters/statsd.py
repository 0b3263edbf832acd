"""Send metrics to a StatsD or DogStatsD server over UDP or a Unix datagram socket.

The Python counterpart of Elixir's ``TelemetryMetricsStatsd``, with client-side aggregation::

    from radiosonde import metrics as m
    from radiosonde.reporters.statsd import StatsDReporter

    METRICS = [
        m.counter("http.request.stop.duration", tags=["method", "status"]),
        m.summary("http.request.stop.duration", unit=("nanosecond", "millisecond")),
    ]
    with StatsDReporter(METRICS, formatter="datadog", global_tags={"env": "prod"}):
        ...

How metrics map to StatsD types (``reporter_options={"report_as": ...}`` changes the default):

================  ======================  ======================================================
metric            standard (Etsy)         datadog (DogStatsD)
================  ======================  ======================================================
``counter``       counter ``|c``          counter ``|c``
``sum``           counter ``|c``;         counter ``|c``
                  ``"gauge"``: ``+v|g``
``last_value``    gauge ``|g``            gauge ``|g``
``summary``       timer ``|ms``           histogram ``|h``; ``"timer"`` ``|ms``,
                                          ``"distribution"`` ``|d``
``distribution``  timer ``|ms``           distribution ``|d``; ``"timer"``, ``"histogram"``
================  ======================  ======================================================

Names are the metric's dotted name, after ``prefix``. The standard formatter has no tags: tag
values are appended to the name in the metric's tag order (``db.query.count.users.select``),
made safe as name segments (anything but letters, digits, ``_`` and ``-`` becomes ``_``). The
datadog formatter sends ``|#tag:value,...`` followed by the global tags. ``global_tags`` also
give the value of a metric's tag when the event's metadata lacks it.

Sampling: ``reporter_options={"sampling_rate": 0.1}`` keeps about one event in ten (chosen on
the client with ``random()``) and sends ``|@0.1`` so the server scales counts back up.

Events are aggregated in memory and flushed every ``flush_interval`` seconds by a background
thread: counters and sums are added up per series, last values keep the latest, timer values
are buffered (bounded) and sent as they are. Lines are packed into datagrams of at most ``mtu``
bytes. Sending never blocks and never raises into the application: a dead or absent server,
a full socket buffer, a failed DNS lookup are counted (:meth:`StatsDReporter.stats`), emitted
as the event :data:`ERROR_EVENT` and as a reporter error
(:data:`radiosonde.selfmetrics.REPORTER_ERROR_EVENT`), and logged at most once a minute.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import ipaddress
import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from radiosonde.events import EventName, attach, detach, execute
from radiosonde.metrics import Metric, tag_text
from radiosonde.reporters import _statsd_format as fmt
from radiosonde.reporters._base import Reporter
from radiosonde.reporters._statsd_buffer import Collector, Drained, Key, Mode

__all__ = ["DEFAULT_MTU", "DEFAULT_PORT", "ERROR_EVENT", "StatsDReporter"]

DEFAULT_PORT = 8125
DEFAULT_MTU = 1432
"""1432 bytes fit in one Ethernet frame (1500) with room for IP/UDP headers and tunnels."""

ERROR_EVENT: EventName = ("radiosonde", "statsd", "error")
"""Emitted (at most once per flush) when sending failed or data was dropped.

Measurements: ``errors`` (failed sends or connects in the flush), ``dropped_datagrams``
(datagrams not sent), ``dropped`` (updates, values or lines dropped since the last flush: too
many series, buffer full, line longer than the MTU). Metadata: ``reporter``, ``kind``
(``"send"``, ``"buffer_full"``, ``"connect"``, ``"resolve"``, ``"dropped"``, ``"flush"``),
``reason`` (the last exception, or None), ``address``.
"""

_LOG_INTERVAL_S = 60.0
_SERIES_CACHE = 50_000  # formatted names kept between flushes
_DNS_REFRESH_S = 60.0  # a host name is resolved again this often
_MAX_UDP_PAYLOAD = 65_507
_MIN_MTU = 64
_SUN_PATH_MAX = 107
# Errors after which a Unix socket must be connected again (the server went away or moved).
_RECONNECT_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET}
)

_logger = logging.getLogger("radiosonde.statsd")
_ids = itertools.count(1)

Formatter = Literal["standard", "datadog"]

# report_as values per metric kind: the first one of each is the default.
_REPORT_AS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sum", "standard"): ("counter", "gauge"),
    ("sum", "datadog"): ("counter",),
    ("summary", "standard"): ("timer",),
    ("summary", "datadog"): ("histogram", "timer", "distribution"),
    ("distribution", "standard"): ("timer",),
    ("distribution", "datadog"): ("distribution", "timer", "histogram"),
}
_WIRE_TYPE = {"timer": "ms", "histogram": "h", "distribution": "d"}
# record(): the wire type of each kind, per formatter (the Etsy daemon knows only timers).
_DIRECT_WIRE: dict[tuple[str, str], str] = {
    ("counter", "standard"): "c",
    ("counter", "datadog"): "c",
    ("gauge", "standard"): "g",
    ("gauge", "datadog"): "g",
    ("timer", "standard"): "ms",
    ("timer", "datadog"): "ms",
    ("histogram", "datadog"): "h",
    ("distribution", "datadog"): "d",
}
# record(): series buffered per interval, all names together (each name has max_series).
_DIRECT_MAX_SERIES = 100_000


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one metric goes on the wire."""

    metric: Metric
    mode: Mode
    wire: str  # "c", "g", "+g" (relative gauge), "ms", "h" or "d"
    rate: str  # "|@0.1" or ""


class StatsDReporter(Reporter):
    """Aggregates ``metrics`` in memory and sends them to a StatsD server every interval.

    * ``host``/``port``: the server (UDP). ``None`` reads ``STATSD_HOST``/``STATSD_PORT``
      through :mod:`radiosonde.config`, else ``"127.0.0.1"``/``8125``. The name is resolved
      by the background thread, never in the application's threads.
    * ``socket_path``: send over a Unix datagram socket instead (host and port are ignored).
    * ``formatter``: ``"standard"`` (Etsy StatsD: tags in the name) or ``"datadog"``
      (DogStatsD: ``|#tags``, histograms and distributions).
    * ``prefix``: prepended to every name (``"myapp"`` -> ``myapp.http.request.count``).
    * ``global_tags``: ``{"env": "prod"}``; defaults for metric tags missing from metadata,
      and (datadog) added to every line.
    * ``mtu``: the largest datagram in bytes (1432 suits UDP over Ethernet; DogStatsD over a
      Unix socket takes 8192).
    * ``flush_interval``: seconds between flushes.
    * ``multi_value``: pack several timer values in one line (``name:1|ms:2|ms`` for the Etsy
      daemon, ``name:1:2|d`` for DogStatsD >= 1.1 / Agent 6.25); off by default because older
      servers read such lines wrongly.
    * ``max_series``: series of one metric one thread may buffer per interval, unless the
      metric sets its own ``max_series`` (beyond: dropped and counted); ``max_samples``: timer
      values of one metric one thread may buffer per interval.
    * ``redact``: tag values (and global tags) go through :mod:`radiosonde.redact` (default):
      a tag whose name is sensitive (``session``, ``token``...) is sent as ``[REDACTED]``,
      secrets in values (bearer tokens, JWTs, card numbers...) are replaced, and series made
      equal are merged. Each series is redacted once, when it is first formatted (off the
      hot path); ``False`` turns it off.

    Construction validates everything and raises ``ValueError`` saying what to fix.
    :meth:`start` attaches to the events and starts the flusher; :meth:`stop` detaches,
    flushes what is left and closes the socket. Also a context manager.
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        host: str | None = None,
        port: int | None = None,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        formatter: Formatter = "standard",
        prefix: str | None = None,
        global_tags: Mapping[str, Any] | None = None,
        mtu: int = DEFAULT_MTU,
        flush_interval: float = 1.0,
        multi_value: bool = False,
        max_series: int = 2000,
        max_samples: int = 50_000,
        name: str | None = None,
        redact: bool = True,
    ) -> None:
        if isinstance(metrics, Metric):
            raise ValueError("StatsDReporter takes a list of metrics, got a single metric")
        if not isinstance(redact, bool):
            raise ValueError(f"redact must be True or False, got {redact!r}")
        metric_list = list(metrics)
        for metric in metric_list:
            if not isinstance(metric, Metric):
                raise ValueError(
                    f"StatsDReporter takes metric definitions (radiosonde.metrics.counter(...)"
                    f" etc.), got {metric!r}"
                )
        if formatter not in ("standard", "datadog"):
            raise ValueError(f"formatter must be 'standard' or 'datadog', got {formatter!r}")
        self.formatter: Formatter = formatter
        self.socket_path = _check_socket_path(socket_path)
        if self.socket_path is None:
            self.host, self.port = _resolve_address(host, port)
        else:
            self.host, self.port = "", 0
        self.mtu = _check_int("mtu", mtu, _MIN_MTU, _MAX_UDP_PAYLOAD)
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, int | float)
            or not math.isfinite(flush_interval)
            or not 0 < flush_interval <= 3600
        ):
            raise ValueError(
                f"flush_interval must be a number of seconds in (0, 3600], got {flush_interval!r}"
            )
        self.flush_interval = float(flush_interval)
        self.multi_value = bool(multi_value)
        self.prefix = fmt.check_prefix(prefix)
        self.global_tags = fmt.check_global_tags(global_tags)
        super().__init__(name or f"statsd-{next(_ids)}")
        self._plans = tuple(self._plan(metric) for metric in metric_list)
        self._check_duplicates()
        self._collector = Collector(
            metric_list,
            [plan.mode for plan in self._plans],
            tag_defaults=self.global_tags,
            max_series=_check_int("max_series", max_series, 1, 10**7),
            max_samples=_check_int("max_samples", max_samples, 1, 10**8),
        )
        self._namer = fmt.SeriesNamer(formatter, self.prefix, self.global_tags, redact=redact)
        self._series: dict[Key, tuple[str, str]] = {}
        self._direct = _Direct(max_series, max_samples)
        self._direct_series: dict[tuple[str, Any], tuple[str, str]] = {}
        # Re-entrant: a handler of ERROR_EVENT (emitted during a flush, in the flusher thread)
        # may call flush() or stop().
        self._flush_lock = threading.RLock()
        self._handler_ids: list[str] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._socket: socket.socket | None = None
        self._address: Any = None
        self._counts = {
            "flushes": 0,
            "lines": 0,
            "datagrams": 0,
            "bytes": 0,
            "send_errors": 0,
            "connect_errors": 0,
            "dropped_datagrams": 0,
            "oversize_lines": 0,
            "invalid_values": 0,
            "flush_errors": 0,
        }
        self._reported_drops = 0
        self._last_log = -math.inf
        self._unlogged = 0

    # -- configuration -------------------------------------------------------------------------

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The metrics this reporter sends."""
        return tuple(plan.metric for plan in self._plans)

    @property
    def address(self) -> str:
        """Where datagrams go: ``"host:port"`` or the socket path."""
        if self.socket_path is not None:
            return self.socket_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _plan(self, metric: Metric) -> _Plan:
        options = metric.reporter_options
        rate = float(options.get("sampling_rate") or 1.0)
        report_as = options.get("report_as")
        label = f"metric {metric.name!r} ({metric.kind})"
        allowed = _REPORT_AS.get((metric.kind, self.formatter))
        if report_as is not None and (allowed is None or report_as not in allowed):
            if allowed is None:
                hint = "this kind takes no report_as"
            else:
                hint = "use one of " + ", ".join(repr(a) for a in allowed)
            extra = ""
            if report_as == "gauge" and self.formatter == "datadog":
                extra = " (DogStatsD has no relative gauges)"
            elif self.formatter == "standard" and report_as in ("histogram", "distribution"):
                extra = " (the Etsy StatsD daemon knows only timers; use formatter='datadog')"
            raise ValueError(
                f"{label}: report_as={report_as!r} is not possible with the {self.formatter!r}"
                f" formatter{extra}; {hint}"
            )
        kind = metric.kind
        if kind == "counter":
            return _Plan(metric, "count", "c", fmt.rate_field(rate))
        if kind == "last_value":
            return _Plan(metric, "gauge", "g", "")
        assert allowed is not None
        chosen = report_as or allowed[0]
        if kind == "sum":
            if chosen == "gauge":
                return _Plan(metric, "count", "+g", "")
            return _Plan(metric, "count", "c", fmt.rate_field(rate))
        return _Plan(metric, "samples", _WIRE_TYPE[chosen], fmt.rate_field(rate))

    def _check_duplicates(self) -> None:
        seen: dict[tuple[str, str], Metric] = {}
        for plan in self._plans:
            wire = "g" if plan.wire == "+g" else plan.wire
            key = (plan.metric.name, wire)
            if key in seen:
                raise ValueError(
                    f"metrics {seen[key]!r} and {plan.metric!r} would both be sent as"
                    f" {plan.metric.name!r} with type |{wire}: rename one of them"
                )
            seen[key] = plan.metric

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the metrics' events and start the flusher thread. Idempotent."""
        super().start()

    def stop(self) -> None:
        """Detach, send what is left, close the socket. Idempotent.

        An update racing with ``stop`` in another thread may be lost.
        """
        super().stop()

    def _start(self) -> None:
        ids: list[str] = []
        try:
            for slot, plan in enumerate(self._plans):
                handler_id = f"radiosonde.statsd.{self.name}.{slot}.{plan.metric.name}"
                attach(
                    handler_id,
                    plan.metric.event_name,
                    self._collector.handler(slot),
                    on_error="keep",
                )
                ids.append(handler_id)
        except BaseException:
            for handler_id in ids:
                detach(handler_id)
            raise
        self._handler_ids = ids
        self._stopping.clear()
        thread = threading.Thread(target=self._run, name=f"radiosonde-{self.name}", daemon=True)
        self._thread = thread
        thread.start()
        # Send the last interval when the program ends without stop().
        atexit.register(self.stop)

    def _stop(self) -> None:
        thread, self._thread = self._thread, None
        for handler_id in self._handler_ids:
            detach(handler_id)
        self._handler_ids = []
        self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        atexit.unregister(self.stop)
        self._flush_safely()
        with self._flush_lock:
            self._close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<StatsDReporter {self.name!r} {self.formatter} -> {self.address},"
            f" {len(self._plans)} metrics, {state}>"
        )

    def _run(self) -> None:
        while not self._stopping.wait(self.flush_interval):
            self._flush_safely()

    # -- flushing ------------------------------------------------------------------------------

    def flush(self) -> int:
        """Send everything buffered now; returns the number of datagrams sent.

        Never raises because of the network (errors are counted and reported).
        """
        with self._flush_lock:
            drained = self._collector.drain()
            lines = self._lines(drained) + self._direct_lines()
            datagrams, oversize = fmt.pack(lines, self.mtu)
            counts = self._counts
            counts["flushes"] += 1
            counts["lines"] += len(lines) - oversize
            counts["oversize_lines"] += oversize
            sent = self._send(datagrams) if datagrams else 0
            self._report_drops()
            return sent

    def _flush_safely(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the flusher must survive anything
            self._counts["flush_errors"] += 1
            self._problem("flush", exc, errors=1, dropped_datagrams=0)

    def _series_of(self, key: Key) -> tuple[str, str]:
        found = self._series.get(key)
        if found is not None:
            return found
        slot, raw = key
        metric = self._plans[slot].metric
        count = len(metric.tags)
        values = () if count == 0 else ((raw,) if count == 1 else raw)
        series = self._namer.series(metric.name, metric.tags, [tag_text(v) for v in values])
        if len(self._series) >= _SERIES_CACHE:
            self._series.clear()
        self._series[key] = series
        return series

    def _lines(self, drained: Drained) -> list[str]:
        """Format what was drained; series that format alike (``200`` and ``"200"``) merge."""
        plans = self._plans
        style = self.formatter
        counts: dict[tuple[int, str, str], float] = {}
        for key, total in drained.counts.items():
            name, tags = self._series_of(key)
            merged = (key[0], name, tags)
            counts[merged] = counts.get(merged, 0.0) + total
        gauges: dict[tuple[int, str, str], tuple[int, float]] = {}
        for key, latest in drained.gauges.items():
            name, tags = self._series_of(key)
            merged = (key[0], name, tags)
            held = gauges.get(merged)
            if held is None or latest[0] > held[0]:
                gauges[merged] = latest
        samples: dict[tuple[int, str, str], list[float]] = {}
        for key, values in drained.samples.items():
            name, tags = self._series_of(key)
            samples.setdefault((key[0], name, tags), []).extend(values)

        lines: list[str] = []
        invalid = 0
        for (slot, name, tags), total in counts.items():
            plan = plans[slot]
            if not fmt.finite(total):
                invalid += 1
            elif plan.wire == "c":
                lines.append(fmt.counter_line(name, total, plan.rate, tags))
            else:
                lines.append(fmt.gauge_delta_line(name, total, tags))
        for (_slot, name, tags), (_seq, value) in gauges.items():
            lines.append(fmt.gauge_line(name, value, tags, style))
        for (slot, name, tags), taken in samples.items():
            plan = plans[slot]
            values = taken
            if plan.wire == "ms" and style == "standard":
                # The Etsy daemon rejects negative timings as bad lines.
                values = [v for v in taken if v >= 0]
                invalid += len(taken) - len(values)
            if values:
                lines.extend(
                    fmt.sample_lines(
                        name,
                        values,
                        kind=plan.wire,
                        rate=plan.rate,
                        tags=tags,
                        style=style,
                        multi_value=self.multi_value,
                        limit=self.mtu,
                    )
                )
        self._counts["invalid_values"] += invalid
        return lines

    # -- sending -------------------------------------------------------------------------------

    def _send(self, datagrams: list[bytes]) -> int:
        sock = self._connect()
        counts = self._counts
        if sock is None:
            counts["dropped_datagrams"] += len(datagrams)
            self._problem(
                "resolve" if self._address is None and self.socket_path is None else "connect",
                self._connect_error,
                errors=1,
                dropped_datagrams=len(datagrams),
            )
            return 0
        sent = errors = full = skipped = 0
        last: OSError | None = None
        kind = "send"
        for datagram in datagrams:
            try:
                sock.send(datagram)
            except BlockingIOError as exc:  # the socket buffer is full: drop, never wait
                full += 1
                last = exc
                kind = "buffer_full"
            except OSError as exc:
                errors += 1
                last = exc
                kind = "send"
                if self.socket_path is not None and exc.errno in _RECONNECT_ERRNOS:
                    self._close()
                    # The rest of this flush would fail alike; reconnect on the next one.
                    skipped = len(datagrams) - sent - full - errors
                    break
            else:
                sent += 1
                counts["bytes"] += len(datagram)
        dropped = full + errors + skipped
        counts["datagrams"] += sent
        counts["send_errors"] += errors
        counts["dropped_datagrams"] += dropped
        if last is not None:
            self._problem(kind, last, errors=errors + full, dropped_datagrams=dropped)
        return sent

    _connect_error: Exception | None = None
    _refresh_at: float | None = None

    def _connect(self) -> socket.socket | None:
        """The connected non-blocking socket, (re)made when needed; None when it cannot be."""
        if self._socket is not None:
            if self._refresh_at is None or time.monotonic() < self._refresh_at:
                return self._socket
            # A host name may move (a restarted container, a DNS change): look it up again.
            self._close()
        sock: socket.socket | None = None
        try:
            if self.socket_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(self.socket_path)
            else:
                self._address = None
                infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
                family, kind, proto, _canon, address = infos[0]
                self._address = address
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                # A connected UDP socket sends with less work per datagram and hears of an
                # absent server (ICMP port unreachable) as ECONNREFUSED on a later send.
                sock.connect(address)
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._counts["connect_errors"] += 1
            self._connect_error = exc
            return None
        self._socket = sock
        self._refresh_at = None
        if self.socket_path is None and not _is_ip(self.host):
            self._refresh_at = time.monotonic() + _DNS_REFRESH_S
        return sock

    def _close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # -- errors --------------------------------------------------------------------------------

    def _report_drops(self) -> None:
        stats = self._collector.stats()
        for name, count in self._direct.stats().items():
            stats[name] += count
        dropped = (
            stats["dropped_series"] + stats["dropped_samples"] + self._counts["oversize_lines"]
        )
        new = dropped - self._reported_drops
        if new > 0:
            self._reported_drops = dropped
            self._problem("dropped", None, errors=0, dropped_datagrams=0, dropped=new)

    def _problem(
        self,
        kind: str,
        reason: Exception | None,
        *,
        errors: int,
        dropped_datagrams: int,
        dropped: int = 0,
    ) -> None:
        """Report one flush's trouble: event, reporter error, rate-limited log. Never raises."""
        try:
            execute(
                ERROR_EVENT,
                {"errors": errors, "dropped_datagrams": dropped_datagrams, "dropped": dropped},
                {"reporter": self.name, "kind": kind, "reason": reason, "address": self.address},
            )
            self._error(kind, reason)
            now = time.monotonic()
            if now - self._last_log >= _LOG_INTERVAL_S:
                unlogged, self._unlogged = self._unlogged, 0
                self._last_log = now
                _logger.warning(
                    "radiosonde: StatsD reporter %r (%s): %s%s; %d datagrams and %d updates"
                    " dropped (%d more problems not logged since the last report)",
                    self.name,
                    self.address,
                    kind,
                    f": {reason}" if reason is not None else "",
                    dropped_datagrams,
                    dropped,
                    unlogged,
                )
            else:
                self._unlogged += 1
        except Exception:
            pass

    # -- direct updates ------------------------------------------------------------------------

    def record(
        self,
        kind: Literal["counter", "gauge", "timer", "histogram", "distribution"],
        name: str,
        value: float,
        tags: Mapping[str, Any] | None = None,
    ) -> bool:
        """Send one update of ``name`` without a metric definition or an event (how the metrics
        facade's :class:`~radiosonde.reporters.facade.StatsDBackend` sends its calls).

        ``kind``: ``"counter"`` (``|c``, values added up per interval), ``"gauge"`` (``|g``, the
        latest value per interval), ``"timer"`` (``|ms``), and with the datadog formatter
        ``"histogram"`` (``|h``) and ``"distribution"`` (``|d``); another kind raises
        ``ValueError`` (a programming error, not data). ``name`` is dotted; each part is made
        safe as for tag values in standard names, and the prefix applies. ``tags`` may differ
        from call to call: standard names get the values in the order of the sorted keys,
        DogStatsD lines list them (then the global tags).

        Buffered with the other metrics and sent by the same flusher, socket and datagram
        packing. Never raises because of the data: a value that is not a finite number, or a
        name that is not a non-empty string, is skipped and counted (``skipped`` in
        :meth:`stats`); past ``max_series`` series of one name, or ``max_samples`` buffered
        values, in one interval, updates are dropped and counted (``dropped_series``,
        ``dropped_samples``). Returns whether the update was buffered. Thread-safe (one short
        lock per call).
        """
        wire = _DIRECT_WIRE.get((kind, self.formatter))
        if wire is None:
            kinds = sorted(k for k, style in _DIRECT_WIRE if style == self.formatter)
            raise ValueError(
                f"StatsDReporter.record: kind {kind!r} is not possible with the"
                f" {self.formatter!r} formatter; use one of {', '.join(map(repr, kinds))}"
            )
        return self._direct.add(wire, name, value, tags)

    def _direct_lines(self) -> list[str]:
        """The lines of what :meth:`record` buffered since the last flush (flush lock held)."""
        counts, gauges, samples = self._direct.drain()
        if not (counts or gauges or samples):
            return []
        style = self.formatter
        lines: list[str] = []
        invalid = 0
        # Series that format alike (tags given in another order, names that differ only in
        # characters made safe) are merged, as in _lines().
        merged: dict[tuple[str, str, str], float] = {}
        for (wire, name, items), total in counts.items():
            out_name, tag_field = self._direct_series_of(name, items)
            key = (wire, out_name, tag_field)
            merged[key] = merged.get(key, 0.0) + total
        for (_wire, out_name, tag_field), total in merged.items():
            if fmt.finite(total):
                lines.append(fmt.counter_line(out_name, total, "", tag_field))
            else:
                invalid += 1
        latest: dict[tuple[str, str], tuple[int, float]] = {}
        for (_wire, name, items), held in gauges.items():
            series = self._direct_series_of(name, items)
            other = latest.get(series)
            if other is None or held[0] > other[0]:
                latest[series] = held
        for (out_name, tag_field), (_seq, value) in latest.items():
            lines.append(fmt.gauge_line(out_name, value, tag_field, style))
        grouped: dict[tuple[str, str, str], list[float]] = {}
        for (wire, name, items), values in samples.items():
            out_name, tag_field = self._direct_series_of(name, items)
            grouped.setdefault((wire, out_name, tag_field), []).extend(values)
        for (wire, out_name, tag_field), values in grouped.items():
            kept = values
            if wire == "ms" and style == "standard":
                # The Etsy daemon rejects negative timings as bad lines.
                kept = [v for v in values if v >= 0]
                invalid += len(values) - len(kept)
            if kept:
                lines.extend(
                    fmt.sample_lines(
                        out_name,
                        kept,
                        kind=wire,
                        rate="",
                        tags=tag_field,
                        style=style,
                        multi_value=self.multi_value,
                        limit=self.mtu,
                    )
                )
        self._counts["invalid_values"] += invalid
        return lines

    def _direct_series_of(self, name: str, items: tuple[tuple[str, str], ...]) -> tuple[str, str]:
        found = self._direct_series.get((name, items))
        if found is not None:
            return found
        safe_name = ".".join(fmt.name_segment(part) for part in name.split("."))
        pairs = sorted((tag_text(key), tag_text(value)) for key, value in items)
        keys = [fmt.tag_value(key).replace(":", "_") or "_" for key, _ in pairs]
        series = self._namer.series(safe_name, keys, [tag_text(value) for _, value in pairs])
        if len(self._direct_series) >= _SERIES_CACHE:
            self._direct_series.clear()
        self._direct_series[(name, items)] = series
        return series

    def stats(self) -> dict[str, int]:
        """What the reporter did and what it lost, since it was made (a copy).

        ``flushes``, ``lines``, ``datagrams``, ``bytes`` sent; ``send_errors`` and
        ``connect_errors``; ``dropped_datagrams`` (not sent: error, full socket buffer, no
        connection); ``oversize_lines`` (a single line longer than ``mtu``: dropped);
        ``invalid_values`` (infinite totals, negative timings for the Etsy daemon);
        ``skipped`` (bad measurement or missing tag); ``dropped_series`` (a thread met more
        series of one metric than ``max_series`` in one interval); ``dropped_samples`` (timer
        values over ``max_samples``); ``flush_errors``; ``buffers`` (per-thread, per-metric
        buffers held now).
        """
        result = dict(self._counts)
        result.update(self._collector.stats())
        for name, count in self._direct.stats().items():
            result[name] += count
        result["buffers"] = self._collector.buffers()
        return result


class _Direct:
    """What :meth:`StatsDReporter.record` buffered since the last flush, under one lock.

    Series are keyed by ``(wire type, name, tag items)`` as given; they are made safe and
    formatted at flush time, off the caller's path.
    """

    def __init__(self, max_series: int, max_samples: int) -> None:
        self.lock = threading.Lock()
        self.max_series = max_series
        self.max_samples = max_samples
        self.seq = itertools.count(1)
        self.counts: dict[tuple[str, str, Any], float] = {}
        self.gauges: dict[tuple[str, str, Any], tuple[int, float]] = {}
        self.samples: dict[tuple[str, str, Any], list[float]] = {}
        self.per_name: dict[tuple[str, str], int] = {}
        self.held = 0
        self.skipped = 0
        self.dropped_series = 0
        self.dropped_samples = 0

    def add(self, wire: str, name: str, value: Any, tags: Mapping[str, Any] | None) -> bool:
        try:
            number = value if value.__class__ is float and value - value == 0.0 else _finite(value)
            if number is None or name.__class__ is not str or not name:
                return self._skip()
            items: Any = tuple(tags.items()) if tags else ()
            try:
                hash(items)
            except TypeError:  # a list as a tag value, say: key the series by its text
                items = tuple((tag_text(k), tag_text(v)) for k, v in items)
            key = (wire, name, items)
            with self.lock:
                if wire == "c":
                    return self._add(key, number)
                if wire == "g":
                    return self._set(key, number)
                return self._append(key, number)
        except Exception:
            return self._skip()

    # The three below run with the lock held.

    def _add(self, key: tuple[str, str, Any], value: float) -> bool:
        counts = self.counts
        if key in counts:
            counts[key] += value
        elif self._new_series(key, len(counts)):
            counts[key] = value
        else:
            return False
        return True

    def _set(self, key: tuple[str, str, Any], value: float) -> bool:
        gauges = self.gauges
        if key not in gauges and not self._new_series(key, len(gauges)):
            return False
        gauges[key] = (next(self.seq), value)
        return True

    def _append(self, key: tuple[str, str, Any], value: float) -> bool:
        if self.held >= self.max_samples:
            self.dropped_samples += 1
            return False
        values = self.samples.get(key)
        if values is None:
            if not self._new_series(key, len(self.samples)):
                return False
            values = self.samples[key] = []
        values.append(value)
        self.held += 1
        return True

    def _new_series(self, key: tuple[str, str, Any], held: int) -> bool:
        """Room for one more series of the key's name; counts the drop when not."""
        name = key[:2]
        count = self.per_name.get(name, 0)
        if count >= self.max_series or held >= _DIRECT_MAX_SERIES:
            self.dropped_series += 1
            return False
        self.per_name[name] = count + 1
        return True

    def _skip(self) -> bool:
        with self.lock:
            self.skipped += 1
        return False

    def drain(
        self,
    ) -> tuple[
        dict[tuple[str, str, Any], float],
        dict[tuple[str, str, Any], tuple[int, float]],
        dict[tuple[str, str, Any], list[float]],
    ]:
        with self.lock:
            taken = self.counts, self.gauges, self.samples
            self.counts, self.gauges, self.samples = {}, {}, {}
            self.per_name = {}
            self.held = 0
        return taken

    def stats(self) -> dict[str, int]:
        return {
            "skipped": self.skipped,
            "dropped_series": self.dropped_series,
            "dropped_samples": self.dropped_samples,
        }


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, NaN, infinities, non-numbers)."""
    if value.__class__ is not float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        value = float(value)  # OverflowError for a huge int: the caller skips it
    return value if value - value == 0.0 else None


def _check_int(label: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{label} must be an integer from {low} to {high}, got {value!r}")
    return value


def _check_socket_path(path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    try:
        text = os.fspath(path)
    except TypeError:
        raise ValueError(f"socket_path must be a path, got {path!r}") from None
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"socket_path must be a non-empty path, got {path!r}")
    if len(text.encode()) > _SUN_PATH_MAX:
        raise ValueError(
            f"socket_path {text!r} is longer than the {_SUN_PATH_MAX} bytes a Unix socket"
            " address can hold: use a shorter path"
        )
    return text


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve_address(host: str | None, port: int | None) -> tuple[str, int]:
    if host is None or port is None:
        from radiosonde import config

        settings = config.get_settings()  # raises ConfigurationError naming a bad variable
        if host is None:
            host = settings.statsd_host
        if port is None:
            port = settings.statsd_port
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
        raise ValueError(f"host must be a host name or IP address, got {host!r}")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    return host.strip("[]"), port
