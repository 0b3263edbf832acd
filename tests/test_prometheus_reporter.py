"""PrometheusReporter: configuration, the HTTP endpoint, the WSGI and ASGI apps, robustness.

Everything here runs over real sockets on 127.0.0.1 (the reporter's own server, wsgiref) or
speaks the ASGI protocol directly; the exposition itself is pinned in
test_prometheus_exposition.py and checked against real Prometheus in test_prometheus_server.py.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import socket
import threading
import urllib.error
import urllib.request
import wsgiref.simple_server
import wsgiref.validate
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import parser as prometheus_parser
from prometheus_client.openmetrics import parser as openmetrics_parser

import radiosonde
from radiosonde import config
from radiosonde import metrics as m
from radiosonde.aggregation import Aggregator
from radiosonde.reporters.prometheus import (
    DEFAULT_PORT,
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    PrometheusNameError,
    PrometheusReporter,
    make_asgi_app,
    make_wsgi_app,
)

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def shop_metrics() -> list[m.Metric]:
    return [
        m.counter("shop.checkout.stop.duration", tags=["status"]),
        m.distribution(
            "shop.checkout.stop.duration",
            unit=("nanosecond", "second"),
            tags=["status"],
            reporter_options={"buckets": [0.01, 0.1, 1]},
        ),
        m.summary("shop.checkout.stop.items", tags=["status"]),
    ]


def checkout(duration_ms: float, status: str = "ok", items: int = 2) -> None:
    radiosonde.execute(
        ("shop", "checkout", "stop"),
        {"duration": int(duration_ms * 1_000_000), "items": items},
        {"status": status},
    )


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PROMETHEUS_PORT", raising=False)
    monkeypatch.delenv("PROMETHEUS_HOST", raising=False)
    config._reset_for_tests()
    yield
    config._reset_for_tests()


@pytest.fixture
def reporter() -> Iterator[PrometheusReporter]:
    with PrometheusReporter(shop_metrics(), port=0) as running:
        yield running


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def samples(text: bytes, openmetrics: bool = False) -> dict[tuple[Any, ...], float]:
    parser = openmetrics_parser if openmetrics else prometheus_parser
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in parser.text_string_to_metric_families(text.decode())
        for s in family.samples
    }


# -- configuration ---------------------------------------------------------------------------


def test_port_defaults_to_9568_and_host_to_loopback() -> None:
    reporter = PrometheusReporter(shop_metrics())
    assert (reporter.port, reporter.host) == (DEFAULT_PORT, "127.0.0.1")
    assert reporter.url == "http://127.0.0.1:9568/metrics"


def test_prometheus_port_and_host_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_PORT", "19568")
    monkeypatch.setenv("PROMETHEUS_HOST", "::1")
    reporter = PrometheusReporter(shop_metrics())
    assert (reporter.port, reporter.host) == (19568, "::1")
    assert reporter.url == "http://[::1]:19568/metrics"
    assert PrometheusReporter(shop_metrics(), port=1234, host="127.0.0.1").port == 1234


@pytest.mark.parametrize("value", ["nine", "70000", "-1", "95 68"])
def test_a_bad_prometheus_port_variable_fails_at_construction_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PROMETHEUS_PORT", value)
    with pytest.raises(ValueError, match="PROMETHEUS_PORT"):
        PrometheusReporter(shop_metrics())


@pytest.mark.parametrize("port", [-1, 65536, "9568", 95.68, True])
def test_a_bad_port_argument_fails_at_construction(port: Any) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        PrometheusReporter(shop_metrics(), port=port)


def test_metrics_that_clash_in_prometheus_fail_at_construction() -> None:
    clash = [m.counter("jobs.run.done"), m.last_value("jobs.run.done.total")]
    with pytest.raises(PrometheusNameError, match="jobs_run_done"):
        PrometheusReporter(clash, port=0)


def test_a_taken_port_fails_at_start_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reporter = PrometheusReporter(shop_metrics(), port=port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            reporter.start()
        assert not reporter.running


# -- lifecycle -------------------------------------------------------------------------------


def test_start_binds_a_free_port_and_stop_releases_it() -> None:
    reporter = PrometheusReporter(shop_metrics(), port=0)
    assert not reporter.running
    reporter.start()
    reporter.start()  # idempotent
    port = reporter.port
    assert port != 0 and reporter.running
    assert get(reporter.url)[0] == 200
    reporter.stop()
    reporter.stop()  # idempotent
    assert not reporter.running
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_stop_also_ends_kept_alive_connections() -> None:
    # Prometheus keeps its connection open between scrapes: after stop() it must not go on
    # being answered by the stopped reporter.
    reporter = PrometheusReporter(shop_metrics(), port=0)
    reporter.start()
    connection = http.client.HTTPConnection("127.0.0.1", reporter.port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert not response.will_close  # HTTP/1.1 keep-alive
        response.read()
        reporter.stop()
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.request("GET", "/metrics")
            connection.getresponse().read()
    finally:
        connection.close()
        reporter.stop()


def test_it_counts_only_while_started() -> None:
    reporter = PrometheusReporter(shop_metrics(), port=0)
    checkout(5)  # before start: not counted
    with reporter:
        checkout(5)
        checkout(50, status="error")
    checkout(5)  # after stop: not counted, the values stay readable
    values = samples(reporter.render())
    assert values[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 1
    assert values[("shop_checkout_stop_duration_total", (("status", "error"),))] == 1


# -- the endpoint ----------------------------------------------------------------------------


def test_metrics_endpoint_serves_text_by_default(reporter: PrometheusReporter) -> None:
    for ms in (5, 50, 50, 500):
        checkout(ms)
    status, headers, body = get(reporter.url)
    assert status == 200
    assert headers["Content-Type"] == TEXT_CONTENT_TYPE
    assert int(headers["Content-Length"]) == len(body)
    values = samples(body)
    assert values[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 4
    bucket = "shop_checkout_stop_duration_seconds_bucket"
    assert values[(bucket, (("le", "0.01"), ("status", "ok")))] == 1
    assert values[(bucket, (("le", "0.1"), ("status", "ok")))] == 3
    assert values[(bucket, (("le", "1.0"), ("status", "ok")))] == 4
    assert values[(bucket, (("le", "+Inf"), ("status", "ok")))] == 4
    assert values[("shop_checkout_stop_duration_seconds_sum", (("status", "ok"),))] == (
        pytest.approx(0.605)
    )
    p50 = values[("shop_checkout_stop_items", (("quantile", "0.5"), ("status", "ok")))]
    assert p50 == pytest.approx(2, rel=0.01)


def test_prometheus_accept_header_gets_openmetrics(reporter: PrometheusReporter) -> None:
    checkout(5)
    status, headers, body = get(reporter.url, {"Accept": PROMETHEUS_ACCEPT})
    assert status == 200
    assert headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
    assert body.endswith(b"# EOF\n")
    values = samples(body, openmetrics=True)
    assert values[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 1


@pytest.mark.parametrize("accept", [None, PROMETHEUS_ACCEPT])
def test_gzip_when_the_client_accepts_it(reporter: PrometheusReporter, accept: str | None) -> None:
    checkout(5)
    headers = {"Accept-Encoding": "gzip"} | ({"Accept": accept} if accept else {})
    status, response_headers, body = get(reporter.url, headers)
    assert status == 200
    assert response_headers["Content-Encoding"] == "gzip"
    assert int(response_headers["Content-Length"]) == len(body)
    plain_headers = {"Accept": accept} if accept else {}
    _, plain_response_headers, plain = get(reporter.url, plain_headers)
    assert "Content-Encoding" not in plain_response_headers
    unzipped = samples(gzip.decompress(body), bool(accept))
    shop = {k: v for k, v in samples(plain, bool(accept)).items() if k[0].startswith("shop_")}
    assert shop and shop.items() <= unzipped.items()


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "garbage",
        ";;;,,,q=",
        "application/openmetrics-text;q=not-a-number",
        "application/openmetrics-text;version=9.9.9",
        "*/*;q=-1",
        "text/html," * 200,
        "\u00e9\u00ff",
    ],
)
def test_a_bad_accept_header_never_errors(reporter: PrometheusReporter, accept: str) -> None:
    status, headers, body = get(reporter.url, {"Accept": accept, "Accept-Encoding": accept})
    assert status == 200
    assert headers["Content-Type"] == TEXT_CONTENT_TYPE
    samples(body)


def test_head_answers_headers_without_a_body(reporter: PrometheusReporter) -> None:
    checkout(5)
    status, headers, body = get(reporter.url, method="HEAD")
    assert status == 200
    assert headers["Content-Type"] == TEXT_CONTENT_TYPE
    assert int(headers["Content-Length"]) > 0
    assert body == b""


def test_other_paths_are_404_and_other_methods_405(reporter: PrometheusReporter) -> None:
    base = reporter.url.removesuffix("/metrics")
    for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
        assert get(base + path)[0] == 404
    assert get(reporter.url + "?name[]=x")[0] == 200
    status, headers, _ = get(reporter.url, method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_a_rendering_failure_answers_500_and_is_counted(
    reporter: PrometheusReporter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exposition = reporter._scraper.exposition

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:
        patch.setattr(exposition, "render", broken)
        status, _, body = get(reporter.url)
    assert status == 500
    assert b"could not render" in body
    assert "boom" in caplog.text
    values = samples(get(reporter.url)[2])
    key = ("radiosonde_reporter_errors_total", (("kind", "render"), ("reporter", reporter.name)))
    assert values[key] == 1
    assert reporter.errors == {"render": 1}


def test_values_openmetrics_cannot_carry_are_left_out_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    balance = m.sum("ledger.entry.stop.amount")  # a counter by default, yet it goes negative
    with PrometheusReporter([balance], port=0) as reporter:
        radiosonde.execute("ledger.entry.stop", {"amount": -5})
        _, _, text = get(reporter.url)
        _, _, om = get(reporter.url, {"Accept": PROMETHEUS_ACCEPT})
        _, _, after = get(reporter.url)
    assert samples(text)[("ledger_entry_stop_amount_total", ())] == -5
    assert ("ledger_entry_stop_amount_total", ()) not in samples(om, openmetrics=True)
    assert reporter.errors == {"invalid_sample": 1}
    key = (
        "radiosonde_reporter_errors_total",
        (("kind", "invalid_sample"), ("reporter", reporter.name)),
    )
    assert samples(after)[key] == 1
    assert 'prometheus_type": "gauge"' in caplog.text  # the log says how to fix it


def test_concurrent_scrapes_while_threads_execute(reporter: PrometheusReporter) -> None:
    stop = threading.Event()
    results: list[int] = []

    def scrape() -> None:
        while not stop.is_set():
            results.append(get(reporter.url, {"Accept-Encoding": "gzip"})[0])

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for thread in scrapers:
        thread.start()
    workers = [
        threading.Thread(target=lambda: [checkout(1) for _ in range(2000)]) for _ in range(4)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    for thread in scrapers:
        thread.join()
    assert results and set(results) == {200}
    values = samples(get(reporter.url)[2])
    assert values[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 8000
    assert values[("shop_checkout_stop_duration_seconds_count", (("status", "ok"),))] == 8000


# -- never break the application -------------------------------------------------------------


def test_bad_events_never_raise_into_execute_and_are_counted(reporter: PrometheusReporter) -> None:
    def explode(measurements: Any) -> float:
        raise ZeroDivisionError

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with PrometheusReporter(
        [
            m.sum("bad.thing.happened.x", measurement=explode),
            m.last_value("bad.thing.happened.value", tags=["who"]),
        ],
        port=0,
    ) as bad:
        radiosonde.execute("bad.thing.happened", {"value": "not a number"}, {"who": "me"})
        radiosonde.execute("bad.thing.happened", {"value": 1.0}, {})  # tag missing
        radiosonde.execute("bad.thing.happened", {"value": 1.0}, {"who": Unprintable()})
        radiosonde.execute("bad.thing.happened", None, None)
        status, _, body = get(bad.url)
    assert status == 200
    dropped = {
        labels: value
        for (name, labels), value in samples(body).items()
        if name == "radiosonde_metrics_dropped_total"
    }
    reasons = {dict(labels)["reason"]: value for labels, value in dropped.items()}
    assert reasons["error"] >= 1  # explode() and the unprintable tag
    assert reasons["invalid_measurement"] == 1
    assert reasons["missing_tag"] >= 1


def test_self_metrics_are_exported_and_can_be_left_out() -> None:
    with PrometheusReporter(shop_metrics(), port=0) as with_self:
        checkout(5)
        text = with_self.render().decode()
    assert "# TYPE radiosonde_metrics_series gauge" in text
    assert "# TYPE radiosonde_metrics_overflow_total counter" in text
    assert "# TYPE radiosonde_metrics_dropped_total counter" in text
    assert "# TYPE radiosonde_reporter_errors_total counter" in text
    series = samples(text.encode())
    key = (
        "radiosonde_metrics_series",
        (
            ("aggregator", with_self.name),
            ("kind", "counter"),
            ("metric", "shop.checkout.stop.duration"),
        ),
    )
    assert series[key] == 1
    alone = PrometheusReporter(shop_metrics(), port=0, include_self_metrics=False)
    assert b"radiosonde_" not in alone.render()


def test_overflow_series_past_the_series_limit(reporter: PrometheusReporter) -> None:
    with PrometheusReporter(
        [m.counter("api.call.stop.duration", tags=["user"], max_series=3)], port=0
    ) as limited:
        for user in range(10):
            radiosonde.execute("api.call.stop", {}, {"user": str(user)})
        values = samples(limited.render())
    assert values[("api_call_stop_duration_total", (("overflow", "true"),))] == 7
    overflow = {
        dict(labels)["metric"]: value
        for (name, labels), value in values.items()
        if name == "radiosonde_metrics_overflow_total"
    }
    assert overflow["api.call.stop.duration"] == 7


def test_namespace(reporter: PrometheusReporter) -> None:
    with PrometheusReporter(shop_metrics(), port=0, namespace="acme") as named:
        checkout(5)
        text = named.render()
    assert b"acme_shop_checkout_stop_duration_total{" in text
    assert b"\nradiosonde_metrics_series{" in text


# -- WSGI and ASGI ---------------------------------------------------------------------------


def test_wsgi_app_under_wsgiref() -> None:
    reporter = PrometheusReporter(shop_metrics(), port=0)
    app = wsgiref.validate.validator(reporter.wsgi_app())  # also checks WSGI compliance
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_QuietWSGIHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        checkout(5)  # counted: creating the app attached the reporter
        url = f"http://127.0.0.1:{server.server_port}/anywhere/it/is/mounted"
        status, headers, body = get(url)
        assert status == 200
        assert headers["Content-Type"] == TEXT_CONTENT_TYPE
        assert samples(body)[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 1
        status, headers, body = get(url, {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        assert headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body).endswith(b"# EOF\n")
        assert get(url, method="HEAD")[2] == b""
        assert get(url, method="POST")[0] == 405
    finally:
        server.shutdown()
        server.server_close()
        reporter.stop()


class _QuietWSGIHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ASGIClient:
    """Calls an ASGI app the way a server does: scope, receive, send."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(
        self, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": "/metrics",
            "raw_path": b"/metrics",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (headers or {}).items()
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        start, body = sent
        assert start["type"] == "http.response.start"
        assert body["type"] == "http.response.body"
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], response_headers, body["body"]


def test_asgi_app_speaks_the_asgi_protocol() -> None:
    reporter = PrometheusReporter(shop_metrics(), port=0)
    client = ASGIClient(reporter.asgi_app())
    try:
        checkout(5)
        status, headers, body = client.request()
        assert status == 200
        assert headers["content-type"] == TEXT_CONTENT_TYPE
        assert int(headers["content-length"]) == len(body)
        assert samples(body)[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 1

        status, headers, body = client.request(
            headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip, br"}
        )
        assert headers["content-type"] == OPENMETRICS_CONTENT_TYPE
        assert headers["content-encoding"] == "gzip"
        assert samples(gzip.decompress(body), openmetrics=True)

        status, headers, body = client.request("HEAD")
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 0
        assert client.request("DELETE")[0] == 405
        assert client.request(headers={"Accept": "\u00ff;;q=x"})[0] == 200
    finally:
        reporter.stop()


def test_asgi_app_handles_lifespan() -> None:
    app = make_asgi_app(Aggregator(shop_metrics()))
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))  # type: ignore[arg-type]
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_module_level_apps_serve_an_aggregator_of_your_own() -> None:
    with Aggregator(shop_metrics()) as aggregator:
        checkout(5)
        wsgi = make_wsgi_app(aggregator, namespace="mine")
        asgi = make_asgi_app(aggregator)
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            captured["status"], captured["headers"] = status, dict(headers)

        body = b"".join(wsgi({"REQUEST_METHOD": "GET"}, start_response))
        assert captured["status"] == "200 OK"
        assert samples(body)[("mine_shop_checkout_stop_duration_total", (("status", "ok"),))] == 1
        status, _, body = ASGIClient(asgi).request()
        assert status == 200
        assert samples(body)[("shop_checkout_stop_duration_total", (("status", "ok"),))] == 1


def test_the_apps_answer_500_when_rendering_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    reporter = PrometheusReporter(shop_metrics(), port=0)
    try:
        client = ASGIClient(reporter.asgi_app())
        monkeypatch.setattr(reporter.aggregator, "snapshot_rows", lambda **kw: 1 / 0)
        assert client.request()[0] == 500
        captured: dict[str, Any] = {}
        reporter.wsgi_app()({}, lambda status, headers: captured.update(status=status))
        assert captured["status"] == "500 Internal Server Error"
    finally:
        reporter.stop()
