"""Expose metrics to Prometheus: ``/metrics`` in text format 0.0.4 or OpenMetrics 1.0.

::

    from radiosonde import metrics as m
    from radiosonde.reporters.prometheus import PrometheusReporter

    METRICS = [
        m.counter("http.request.stop.duration", tags=["route", "status"]),
        m.distribution("http.request.stop.duration", unit=("nanosecond", "second"), tags=["route"]),
    ]
    with PrometheusReporter(METRICS, port=9568):   # http://127.0.0.1:9568/metrics
        serve_forever()

The reporter aggregates in memory (an :class:`~radiosonde.aggregation.Aggregator`) and renders
on each scrape; nothing happens on the hot path besides the aggregation itself. The standalone
server is the standard library's threaded HTTP server (daemon threads), so the core stays free
of dependencies; to serve ``/metrics`` from your own web application instead, mount
:meth:`PrometheusReporter.wsgi_app` / :meth:`PrometheusReporter.asgi_app`, or
:func:`make_wsgi_app` / :func:`make_asgi_app` over an aggregator of your own.

Each response is negotiated like Prometheus' own client libraries do: OpenMetrics 1.0 when the
``Accept`` header prefers ``application/openmetrics-text``, else text 0.0.4; gzip when
``Accept-Encoding`` allows it. How metric names, types and labels are rendered is described in
:mod:`radiosonde.reporters._exposition` and ``docs/reporters.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import itertools
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any, TypeAlias

from radiosonde.aggregation import DEFAULT_QUANTILES, Aggregator, default_max_series
from radiosonde.metrics import Metric
from radiosonde.reporters._base import Reporter
from radiosonde.reporters._exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Exposition,
    PrometheusNameError,
    accepts_gzip,
    negotiate,
)
from radiosonde.selfmetrics import report_error
from radiosonde.selfmetrics import self_metrics as _self_metrics

__all__ = [
    "DEFAULT_PORT",
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "ASGIApp",
    "PrometheusNameError",
    "PrometheusReporter",
    "WSGIApp",
    "make_asgi_app",
    "make_wsgi_app",
]

DEFAULT_PORT = 9568
"""The port when neither ``port=`` nor ``PROMETHEUS_PORT`` says otherwise (as in Elixir's
TelemetryMetricsPrometheus)."""

WSGIApp: TypeAlias = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ASGIApp: TypeAlias = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
_Response: TypeAlias = tuple[int, list[tuple[str, str]], bytes]

_logger = logging.getLogger("radiosonde.reporters.prometheus")
_ids = itertools.count(1)
# Serialises add_metric() (rare) so that the exposition and the aggregator agree.
_add_lock = threading.Lock()
_PLAIN = "text/plain; charset=utf-8"
# gzip level 1 compresses an exposition ~25x at a fifth of the default level's CPU: the
# process being observed pays for it.
_GZIP_LEVEL = 1


class _Scraper:
    """Renders an aggregator's snapshot and answers scrapes; shared by the server and the apps."""

    def __init__(
        self,
        aggregator: Aggregator,
        exposition: Exposition,
        name: str,
        on_error: Callable[[str, BaseException | None], None] | None = None,
    ) -> None:
        self.aggregator = aggregator
        self.exposition = exposition
        self.name = name
        self.on_error = on_error or (lambda kind, exc: report_error(name, kind, exc))
        # Quantiles cost a sketch walk per series: only summaries show them in Prometheus.
        self.quantiles = (
            DEFAULT_QUANTILES if any(m.kind == "summary" for m in aggregator.metrics) else ()
        )
        self._reported_skips = 0

    def render(self, openmetrics: bool) -> bytes:
        snapshot = self.aggregator.snapshot_rows(quantiles=self.quantiles)
        return self.exposition.render(snapshot, openmetrics=openmetrics)

    def respond(self, method: str, accept: str | None, accept_encoding: str | None) -> _Response:
        """Status, headers and body for a request (the body also for HEAD). Never raises."""
        if method not in ("GET", "HEAD"):
            return 405, [("Allow", "GET, HEAD"), ("Content-Type", _PLAIN)], b"Method Not Allowed\n"
        openmetrics = negotiate(accept)
        try:
            body = self.render(openmetrics)
        except Exception as exc:
            _logger.exception("radiosonde: %s could not render the metrics", self.name)
            self.on_error("render", exc)
            body = b"radiosonde could not render the metrics; the error is in the application log\n"
            return 500, [("Content-Type", _PLAIN)], body
        skipped = self.exposition.skipped_samples
        if skipped > self._reported_skips:
            # Values OpenMetrics cannot carry (a negative counter...): one error per scrape
            # that met new ones.
            self._reported_skips = skipped
            self.on_error("invalid_sample", None)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if accepts_gzip(accept_encoding):
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        return 200, headers, body

    def wsgi_app(self) -> WSGIApp:
        def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            method = str(environ.get("REQUEST_METHOD", "GET")).upper()
            status, headers, body = self.respond(
                method, environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING")
            )
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [b"" if method == "HEAD" else body]

        return metrics_app

    def asgi_app(self) -> ASGIApp:
        async def metrics_app(
            scope: MutableMapping[str, Any],
            receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
            send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
        ) -> None:
            kind = scope.get("type")
            if kind == "lifespan":
                await _lifespan(receive, send)
                return
            if kind != "http":
                return  # a websocket that is never accepted: the server answers 403
            method = str(scope.get("method", "GET")).upper()
            headers: dict[str, str] = {}
            for raw_name, raw_value in scope.get("headers", ()):
                name = bytes(raw_name).decode("latin-1").lower()
                value = bytes(raw_value).decode("latin-1")
                headers[name] = f"{headers[name]},{value}" if name in headers else value
            status, response_headers, body = await _off_the_loop(
                self.respond, method, headers.get("accept"), headers.get("accept-encoding")
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in response_headers
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

        return metrics_app


async def _lifespan(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _off_the_loop(
    function: Callable[[str, str | None, str | None], _Response],
    method: str,
    accept: str | None,
    accept_encoding: str | None,
) -> _Response:
    # Rendering thousands of series takes tens of milliseconds: on asyncio it runs in the
    # default executor so the event loop keeps serving; elsewhere (trio...) inline.
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return function(method, accept, accept_encoding)
    return await loop.run_in_executor(None, function, method, accept, accept_encoding)


def _exposition_for(
    aggregator: Aggregator, namespace: str | None, max_series: int | None, redact: bool = True
) -> Exposition:
    return Exposition(
        aggregator.metrics,
        namespace=namespace,
        max_series=max_series if max_series is not None else default_max_series(),
        redact=redact,
    )


def make_wsgi_app(
    aggregator: Aggregator, *, namespace: str | None = None, redact: bool = True
) -> WSGIApp:
    """A WSGI application answering every GET/HEAD with the exposition of ``aggregator``
    (negotiated format, gzip); other methods get 405. Mount it where you want ``/metrics``.
    Label values are redacted unless ``redact=False`` (see :class:`PrometheusReporter`).

    The caller owns the aggregator: attach it (``aggregator.attach()`` or ``with``) so that it
    counts. Raises :class:`PrometheusNameError` (a ``ValueError``) if two of its metrics would
    share a Prometheus name.
    """
    exposition = _exposition_for(aggregator, namespace, None, redact)
    return _Scraper(aggregator, exposition, f"prometheus-wsgi-{next(_ids)}").wsgi_app()


def make_asgi_app(
    aggregator: Aggregator, *, namespace: str | None = None, redact: bool = True
) -> ASGIApp:
    """An ASGI (3.0) application, like :func:`make_wsgi_app`. Rendering runs in the event loop's
    default executor, so a large exposition does not stall the loop; ``lifespan`` is handled."""
    exposition = _exposition_for(aggregator, namespace, None, redact)
    return _Scraper(aggregator, exposition, f"prometheus-asgi-{next(_ids)}").asgi_app()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    scraper: _Scraper

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        # Open connections, so that stopping also ends kept-alive ones: otherwise a scraper
        # could go on being answered by a stopped reporter's handler thread.
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)  # calls server_close() if it cannot bind

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response is not worth a traceback on stderr.
        _logger.debug("radiosonde: error while answering %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    timeout = 30.0  # a client that stalls cannot hold a thread forever

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    # Other methods get a clean 405 on /metrics (404 elsewhere) rather than the stdlib's 501.
    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def version_string(self) -> str:
        return "radiosonde"

    def _answer(self) -> None:
        if self.path.partition("?")[0] != "/metrics":
            status, headers, body = (
                404,
                [("Content-Type", _PLAIN)],
                b"Not Found: the metrics are at /metrics\n",
            )
            headers.append(("Content-Length", str(len(body))))
        else:
            status, headers, body = self.server.scraper.respond(
                self.command, self.headers.get("Accept"), self.headers.get("Accept-Encoding")
            )
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s " + format, self.address_string(), *args)


class PrometheusReporter(Reporter):
    """Serves ``metrics`` on ``http://host:port/metrics`` for Prometheus to scrape.

    * ``port``: ``None`` reads ``PROMETHEUS_PORT`` (through :mod:`radiosonde.config`, which
      rejects a bad value with an error naming the variable), else :data:`DEFAULT_PORT`; ``0``
      picks a free port, readable from :attr:`port` once started.
    * ``host``: ``None`` reads ``PROMETHEUS_HOST``, else ``"127.0.0.1"`` (loopback only; give
      ``"0.0.0.0"`` or ``"::"`` to be scraped from other machines).
    * ``max_series``: the series limit of metrics that set none (default: the global one).
    * ``namespace``: a prefix for every family name (``"myapp"`` -> ``myapp_http_...``), except
      radiosonde's own ``radiosonde_*`` self-metrics.
    * ``include_self_metrics``: add :func:`radiosonde.selfmetrics.self_metrics` (series per
      metric, overflow hits, dropped updates, reporter errors, handler failures).
    * ``redact``: label values go through :mod:`radiosonde.redact` (default): a tag whose name
      is sensitive (``session``, ``token``...) is exposed as ``[REDACTED]``, secrets in values
      (bearer tokens, JWTs, card numbers...) are replaced, and series made equal are merged.
      Each series is redacted once, when its labels are first rendered. ``False`` turns it off.

    Construction validates everything (a metric that cannot be exposed, two metrics sharing a
    Prometheus name, a bad port) and raises ``ValueError`` saying what to fix. :meth:`start`
    attaches to the events and starts serving (an ``OSError`` if the port is taken);
    :meth:`stop` undoes both; both are idempotent, and ``with reporter:`` does both. Scrapes
    never raise into the application: a rendering failure answers 500, is logged, and is
    counted in :attr:`errors` and as a ``radiosonde.reporter.errors`` self-metric.
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        port: int | None = None,
        host: str | None = None,
        *,
        max_series: int | None = None,
        namespace: str | None = None,
        include_self_metrics: bool = True,
        name: str | None = None,
        redact: bool = True,
    ) -> None:
        self._port, self.host = _resolve_address(port, host)
        if isinstance(metrics, Metric):
            raise ValueError("PrometheusReporter takes a list of metrics, got a single metric")
        metric_list = list(metrics)
        if include_self_metrics:
            have = {(m.kind, m.name) for m in metric_list}
            metric_list += [m for m in _self_metrics() if (m.kind, m.name) not in have]
        super().__init__(name or f"prometheus-{next(_ids)}")
        self._aggregator = Aggregator(metric_list, max_series=max_series, name=self.name)
        self._scraper = _Scraper(
            self._aggregator,
            _exposition_for(self._aggregator, namespace, max_series, redact),
            self.name,
            self._error,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- what it serves ------------------------------------------------------------------------

    @property
    def aggregator(self) -> Aggregator:
        """The aggregator holding the values (read its snapshot for other uses)."""
        return self._aggregator

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The metrics exposed, self-metrics included."""
        return self._aggregator.metrics

    @property
    def families(self) -> dict[Metric, tuple[str, str]]:
        """Each metric's Prometheus family name and type, e.g. ``("http_requests", "counter")``
        (a counter's sample adds ``_total``)."""
        return dict(self._scraper.exposition.families)

    def render(self, openmetrics: bool = False) -> bytes:
        """The current exposition: text 0.0.4, or OpenMetrics 1.0 (ending in ``# EOF``)."""
        return self._scraper.render(openmetrics)

    def add_metric(self, metric: Metric, *, attach: bool = True) -> None:
        """Serve one more metric from now on, e.g. a definition made at run time (the metrics
        facade's :class:`~radiosonde.reporters.facade.PrometheusBackend` adds its metrics so).

        Validated as at construction, with the same errors: :class:`PrometheusNameError` (a
        ``ValueError``) when it cannot be exposed or its Prometheus name clashes with a metric
        served already, ``ValueError`` for a metric of the same kind and name; nothing changes
        then. ``attach=True`` feeds it from its events like the others (from now on when the
        reporter is running); ``attach=False`` leaves it to :meth:`Aggregator.record
        <radiosonde.aggregation.Aggregator.record>` on :attr:`aggregator`. Thread-safe, also
        while scrapes run.
        """
        if not isinstance(metric, Metric):
            raise ValueError(
                f"PrometheusReporter.add_metric takes a metric definition, got {metric!r}"
            )
        with _add_lock:
            if any(m.kind == metric.kind and m.name == metric.name for m in self.metrics):
                raise ValueError(
                    f"PrometheusReporter {self.name!r}: {metric.kind} {metric.name!r} is defined"
                    " twice; give one of them another name"
                )
            # The exposition first, so that a concurrent scrape never snapshots a metric it
            # cannot render yet.
            self._scraper.exposition.add(metric, max_series=default_max_series())
            self._aggregator.add_metric(metric, attach=attach)
            if metric.kind == "summary":
                self._scraper.quantiles = DEFAULT_QUANTILES

    def wsgi_app(self) -> WSGIApp:
        """A WSGI app serving this reporter's exposition (see :func:`make_wsgi_app`). Creating
        it attaches the reporter to its events, as :meth:`start` does, without the server."""
        self._aggregator.attach()
        return self._scraper.wsgi_app()

    def asgi_app(self) -> ASGIApp:
        """An ASGI app serving this reporter's exposition (see :func:`make_asgi_app`). Creating
        it attaches the reporter to its events, as :meth:`start` does, without the server."""
        self._aggregator.attach()
        return self._scraper.asgi_app()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port: the one bound while running (useful with ``port=0``), else the one asked."""
        server = self._server
        return int(server.server_address[1]) if server is not None else self._port

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def _start(self) -> None:
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self._port), _Handler)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"PrometheusReporter cannot listen on {self.host}:{self._port}: {exc.strerror}"
                " (choose another port=, set PROMETHEUS_PORT, or use port=0 for any free one)",
            ) from exc
        server.scraper = self._scraper
        self._aggregator.attach()
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"radiosonde-{self.name}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def stop(self) -> None:
        """Stop serving and detach from the events (the values stay readable). Idempotent."""
        super().stop()
        # Also when only wsgi_app()/asgi_app() attached it.
        self._aggregator.detach()

    def __repr__(self) -> str:
        state = f"serving {self.url}" if self._server is not None else "stopped"
        return f"<PrometheusReporter {self.name!r} {len(self.metrics)} metrics, {state}>"


def _resolve_address(port: int | None, host: str | None) -> tuple[int, str]:
    if port is None or host is None:
        from radiosonde import config

        settings = config.get_settings()  # raises ConfigurationError naming a bad variable
        if port is None:
            port = settings.prometheus_port
        if host is None:
            host = settings.prometheus_host
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(
            f"PrometheusReporter: port must be an integer from 0 to 65535 (0 picks a free port),"
            f" got {port!r}"
        )
    if not isinstance(host, str):
        raise ValueError(f"PrometheusReporter: host must be a string, got {host!r}")
    return port, host.strip("[]")
