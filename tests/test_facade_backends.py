"""The metrics facade's backends (radiosonde.reporters.facade) and the APIs they stand on:
Aggregator.add_metric/record, PrometheusReporter.add_metric, StatsDReporter.record.

The Prometheus backend is scraped by a real Prometheus and its exposition judged by promtool and
prometheus_client's parsers; the StatsD backend talks to the real npm daemon (tests/servers.py).
Tests needing a real server skip when it is missing, and fail under CI=true.
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from prometheus_client import parser as prometheus_parser
from prometheus_client.openmetrics import parser as openmetrics_parser

import radiosonde
from radiosonde import Metrics, config
from radiosonde import metrics as m
from radiosonde.aggregation import Aggregator, MetricSnapshot
from radiosonde.reporters.facade import PrometheusBackend, StatsDBackend
from radiosonde.reporters.prometheus import PrometheusNameError, PrometheusReporter
from radiosonde.reporters.statsd import StatsDReporter
from tests._realserver import free_port
from tests.servers import PrometheusServer, StatsDDaemon, promtool_check_metrics

DURATIONS_MS = (5, 5, 50, 50, 50, 50, 500)  # 2 in (2.5, 5], 4 in (25, 50], 1 in (250, 500]


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PROMETHEUS_PORT", raising=False)
    monkeypatch.delenv("PROMETHEUS_HOST", raising=False)
    config._reset_for_tests()
    yield
    config._reset_for_tests()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def samples(text: str, openmetrics: bool = False) -> dict[tuple[Any, ...], float]:
    parser = openmetrics_parser if openmetrics else prometheus_parser
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def use_the_facade(metrics: Metrics) -> None:
    metrics.increment("comments.created", region="eu")
    metrics.increment("comments.created", region="eu")
    metrics.increment("comments.created", 2.5, region="eu")
    metrics.gauge("users.online", 42, region="us-east")
    for ms in DURATIONS_MS:
        metrics.histogram("request.duration", ms, route="/api/comments")


def hammer(action: Any, threads: int = 4, times: int = 5000) -> None:
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(times):
            action()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


# -- Aggregator.add_metric / record -------------------------------------------------------------


def by_name(snapshot: list[MetricSnapshot]) -> dict[str, list[Any]]:
    return {
        f"{s.metric.kind}:{s.metric.name}": [
            (x.tags, x.value, x.count, x.sum, x.bucket_counts, x.quantiles) for x in s.series
        ]
        for s in snapshot
    }


@pytest.mark.parametrize("bound", [False, True], ids=["record", "recorder"])
def test_record_folds_values_exactly_like_events(bound: bool) -> None:
    def definitions() -> list[m.Metric]:
        return [
            m.counter("job.run.stop.duration", tags=["queue"]),
            m.sum("job.run.stop.duration", unit=("millisecond", "second"), tags=["queue"]),
            m.last_value("job.run.stop.duration", tags=["queue"]),
            m.summary("job.run.stop.duration", tags=["queue"]),
            m.distribution("job.run.stop.duration", tags=["queue"]),
        ]

    values: list[tuple[Any, str]] = [
        (3, "a"),
        (0.5, "b"),
        (7000.0, "a"),
        (0, "b"),
        (-2.0, "a"),
        (float("inf"), "a"),
        (10**400, "a"),  # too large for a float: skipped by both
        (float("nan"), "b"),  # skipped by both, except counters (they never read it)
    ]
    with Aggregator(definitions()) as fed:
        for value, queue in values:
            radiosonde.execute("job.run.stop", {"duration": value}, {"queue": queue})
    direct = Aggregator(definitions())
    for metric in direct.metrics:
        record = direct.recorder(metric) if bound else partial(direct.record, metric)
        for value, queue in values:
            record(value, (queue,))
    assert by_name(direct.snapshot()) == by_name(fed.snapshot())
    assert [s.dropped for s in direct.stats()] == [s.dropped for s in fed.stats()]


def test_record_keeps_the_series_limit_and_counts_skips() -> None:
    metric = m.sum("job.run.stop.cost", tags=["customer"], max_series=2)
    aggregator = Aggregator([metric])
    for customer in ("a", "b", "c", "d"):
        assert aggregator.record(metric, 1.0, (customer,))
    assert not aggregator.record(metric, float("nan"), ("a",))
    assert not aggregator.record(metric, "12", ("a",))  # type: ignore[arg-type]
    assert not aggregator.record(metric, True, ("a",))
    assert not aggregator.record(metric, 1.0, ("a", "extra"))
    assert aggregator.record(metric, 2, (7,))  # type: ignore[arg-type]  # tag made text
    [series] = aggregator.snapshot()
    assert [(s.tags, s.value) for s in series.series] == [
        ({"customer": "a"}, 1.0),
        ({"customer": "b"}, 1.0),
        ({"overflow": "true"}, 4.0),
    ]
    [stats] = aggregator.stats()
    assert stats.overflow == 3
    assert stats.dropped == {"invalid_measurement": 3, "missing_tag": 1}


def test_record_refuses_a_metric_it_does_not_hold() -> None:
    with pytest.raises(ValueError, match="add_metric"):
        Aggregator([]).record(m.sum("job.run.stop.cost"), 1.0)


def test_add_metric_attaches_only_when_asked() -> None:
    fed = m.counter("job.run.stop.count")
    direct = m.counter("job.run.stop.total", event_name="job.run.stop")
    aggregator = Aggregator([])
    with aggregator:
        aggregator.add_metric(fed)
        aggregator.add_metric(direct, attach=False)
        radiosonde.execute("job.run.stop", {}, {})
        aggregator.detach()
        aggregator.attach()  # attaching again keeps the direct metric off the events
        radiosonde.execute("job.run.stop", {}, {})
        aggregator.record(direct, 1.0)
    assert [s.metric for s in aggregator.snapshot()] == [fed, direct]
    assert [s.series[0].value for s in aggregator.snapshot()] == [2.0, 1.0]
    with pytest.raises(ValueError, match="defined twice"):
        aggregator.add_metric(m.counter("job.run.stop.count"))
    with pytest.raises(ValueError, match="not a metric definition"):
        aggregator.add_metric("job.run.stop.count")  # type: ignore[arg-type]


def test_a_metric_added_before_attach_is_fed_once_attached() -> None:
    aggregator = Aggregator([])
    metric = m.counter("job.run.stop.count")
    aggregator.add_metric(metric)
    radiosonde.execute("job.run.stop", {}, {})
    with aggregator:
        radiosonde.execute("job.run.stop", {}, {})
    assert aggregator.snapshot()[0].series[0].value == 1.0


# -- PrometheusReporter.add_metric ---------------------------------------------------------------


def test_reporter_add_metric_validates_like_construction() -> None:
    declared = m.counter("shop.checkout.stop.count")
    reporter = PrometheusReporter([declared], port=0, include_self_metrics=False)
    with pytest.raises(PrometheusNameError, match="both need the Prometheus name"):
        reporter.add_metric(m.last_value("shop.checkout.stop.count"))
    with pytest.raises(ValueError, match="defined twice"):
        reporter.add_metric(
            m.counter("shop.checkout.stop.count", reporter_options={"prometheus_name": "other"})
        )
    with pytest.raises(PrometheusNameError, match="'le'"):
        reporter.add_metric(m.distribution("shop.checkout.stop.duration", tags=["le"]))
    assert reporter.metrics == (declared,)  # nothing changed


def test_reporter_add_metric_serves_it_from_now_on() -> None:
    with PrometheusReporter([], port=0, include_self_metrics=False) as reporter:
        summary = m.summary("shop.checkout.stop.items")
        reporter.add_metric(summary)
        radiosonde.execute("shop.checkout.stop", {"items": 3}, {})
        values = samples(fetch(reporter.url))
    assert values[("shop_checkout_stop_items", (("quantile", "0.5"),))] == pytest.approx(3, 0.01)
    assert values[("shop_checkout_stop_items_count", ())] == 1


# -- PrometheusBackend ---------------------------------------------------------------------------


def test_metrics_default_construction_serves_on_prometheus_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("PROMETHEUS_PORT", str(port))
    config._reset_for_tests()
    with Metrics() as metrics:
        [backend] = metrics.backends
        assert isinstance(backend, PrometheusBackend)
        metrics.increment("comments.created", region="eu")
        text = fetch(f"http://127.0.0.1:{port}/metrics")
    assert samples(text)[("comments_created_total", (("region", "eu"),))] == 1
    with pytest.raises(OSError):  # stopped with the facade
        fetch(f"http://127.0.0.1:{port}/metrics")


def test_configure_sets_the_port_too() -> None:
    port = free_port()
    config.configure(prometheus_port=port)
    backend = PrometheusBackend()
    assert backend.reporter.port == port


def test_facade_metrics_render_as_counter_gauge_and_histogram() -> None:
    backend = PrometheusBackend(port=0)
    with Metrics(backends=[backend]) as metrics:
        use_the_facade(metrics)
        text = fetch(backend.reporter.url)
    values = samples(text)
    assert values[("comments_created_total", (("region", "eu"),))] == 4.5
    assert values[("users_online", (("region", "us-east"),))] == 42
    route = ("route", "/api/comments")
    assert values[("request_duration_bucket", (("le", "5.0"), route))] == 2
    assert values[("request_duration_bucket", (("le", "50.0"), route))] == 6
    assert values[("request_duration_count", (route,))] == 7
    assert values[("request_duration_sum", (route,))] == 710
    assert "# TYPE comments_created_total counter" in text
    assert "# TYPE request_duration histogram" in text
    # The sketch's quantiles are there for other readers of the aggregator.
    [histogram] = [
        s for s in backend.reporter.aggregator.snapshot() if s.metric.name == "request.duration"
    ]
    assert histogram.series[0].quantiles[0.5] == pytest.approx(50, rel=0.01)


@pytest.mark.server
def test_the_exposition_passes_promtool_and_both_parsers() -> None:
    backend = PrometheusBackend(port=0)
    with Metrics(backends=[backend]) as metrics:
        use_the_facade(metrics)
        metrics.increment("http.status.5xx", route='odd "route"\n')
        metrics.increment("comments.created", user="x")  # tag mismatch: fitted, still valid
        text = backend.reporter.render()
        om = backend.reporter.render(openmetrics=True)
    ok, output = promtool_check_metrics(text)
    assert ok, f"promtool: {output}\n{text.decode()}"
    assert samples(text.decode())[("http_status_5xx_total", (("route", 'odd "route"\n'),))] == 1
    parsed = samples(om.decode(), openmetrics=True)
    assert parsed[("comments_created_total", (("region", "eu"),))] == 4.5
    assert parsed[("comments_created_total", (("region", ""),))] == 1


def test_one_reporter_serves_declared_and_facade_metrics() -> None:
    declared = m.counter("shop.checkout.stop.count", tags=["status"])
    with PrometheusReporter([declared], port=0) as reporter:
        backend = PrometheusBackend(reporter=reporter)
        with Metrics(backends=[backend]) as metrics:
            radiosonde.execute("shop.checkout.stop", {}, {"status": "ok"})
            metrics.increment("comments.created", region="eu")
            metrics.increment("shop.checkout.stop.count")  # taken by the declared counter
            values = samples(fetch(reporter.url))
        assert reporter.running  # the backend leaves a reporter it was given running
    assert values[("shop_checkout_stop_count_total", (("status", "ok"),))] == 1
    assert values[("comments_created_total", (("region", "eu"),))] == 1
    assert backend.stats()["name_clash"] == 1
    # Visible on the endpoint as one of radiosonde's self-metrics.
    assert [
        value
        for (name, labels), value in values.items()
        if name == "radiosonde_reporter_errors_total" and ("kind", "name_clash") in labels
    ] == [1]


def test_tag_key_mismatches_are_fitted_to_the_first_call_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = PrometheusBackend(port=0)
    with caplog.at_level(logging.WARNING, logger="radiosonde"), Metrics(backends=[backend]) as f:
        f.increment("jobs.done", queue="high", worker=1)
        f.increment("jobs.done", queue="low")  # worker missing -> ""
        f.increment("jobs.done", queue="low", worker=2, host="h1")  # host dropped
        f.increment("jobs.done", worker=2, queue="low")  # same keys, other order: fine
        f.histogram("jobs.wait", 3, le="x", queue="high")  # "le" cannot be a histogram label
        values = samples(fetch(backend.reporter.url))
    assert values[("jobs_done_total", (("queue", "high"), ("worker", "1")))] == 1
    assert values[("jobs_done_total", (("queue", "low"), ("worker", "")))] == 1
    assert values[("jobs_done_total", (("queue", "low"), ("worker", "2")))] == 2
    assert values[("jobs_wait_count", (("queue", "high"),))] == 1
    stats = backend.stats()
    assert (stats["tag_mismatch"], stats["calls"], stats["names"]) == (3, 5, 2)
    logged = [r.getMessage() for r in caplog.records if "tag_mismatch" in r.getMessage()]
    assert len(logged) == 2  # once per name
    assert "missing keys get the value ''" in logged[0]


def test_a_name_clash_is_skipped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = PrometheusBackend(port=0)
    with caplog.at_level(logging.WARNING, logger="radiosonde"), Metrics(backends=[backend]) as f:
        f.increment("jobs.done")
        for _ in range(3):
            f.gauge("jobs.done", 5)  # the gauge jobs_done clashes with the counter's family
        f.histogram("jobs", 1)
        f.gauge("jobs.count", 1)  # claimed by the histogram jobs (jobs_count)
        values = samples(fetch(backend.reporter.url))
        assert f.stats()["backend_failures"] == 0
    assert values[("jobs_done_total", ())] == 1
    assert ("jobs_done", ()) not in values
    assert backend.stats()["name_clash"] == 4
    clashes = [r.getMessage() for r in caplog.records if "name_clash" in r.getMessage()]
    assert len(clashes) == 2  # once per name
    assert "both need the Prometheus name 'jobs_done'" in clashes[0]


def test_names_past_max_names_are_skipped_and_counted() -> None:
    backend = PrometheusBackend(port=0, max_names=2)
    with Metrics(backends=[backend]) as metrics:
        for name in ("a.one", "a.two", "a.three", "a.four", "a.one"):
            metrics.increment(name)
        metrics.gauge("a.three", 1)  # the limit is per kind
    stats = backend.stats()
    assert (stats["names"], stats["too_many_names"], stats["calls"]) == (3, 2, 4)
    families = {name for name, _ in backend.reporter.families.values()}
    assert {"a_one", "a_two", "a_three"} <= families
    assert "a_four" not in families


def test_series_limit_and_histogram_buckets() -> None:
    backend = PrometheusBackend(
        port=0, max_series=2, histogram_buckets={"payload.size": [100, 1000]}
    )
    with Metrics(backends=[backend]) as metrics:
        for user in range(5):
            metrics.increment("logins", user=user)
        metrics.histogram("payload.size", 512)
        values = samples(fetch(backend.reporter.url))
    assert values[("logins_total", (("overflow", "true"),))] == 3
    assert values[("payload_size_bucket", (("le", "1000.0"),))] == 1
    assert values[("payload_size_bucket", (("le", "100.0"),))] == 0


def test_four_threads_lose_no_increment() -> None:
    backend = PrometheusBackend(port=0)
    with Metrics(backends=[backend]) as metrics:

        def work() -> None:
            metrics.increment("jobs.done", queue="q")
            metrics.histogram("jobs.wait", 2.0, queue="q")

        hammer(work, threads=4, times=2500)
        values = samples(fetch(backend.reporter.url))
    assert values[("jobs_done_total", (("queue", "q"),))] == 10_000
    assert values[("jobs_wait_count", (("queue", "q"),))] == 10_000
    assert backend.stats()["calls"] == 20_000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 0, "reporter": "r"}, "not both"),
        ({"port": 0, "max_names": 0}, "max_names"),
        ({"port": 0, "max_series": -1}, "max_series"),
        ({"port": 0, "histogram_buckets": [3, 2]}, "increasing"),
        ({"port": 0, "histogram_buckets": {"x": ["a"]}}, "numbers"),
        ({"port": 70000}, "port"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    if options.get("reporter") == "r":
        options["reporter"] = PrometheusReporter([], port=0)
    with pytest.raises(ValueError, match=message):
        PrometheusBackend(**options)


# -- a real Prometheus ---------------------------------------------------------------------------


@pytest.mark.server
def test_prometheus_scrapes_the_facade_and_promql_reads_it() -> None:
    port = free_port()
    with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval="1s") as prometheus:
        with Metrics(backends=[PrometheusBackend(port=port)]) as metrics:
            use_the_facade(metrics)
            prometheus.wait_for_scrape()
        assert prometheus.value('comments_created_total{region="eu"}') == 4.5
        assert prometheus.value('users_online{region="us-east"}') == 42
        # The median (rank 3.5 of 7) lies in (25, 50], which holds ranks 3-6: Prometheus
        # interpolates 25 + 25 * 1.5 / 4 there.
        p50 = prometheus.value("histogram_quantile(0.5, request_duration_bucket)")
        assert p50 == pytest.approx(25 + 25 * 1.5 / 4)
        p90 = prometheus.value("histogram_quantile(0.9, request_duration_bucket)")
        assert p90 is not None and 250 < p90 <= 500
        assert prometheus.value('request_duration_count{route="/api/comments"}') == 7


# -- StatsDBackend -------------------------------------------------------------------------------


def statsd_backend(daemon: StatsDDaemon, **options: Any) -> StatsDBackend:
    options.setdefault("flush_interval", 3600)  # stop() flushes
    return StatsDBackend(daemon.host, daemon.port, **options)


@pytest.mark.server
def test_statsd_counters_gauges_and_timers_arrive(statsd: StatsDDaemon) -> None:
    backend = statsd_backend(statsd, prefix="app")
    with Metrics(backends=[backend]) as metrics:
        use_the_facade(metrics)
        metrics.gauge("balance", -7.25)
        metrics.increment("http.status.5xx", 1, route="/a b")
    counters = statsd.wait_for(statsd.counters)
    assert counters == {"app.comments.created.eu": 4.5, "app.http.status.5xx._a_b": 1}
    assert statsd.gauges() == {"app.users.online.us-east": 42, "app.balance": -7.25}
    assert statsd.timers() == {"app.request.duration._api_comments": list(DURATIONS_MS)}
    assert backend.stats()["calls"] == 13


@pytest.mark.server
def test_statsd_datadog_tags_reach_the_daemon(statsd: StatsDDaemon) -> None:
    backend = statsd_backend(
        statsd, formatter="datadog", global_tags={"env": "prod"}, histogram_as="timer"
    )
    with Metrics(backends=[backend]) as metrics:
        metrics.increment("jobs.done", queue="high", worker=1)
        metrics.increment("jobs.done", worker=1, queue="high")  # same series, other order
        metrics.gauge("jobs.queued", 3, queue="high")
        metrics.histogram("jobs.wait", 12.5)
    # The daemon folds DogStatsD tags into its key: name;k=v;k2=v2
    assert statsd.wait_for(statsd.counters) == {"jobs.done;queue=high;worker=1;env=prod": 2}
    assert statsd.gauges() == {"jobs.queued;queue=high;env=prod": 3}
    assert statsd.timers() == {"jobs.wait;env=prod": [12.5]}


def test_statsd_datadog_histograms_go_out_as_distributions_or_histograms() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        for histogram_as, wire in ((None, "d"), ("histogram", "h")):
            backend = StatsDBackend(
                "127.0.0.1",
                port,
                formatter="datadog",
                flush_interval=3600,
                histogram_as=histogram_as,  # type: ignore[arg-type]
            )
            with Metrics(backends=[backend]) as metrics:
                metrics.histogram("request.duration", 12.5, route="/api|x,y")
                metrics.histogram("request.duration", 3, route="/api|x,y")
            datagram = receiver.recv(65535).decode()
            assert datagram.split("\n") == [
                f"request.duration:12.5|{wire}|#route:/api_x_y",
                f"request.duration:3|{wire}|#route:/api_x_y",
            ]


@pytest.mark.server
def test_statsd_four_threads_lose_no_increment(statsd: StatsDDaemon) -> None:
    # Flushing every 10 ms while the threads run: no update may fall between two drains.
    backend = statsd_backend(statsd, flush_interval=0.01)
    with Metrics(backends=[backend]) as metrics:
        hammer(lambda: metrics.increment("jobs.done", queue="q"), threads=4, times=5000)
    statsd.wait_for(lambda: statsd.counters().get("jobs.done.q") == 20_000, timeout=10)
    stats = backend.reporter.stats()
    assert stats["dropped_datagrams"] == stats["skipped"] == stats["dropped_series"] == 0


@pytest.mark.server
def test_statsd_shares_a_reporter_with_declared_metrics(statsd: StatsDDaemon) -> None:
    declared = m.counter("shop.checkout.stop.count")
    reporter = StatsDReporter([declared], statsd.host, statsd.port, flush_interval=3600)
    with reporter, Metrics(backends=[StatsDBackend(reporter=reporter)]) as metrics:
        radiosonde.execute("shop.checkout.stop", {}, {})
        metrics.increment("comments.created")
        assert reporter.flush() == 1  # one datagram carries both
    statsd.wait_for(
        lambda: statsd.counters() == {"shop.checkout.stop.count": 1, "comments.created": 1}
    )


def test_statsd_bad_values_limits_and_options_are_counted_or_refused() -> None:
    backend = StatsDBackend("127.0.0.1", 9, max_names=2, flush_interval=3600)
    with Metrics(backends=[backend]) as metrics:
        metrics.increment("a.one", float("inf"))
        metrics.increment("a.two")
        metrics.increment("a.three")
        assert metrics.stats()["backend_failures"] == 0
    stats = backend.stats()
    assert (stats["calls"], stats["skipped"], stats["too_many_names"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="datadog"):
        StatsDBackend("127.0.0.1", 9, histogram_as="distribution")
    with pytest.raises(ValueError, match="reporter's settings"):
        StatsDBackend(reporter=StatsDReporter([], "127.0.0.1", 9), prefix="x")
    with pytest.raises(ValueError, match="port"):
        StatsDBackend("127.0.0.1", 0)
    with pytest.raises(ValueError, match="timer"):
        StatsDReporter([], "127.0.0.1", 9).record("distribution", "x", 1.0)


def test_statsd_record_bounds_series_per_name_per_interval() -> None:
    reporter = StatsDReporter([], "127.0.0.1", 9, max_series=3, flush_interval=3600)
    assert [reporter.record("counter", "hits", 1, {"user": str(u)}) for u in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert reporter.record("counter", "other", 1)  # another name has its own room
    assert reporter.stats()["dropped_series"] == 2
    reporter.flush()  # a new interval
    assert reporter.record("counter", "hits", 1, {"user": "9"})
