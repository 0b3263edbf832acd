"""StatsDReporter against the real npm `statsd` daemon (tests/servers.StatsDDaemon).

What the reporter sends is read back through the daemon's admin interface (TCP `counters`,
`gauges`, `timers`), so these tests check what a real server makes of our datagrams: values,
names, tags folded into keys, sample rates, and that it never saw a bad line. Without the
daemon they skip locally and fail under CI=true (`bash scripts/bootstrap.sh --servers`).
"""

from __future__ import annotations

import random
import re
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import radiosonde
from radiosonde import metrics as m
from radiosonde.reporters import _statsd_format as fmt
from radiosonde.reporters.statsd import StatsDReporter
from tests.servers import StatsDDaemon

pytestmark = pytest.mark.server

EVENT = ("shop", "checkout", "stop")


def reporter(daemon: StatsDDaemon, metrics: list[m.Metric], **options: Any) -> StatsDReporter:
    options.setdefault("flush_interval", 3600)  # stop() flushes; tests never wait on a timer
    return StatsDReporter(metrics, daemon.host, daemon.port, **options)


def execute(measurements: dict[str, Any] | None = None, **metadata: Any) -> None:
    radiosonde.execute(EVENT, measurements or {}, metadata)


def test_counters_gauges_and_timers_arrive(statsd: StatsDDaemon) -> None:
    metrics = [
        m.counter("shop.checkout.stop.count", tags=["method", "status"]),
        m.sum("shop.checkout.stop.amount"),
        m.last_value("shop.checkout.stop.basket"),
        m.last_value("shop.checkout.stop.balance"),
        m.summary("shop.checkout.stop.duration", unit=("nanosecond", "millisecond")),
    ]
    with reporter(statsd, metrics, prefix="app"):
        for i in range(10):
            execute(
                {"amount": 2.5, "basket": i, "balance": -7.25, "duration": (i + 1) * 1_000_000},
                method="POST",
                status=201 if i else 500,
            )
    counters = statsd.wait_for(lambda: statsd.counters() or None)
    assert counters == {
        "app.shop.checkout.stop.count.POST.201": 9,
        "app.shop.checkout.stop.count.POST.500": 1,
        "app.shop.checkout.stop.amount": 25,
    }
    # A negative gauge is a value, not a decrement of the previous one.
    assert statsd.gauges() == {
        "app.shop.checkout.stop.basket": 9,
        "app.shop.checkout.stop.balance": -7.25,
    }
    assert statsd.timers() == {"app.shop.checkout.stop.duration": list(range(1, 11))}


def test_datadog_tags_reach_the_daemon(statsd: StatsDDaemon) -> None:
    metrics = [
        m.counter("shop.checkout.stop.count", tags=["method"]),
        m.summary("shop.checkout.stop.duration", reporter_options={"report_as": "timer"}),
    ]
    options = {"formatter": "datadog", "global_tags": {"env": "prod"}}
    with reporter(statsd, metrics, **options):
        execute({"duration": 3}, method="GET")
        execute({"duration": 4}, method="GET")
    # The daemon folds DogStatsD tags into its key: name;k=v;k2=v2
    assert statsd.wait_for(statsd.counters) == {"shop.checkout.stop.count;method=GET;env=prod": 2}
    assert statsd.timers() == {"shop.checkout.stop.duration;env=prod": [3, 4]}


def test_sampled_counters_are_scaled_back_by_the_daemon(statsd: StatsDDaemon) -> None:
    metric = m.counter("shop.checkout.stop.count", reporter_options={"sampling_rate": 0.5})
    random.seed(99)
    with reporter(statsd, [metric]):
        for _ in range(2000):
            execute()
    total = statsd.wait_for(lambda: statsd.counters().get("shop.checkout.stop.count"))
    # Each sent line carries |@0.5: the daemon counts every sampled event twice.
    assert total % 2 == 0
    assert 1700 <= total <= 2300  # 2000 expected; 5 sigma ~ 220


def test_sum_as_relative_gauge_accumulates_across_flushes(statsd: StatsDDaemon) -> None:
    metric = m.sum("shop.checkout.stop.stock", reporter_options={"report_as": "gauge"})
    with reporter(statsd, [metric]) as r:
        execute({"stock": 5})
        r.flush()
        statsd.wait_for(lambda: statsd.gauges().get("shop.checkout.stop.stock") == 5)
        execute({"stock": -3})
        execute({"stock": -4})
    statsd.wait_for(lambda: statsd.gauges().get("shop.checkout.stop.stock") == -2)


def test_multi_value_timers_arrive_whole(statsd: StatsDDaemon) -> None:
    metric = m.summary("shop.checkout.stop.duration")
    with reporter(statsd, [metric], multi_value=True, mtu=128) as r:
        for i in range(200):
            execute({"duration": i / 4})
        assert r.flush() > 1  # several datagrams, each of several values
    statsd.wait_for(lambda: len(statsd.timers().get("shop.checkout.stop.duration", [])) == 200)
    assert sorted(statsd.timers()["shop.checkout.stop.duration"]) == [i / 4 for i in range(200)]


def test_unix_datagram_socket_reaches_the_daemon() -> None:
    # The daemon has no Unix datagram server; the fixture relays the socket's datagrams to it.
    with StatsDDaemon(unix_socket=True) as daemon:
        assert daemon.socket_path is not None
        metric = m.counter("shop.checkout.stop.count", tags=["method"])
        with StatsDReporter([metric], socket_path=daemon.socket_path, flush_interval=3600):
            for _ in range(5):
                execute(method="GET")
        daemon.wait_for(lambda: daemon.counters() == {"shop.checkout.stop.count.GET": 5})


def test_four_threads_lose_no_update(statsd: StatsDDaemon) -> None:
    metric = m.counter("shop.checkout.stop.count", tags=["worker"])
    total = m.sum("shop.checkout.stop.amount")
    per_thread = 25_000
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        start.wait()
        for _ in range(per_thread):
            execute({"amount": 1}, worker=worker % 2)

    # A short interval: the flusher drains while the threads write.
    with reporter(statsd, [metric, total], flush_interval=0.01) as r:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    expected = {
        "shop.checkout.stop.count.0": 2 * per_thread,
        "shop.checkout.stop.count.1": 2 * per_thread,
        "shop.checkout.stop.amount": 4 * per_thread,
    }
    statsd.wait_for(lambda: statsd.counters() == expected, timeout=10)
    assert r.stats()["flushes"] > 2


def _daemon_key(name: str, tag_field: str) -> str:
    """The key the Etsy daemon (0.9.0 stats.js) files a DogStatsD line under."""
    key = name
    if tag_field:
        tags = tag_field[2:].split(",")
        key += ";" + ";".join(t.replace(";", "_", 1).replace(":", "=", 1) for t in tags)
    key = re.sub(r"\s+", "_", key).replace("/", "-")
    return re.sub(r"[^a-zA-Z_\-0-9.;=]", "", key)


tag_values = st.text(st.characters(codec=None), max_size=20)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=tag_values, formatter=st.sampled_from(["standard", "datadog"]))
def test_any_tag_value_is_one_good_line_for_the_daemon(
    statsd_daemon: StatsDDaemon, value: str, formatter: str
) -> None:
    daemon = statsd_daemon  # not the `statsd` fixture: hypothesis runs many examples per call
    daemon.reset()
    bad = daemon.bad_lines()
    metric = m.counter("shop.checkout.stop.count", tags=["route"])
    with reporter(daemon, [metric], formatter=formatter, global_tags={"env": "x"}):
        execute(route=value)
        execute(route=value)
    namer = fmt.SeriesNamer(formatter, None, {"env": "x"})  # type: ignore[arg-type]
    key = _daemon_key(*namer.series(metric.name, metric.tags, [value]))
    counters = daemon.wait_for(lambda: daemon.counters() or None)
    assert counters == {key: 2}
    assert daemon.bad_lines() == bad
