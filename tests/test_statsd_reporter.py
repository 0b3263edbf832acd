"""StatsDReporter against plain sockets bound here: aggregation, mapping, limits, failures.

The npm daemon is in test_statsd_daemon.py; these tests read the raw datagrams so they can
check exactly what goes on the wire, and play the server's failures (absent, full, gone).
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import radiosonde
from radiosonde import config
from radiosonde import metrics as m
from radiosonde.reporters import _statsd_buffer
from radiosonde.reporters.statsd import ERROR_EVENT, StatsDReporter
from radiosonde.selfmetrics import REPORTER_ERROR_EVENT
from radiosonde.testing import capture_events
from tests.test_statsd_format import parse_line

EVENT = ("web", "request", "stop")


class Receiver:
    """A UDP or Unix datagram socket that the test reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)

    def datagrams(self, timeout: float = 0.2) -> list[bytes]:
        out = []
        self.sock.settimeout(timeout)
        while True:
            try:
                out.append(self.sock.recv(65_535))
            except (TimeoutError, BlockingIOError):
                return out
            self.sock.settimeout(0.05)

    def lines(self, timeout: float = 0.2) -> list[str]:
        return [line for d in self.datagrams(timeout) for line in d.decode().split("\n") if line]


@pytest.fixture
def udp() -> Iterator[tuple[Receiver, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield Receiver(sock), sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="rs-") as path:
        yield Path(path)


def reporter(port: int, metrics: list[m.Metric], **options: Any) -> StatsDReporter:
    options.setdefault("flush_interval", 3600)  # tests flush by hand
    return StatsDReporter(metrics, "127.0.0.1", port, **options)


def execute(measurements: dict[str, Any] | None = None, **metadata: Any) -> None:
    radiosonde.execute(EVENT, measurements or {}, metadata)


# -- construction ------------------------------------------------------------------------------

COUNT = m.counter("web.request.stop.count")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"formatter": "graphite"}, "formatter"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "8125"}, "port"),
        ({"host": ""}, "host"),
        ({"host": "bad host"}, "host"),
        ({"mtu": 10}, "mtu"),
        ({"mtu": 100_000}, "mtu"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"flush_interval": float("nan")}, "flush_interval"),
        ({"prefix": "my app"}, "prefix"),
        ({"global_tags": {"1x": "y"}}, "global tag"),
        ({"max_series": 0}, "max_series"),
        ({"socket_path": "/tmp/" + "x" * 120}, "socket_path"),
        ({"socket_path": ""}, "socket_path"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"host": "127.0.0.1", "port": 8125, **options}
    with pytest.raises(ValueError, match=message):
        StatsDReporter([COUNT], **args)


def test_bad_metrics_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="list of metrics"):
        StatsDReporter(COUNT, "127.0.0.1", 8125)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric definitions"):
        StatsDReporter(["web.request.count"], "127.0.0.1", 8125)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="both be sent as"):
        StatsDReporter([COUNT, m.counter("web.request.stop.count", tags=["x"])], "h", 1)


@pytest.mark.parametrize(
    ("metric", "formatter", "message"),
    [
        (m.sum("a.b", reporter_options={"report_as": "gauge"}), "datadog", "no relative gauges"),
        (m.summary("a.b", reporter_options={"report_as": "histogram"}), "standard", "timers"),
        (m.distribution("a.b", reporter_options={"report_as": "gauge"}), "datadog", "one of"),
        (m.counter("a.b", reporter_options={"report_as": "gauge"}), "standard", "no report_as"),
    ],
)
def test_impossible_report_as_fails_at_construction(
    metric: m.Metric, formatter: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        StatsDReporter([metric], "127.0.0.1", 8125, formatter=formatter)  # type: ignore[arg-type]


def test_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATSD_HOST", "10.1.2.3")
    monkeypatch.setenv("STATSD_PORT", "9125")
    config._reset_for_tests()
    try:
        r = StatsDReporter([COUNT])
        assert (r.host, r.port, r.address) == ("10.1.2.3", 9125, "10.1.2.3:9125")
        assert StatsDReporter([COUNT], port=1).address == "10.1.2.3:1"
        monkeypatch.setenv("STATSD_PORT", "nope")
        config._reset_for_tests()
        with pytest.raises(ValueError, match="STATSD_PORT"):
            StatsDReporter([COUNT])
    finally:
        config._reset_for_tests()


def test_defaults() -> None:
    config._reset_for_tests()
    r = StatsDReporter([COUNT])
    assert (r.address, r.formatter, r.mtu, r.flush_interval) == (
        "127.0.0.1:8125",
        "standard",
        1432,
        1.0,
    )
    assert r.metrics == (COUNT,)
    assert "stopped" in repr(r)


# -- aggregation and mapping -------------------------------------------------------------------


def test_each_kind_is_aggregated_per_interval(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metrics = [
        m.counter("web.request.stop.count", tags=["method"]),
        m.sum("web.request.stop.bytes"),
        m.last_value("web.request.stop.queue"),
        m.summary("web.request.stop.duration", unit=("nanosecond", "millisecond")),
        m.distribution("web.request.stop.size", measurement="bytes"),
    ]
    with reporter(port, metrics) as r:
        for i in range(1, 101):
            execute({"bytes": 0.5, "queue": i, "duration": 2_000_000}, method="GET")
        execute({"bytes": 1, "queue": 7, "duration": 1_000_000}, method="POST")
        r.flush()
        lines = receiver.lines()
        r.flush()  # nothing new: nothing sent
        assert receiver.lines(0.1) == []
    # Counters and sums: one total per series; last value: the latest; timers: every value.
    assert sorted(lines) == sorted(
        [
            "web.request.stop.bytes:51|c",
            "web.request.stop.count.GET:100|c",
            "web.request.stop.count.POST:1|c",
            "web.request.stop.queue:7|g",
            *["web.request.stop.duration:2|ms"] * 100,
            "web.request.stop.duration:1|ms",
            *["web.request.stop.size:0.5|ms"] * 100,
            "web.request.stop.size:1|ms",
        ]
    )


def test_datadog_mapping_tags_and_global_tags(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metrics = [
        m.counter("web.request.stop.count", tags=["method", "region"]),
        m.summary("web.request.stop.duration", tags=["method"]),
        m.distribution("web.request.stop.latency", measurement="duration"),
        m.last_value("web.request.stop.queue", reporter_options={"sampling_rate": 1}),
    ]
    options = {
        "formatter": "datadog",
        "prefix": "svc",
        "global_tags": {"env": "prod", "region": "eu"},
    }
    with reporter(port, metrics, **options):
        execute({"duration": 3, "queue": -2}, method="GET")
        execute({"duration": 4, "queue": -2}, method="GET", region="us")
    lines = receiver.lines()
    for line in lines:
        parse_line(line)
    # Metric tags first (a global tag is the default of a missing one), then global tags.
    assert sorted(lines) == [
        "svc.web.request.stop.count:1|c|#method:GET,region:eu,env:prod",
        "svc.web.request.stop.count:1|c|#method:GET,region:us,env:prod",
        "svc.web.request.stop.duration:3|h|#method:GET,env:prod,region:eu",
        "svc.web.request.stop.duration:4|h|#method:GET,env:prod,region:eu",
        "svc.web.request.stop.latency:3|d|#env:prod,region:eu",
        "svc.web.request.stop.latency:4|d|#env:prod,region:eu",
        "svc.web.request.stop.queue:-2|g|#env:prod,region:eu",
    ]


def test_report_as_options(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    std = [m.sum("web.request.stop.delta", reporter_options={"report_as": "gauge"})]
    with reporter(port, std) as r:
        execute({"delta": 5})
        execute({"delta": -2})
        r.flush()
        assert receiver.lines() == ["web.request.stop.delta:+3|g"]
        execute({"delta": -4})
    assert receiver.lines() == ["web.request.stop.delta:-4|g"]
    dd = [
        m.summary("web.request.stop.a", measurement="d", reporter_options={"report_as": "timer"}),
        m.distribution(
            "web.request.stop.b", measurement="d", reporter_options={"report_as": "histogram"}
        ),
    ]
    with reporter(port, dd, formatter="datadog"):
        execute({"d": 1})
    assert sorted(receiver.lines()) == ["web.request.stop.a:1|ms", "web.request.stop.b:1|h"]


def test_tag_values_from_metadata_are_kept_apart_and_merged_by_text(
    udp: tuple[Receiver, int],
) -> None:
    receiver, port = udp
    with reporter(port, [m.counter("web.request.stop.count", tags=["status"])]):
        execute(status=200)
        execute(status="200")  # the same series on the wire
        execute(status=[4, 0, 4])  # unhashable: keyed by its text
        execute(status=None)
    assert set(receiver.lines()) == {
        "web.request.stop.count.200:2|c",
        "web.request.stop.count._:1|c",
        "web.request.stop.count._4__0__4_:1|c",
    }


def test_negative_last_value_reaches_an_etsy_daemon_as_a_value(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    with reporter(port, [m.last_value("web.request.stop.temp")]):
        execute({"temp": -3.5})
    assert receiver.datagrams() == [b"web.request.stop.temp:0|g\nweb.request.stop.temp:-3.5|g"]


def test_computed_tags_keep_and_drop(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metrics = [
        m.counter(
            "web.request.stop.count",
            tags=["kind"],
            tag_values=lambda md: {"kind": md["path"].split("/")[1]},
            keep=lambda md: md.get("path", "").startswith("/"),
        ),
        m.sum(
            "web.request.stop.bytes",
            measurement=lambda ms, md: ms["size"] * 2,
            drop=lambda md: md.get("internal", False),
        ),
    ]
    with reporter(port, metrics) as r:
        execute({"size": 1}, path="/api/x")
        execute({"size": 1}, path="/api/y", internal=True)
        execute({"size": 1}, path="nope")
        execute({"size": 1}, path=3)  # keep raises: skipped
    assert sorted(receiver.lines()) == [
        "web.request.stop.bytes:6|c",
        "web.request.stop.count.api:2|c",
    ]
    # Not kept: the counter of "nope" and of 3 (keep raised); dropped: the sum of /api/y.
    assert r.stats()["skipped"] == 3


def test_bad_updates_are_skipped_and_counted(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metrics = [
        m.sum("web.request.stop.bytes", tags=["method"]),
        m.summary("web.request.stop.duration"),
        m.last_value("web.request.stop.queue"),
    ]
    with reporter(port, metrics) as r:
        execute({"bytes": 1, "duration": 1, "queue": 1}, method="GET")
        execute({"bytes": "1", "duration": None, "queue": True}, method="GET")
        execute(
            {"bytes": float("inf"), "duration": float("nan"), "queue": float("-inf")}, method="GET"
        )
        execute({"bytes": 1, "duration": 1, "queue": 1})  # sum lacks its tag; the others count
        execute({})
    assert sorted(receiver.lines()) == [
        "web.request.stop.bytes.GET:1|c",
        "web.request.stop.duration:1|ms",
        "web.request.stop.duration:1|ms",
        "web.request.stop.queue:1|g",
    ]
    assert r.stats()["skipped"] == 3 + 3 + 1 + 3


def test_global_tags_fill_missing_metadata(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metric = m.counter("web.request.stop.count", tags=["region", "method"])
    with reporter(port, [metric], global_tags={"region": "eu"}):
        execute(method="GET")
        execute(method="GET", region="us")
    assert sorted(receiver.lines()) == [
        "web.request.stop.count.eu.GET:1|c",
        "web.request.stop.count.us.GET:1|c",
    ]


def test_negative_timings_are_not_sent_to_an_etsy_daemon(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    with reporter(port, [m.summary("web.request.stop.d")]) as r:
        execute({"d": -1})
        execute({"d": 2})
    assert receiver.lines() == ["web.request.stop.d:2|ms"]
    assert r.stats()["invalid_values"] == 1


def test_sampling_sends_the_rate_and_samples_on_the_client(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metrics = [
        m.counter("web.request.stop.count", reporter_options={"sampling_rate": 0.25}),
        m.summary("web.request.stop.d", reporter_options={"sampling_rate": 0.25}),
    ]
    random.seed(1234)
    with reporter(port, metrics):
        for _ in range(4000):
            execute({"d": 1})
    lines = [parse_line(line) for line in receiver.lines()]
    counts = [p for p in lines if p.type == "c"]
    timers = [p for p in lines if p.type == "ms"]
    assert len(counts) == 1 and counts[0].rate == 0.25
    # ~1000 expected of each (each metric draws on its own); 5 sigma is ~140.
    assert 850 <= int(counts[0].values[0]) <= 1150
    assert 850 <= len(timers) <= 1150 and all(p.rate == 0.25 for p in timers)


def test_multi_value_timers_fit_the_mtu(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    with reporter(port, [m.summary("web.request.stop.d")], multi_value=True, mtu=200) as r:
        for i in range(300):
            execute({"d": i})
        sent = r.flush()
    datagrams = receiver.datagrams()
    assert len(datagrams) == sent > 1
    assert all(len(d) <= 200 for d in datagrams)
    values = [
        bit.split("|")[0]
        for d in datagrams
        for line in d.decode().split("\n")
        for bit in line.partition(":")[2].split(":")
    ]
    assert values == [str(i) for i in range(300)]


def test_datagrams_are_packed_up_to_the_mtu(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    with reporter(port, [m.counter("web.request.stop.count", tags=["i"])], mtu=256):
        for i in range(500):
            execute(i=i)
    datagrams = receiver.datagrams()
    assert all(len(d) <= 256 for d in datagrams)
    lines = sorted(line for d in datagrams for line in d.decode().split("\n"))
    assert lines == sorted(f"web.request.stop.count.{i}:1|c" for i in range(500))
    # Packed, not one line per datagram: ~30 bytes a line, 8 a datagram.
    assert len(datagrams) <= 500 // 7


def test_oversize_lines_are_dropped_counted_and_reported(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    metric = m.counter("web.request.stop.count", tags=["route"])
    with capture_events(ERROR_EVENT) as events, reporter(port, [metric], mtu=64) as r:
        execute(route="a" * 100)
        execute(route="ok")
        r.flush()
        assert receiver.lines() == ["web.request.stop.count.ok:1|c"]
        assert r.stats()["oversize_lines"] == 1
    assert [(e.metadata["kind"], e.measurements["dropped"]) for e in events] == [("dropped", 1)]


def test_counter_series_beyond_the_limit_wait_for_idle_ones_to_age_out(
    udp: tuple[Receiver, int],
) -> None:
    receiver, port = udp
    metrics = [
        m.counter("web.request.stop.count", tags=["i"]),
        m.counter("web.request.stop.own", tags=["i"], max_series=50),
    ]
    with reporter(port, metrics, max_series=10) as r:
        for i in range(100):
            execute(i=i)
        r.flush()
        lines = receiver.lines()
        assert sorted(x for x in lines if ".count." in x) == sorted(
            f"web.request.stop.count.{i}:1|c" for i in range(10)
        )
        assert len([x for x in lines if ".own." in x]) == 50
        assert r.stats()["dropped_series"] == 90 + 50
        execute(i=5)  # a known series counts
        execute(i=1000)  # a new one does not: the tables are full
        r.flush()
        assert sorted(receiver.lines()) == [
            "web.request.stop.count.5:1|c",
            "web.request.stop.own.5:1|c",
        ]
        # Series idle for two flushes leave the table: room again.
        r.flush()
        r.flush()
        execute(i=1000)
        r.flush()
        assert sorted(receiver.lines()) == [
            "web.request.stop.count.1000:1|c",
            "web.request.stop.own.1000:1|c",
        ]


def test_an_increment_racing_with_the_removal_of_an_idle_series_still_counts(
    udp: tuple[Receiver, int],
) -> None:
    receiver, port = udp
    with reporter(port, [COUNT], max_series=1) as r:
        execute()
        r.flush()
        assert receiver.lines() == ["web.request.stop.count:1|c"]
        table = r._collector._tables[0]
        held = table.series[()]  # what a thread holds between its lookup and its next()
        r.flush()
        r.flush()  # idle twice: out of the table
        assert () not in table.series
        next(held)  # ... and the racing thread's increment lands now
        execute()  # a new series under the same key
        r.flush()
        assert receiver.lines() == ["web.request.stop.count:2|c"]
        r.flush()
        assert receiver.lines(0.1) == []


def test_per_thread_series_beyond_the_limit_are_dropped_and_counted(
    udp: tuple[Receiver, int],
) -> None:
    receiver, port = udp
    metrics = [
        m.sum("web.request.stop.bytes", tags=["i"]),
        m.sum("web.request.stop.own", measurement="bytes", tags=["i"], max_series=50),
    ]
    with reporter(port, metrics, max_series=10) as r:
        for i in range(100):
            execute({"bytes": 1}, i=i)
        r.flush()
        lines = receiver.lines()
        # A full buffer is handed to the flusher whole, once per interval: 2 x the limit.
        assert len([x for x in lines if ".bytes." in x]) == 20
        assert len([x for x in lines if ".own." in x]) == 100
        assert r.stats()["dropped_series"] == 80
        # Next interval: room again.
        execute({"bytes": 1}, i=1000)
        r.flush()
        assert sorted(receiver.lines()) == [
            "web.request.stop.bytes.1000:1|c",
            "web.request.stop.own.1000:1|c",
        ]


def test_timer_values_beyond_the_buffer_are_dropped_and_counted(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    with reporter(port, [m.summary("web.request.stop.d")], max_samples=100) as r:
        for _ in range(150):
            execute({"d": 1})
        r.flush()
        assert len(receiver.lines()) == 100
        assert r.stats()["dropped_samples"] == 50
        execute({"d": 1})
        r.flush()
        assert len(receiver.lines()) == 1


# -- threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shared_counts", [True, False], ids=["shared-counts", "per-thread"])
def test_threads_lose_no_update(
    udp: tuple[Receiver, int], monkeypatch: pytest.MonkeyPatch, shared_counts: bool
) -> None:
    # Counters use shared counts under the GIL and per-thread buffers without it: test both.
    monkeypatch.setattr(_statsd_buffer, "SHARED_COUNTS", shared_counts)
    receiver, port = udp
    # Loopback UDP drops what a full receive buffer cannot take, silently: make room.
    receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    metrics = [
        m.counter("web.request.stop.count", tags=["t"]),
        m.sum("web.request.stop.bytes"),
        m.summary("web.request.stop.d", tags=["t"]),
    ]
    per_thread = 20_000
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch often, with the flusher running every 10 ms
    totals: dict[str, float] = {}

    def collect() -> None:
        for line in receiver.lines(0.05):
            name, _, rest = line.partition(":")
            for bit in rest.split(":"):  # name:1|ms:1|ms (multi-value) or name:3|c
                value, kind = bit.split("|")[:2]
                key = f"{name}|{kind}"
                totals[key] = totals.get(key, 0.0) + (1 if kind == "ms" else float(value))

    try:
        with reporter(
            port, metrics, flush_interval=0.01, max_samples=10**6, multi_value=True, mtu=8192
        ) as r:

            def work(t: int) -> None:
                for _ in range(per_thread):
                    execute({"bytes": 1, "d": 1}, t=t % 2)

            threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                collect()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(old)
    deadline = time.monotonic() + 5
    expected = {
        "web.request.stop.count.0|c": 2 * per_thread,
        "web.request.stop.count.1|c": 2 * per_thread,
        "web.request.stop.bytes|c": 4 * per_thread,
        "web.request.stop.d.0|ms": 2 * per_thread,
        "web.request.stop.d.1|ms": 2 * per_thread,
    }
    while totals != expected and time.monotonic() < deadline:
        collect()
    assert totals == expected
    stats = r.stats()
    assert stats["dropped_datagrams"] == stats["skipped"] == stats["dropped_samples"] == 0


def test_buffers_of_ended_threads_are_read_once_more_and_forgotten(
    udp: tuple[Receiver, int],
) -> None:
    receiver, port = udp
    with reporter(port, [m.sum("web.request.stop.bytes")]) as r:
        execute({"bytes": 1})
        r.flush()
        assert receiver.lines() == ["web.request.stop.bytes:1|c"]
        for _ in range(3):
            thread = threading.Thread(target=lambda: [execute({"bytes": 1}) for _ in range(10)])
            thread.start()
            thread.join()
        assert r.stats()["buffers"] == 4
        r.flush()
        assert receiver.lines() == ["web.request.stop.bytes:30|c"]
        assert r.stats()["buffers"] == 1  # the main thread's
        execute({"bytes": 1})
    assert receiver.lines() == ["web.request.stop.bytes:1|c"]


# -- lifecycle ---------------------------------------------------------------------------------


def test_start_stop_are_idempotent_and_detach(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    r = reporter(port, [COUNT], flush_interval=0.05)
    r.start()
    r.start()
    assert r.running and len(radiosonde.list_handlers(EVENT)) == 1
    execute()
    # The flusher thread sends without being asked.
    assert receiver.lines(2.0) == ["web.request.stop.count:1|c"]
    r.stop()
    r.stop()
    assert not r.running and radiosonde.list_handlers(EVENT) == []
    execute()
    r.flush()
    assert receiver.lines(0.1) == []
    # Started again, it works again.
    with r:
        execute()
    assert receiver.lines() == ["web.request.stop.count:1|c"]


def test_stop_sends_what_is_left(udp: tuple[Receiver, int]) -> None:
    receiver, port = udp
    with reporter(port, [COUNT]):
        execute()
        execute()
    assert receiver.lines() == ["web.request.stop.count:2|c"]


# -- failures never reach the application ----------------------------------------------------------


def _timed_executes(n: int) -> float:
    """Median seconds per execute over batches."""
    batches = []
    for _ in range(20):
        began = time.perf_counter()
        for _ in range(n):
            execute(method="GET")
        batches.append((time.perf_counter() - began) / n)
    return statistics.median(batches)


def test_dead_server_never_raises_nor_slows_execute() -> None:
    port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port.bind(("127.0.0.1", 0))
    dead_port = port.getsockname()[1]
    port.close()  # nothing listens there now: sends fail with ECONNREFUSED
    metric = m.counter("web.request.stop.count", tags=["method"])
    with capture_events(ERROR_EVENT, REPORTER_ERROR_EVENT) as events:
        with reporter(dead_port, [metric], flush_interval=0.01) as r:
            slow = _timed_executes(500)
            for _ in range(5):
                execute(method="GET")
                r.flush()
        baseline = _timed_executes(500)  # detached: no handler at all
    stats = r.stats()
    assert stats["send_errors"] >= 1
    assert stats["dropped_datagrams"] >= 1
    # No I/O on the hot path: the cost is a dict update, far below a millisecond, failing
    # server or not (generous bounds: the machine is shared).
    assert slow < 50e-6, f"{slow * 1e6:.1f} us per execute"
    assert slow < baseline + 20e-6
    errors = [e for e in events if e.event == ERROR_EVENT]
    assert errors and errors[0].metadata["kind"] == "send"
    assert isinstance(errors[0].metadata["reason"], ConnectionRefusedError)
    assert any(e.event == REPORTER_ERROR_EVENT for e in events)
    assert r.errors.get("send", 0) >= 1


def test_unresolvable_host_is_counted_not_raised() -> None:
    r = StatsDReporter([COUNT], "no-such-host.invalid", 8125, flush_interval=3600)
    with capture_events(ERROR_EVENT) as events, r:
        execute()
        assert r.flush() == 0
    assert r.stats()["connect_errors"] >= 1
    assert events[0].metadata["kind"] == "resolve"


def test_unix_datagram_socket(short_tmp: Path) -> None:
    path = str(short_tmp / "statsd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    receiver = Receiver(server)
    try:
        metrics = [COUNT, m.last_value("web.request.stop.q")]
        with StatsDReporter(metrics, socket_path=path, formatter="datadog", flush_interval=3600):
            execute({"q": 2})
        assert sorted(receiver.lines()) == ["web.request.stop.count:1|c", "web.request.stop.q:2|g"]
    finally:
        server.close()


def test_unix_socket_absent_then_present_then_gone(short_tmp: Path) -> None:
    path = str(short_tmp / "statsd.sock")
    with (
        capture_events(ERROR_EVENT) as events,
        StatsDReporter([COUNT], socket_path=Path(path), flush_interval=3600) as r,
    ):
        execute()
        assert r.flush() == 0  # nobody there yet
        assert r.stats()["connect_errors"] == 1
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        try:
            execute()
            assert r.flush() == 1
            assert Receiver(server).lines() == ["web.request.stop.count:1|c"]
        finally:
            server.close()
            os.unlink(path)
        execute()
        assert r.flush() == 0  # gone: counted, the socket is made again next time
        # ... and a new server at the same path gets the next flush.
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        try:
            execute()
            r.flush()
            assert Receiver(server).lines() == ["web.request.stop.count:1|c"]
        finally:
            server.close()
    kinds = [e.metadata["kind"] for e in events]
    assert kinds[0] == "connect" and "send" in kinds


def test_full_socket_buffer_drops_without_blocking(short_tmp: Path) -> None:
    path = str(short_tmp / "statsd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read
    server.bind(path)
    try:
        metric = m.counter("web.request.stop.count", tags=["i"])
        with (
            capture_events(ERROR_EVENT) as events,
            StatsDReporter([metric], socket_path=path, mtu=64, flush_interval=3600) as r,
        ):
            for i in range(20_000):
                execute(i=i)
            began = time.monotonic()
            r.flush()
            assert time.monotonic() - began < 5  # never waits for the reader
        stats = r.stats()
        assert stats["dropped_datagrams"] > 0
        assert (
            stats["datagrams"] + stats["dropped_datagrams"]
            == stats["datagrams"] + (stats["dropped_datagrams"])
        )
        assert any(e.metadata["kind"] == "buffer_full" for e in events)
    finally:
        server.close()


def test_flusher_survives_a_failing_flush(
    udp: tuple[Receiver, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, port = udp
    r = reporter(port, [COUNT], flush_interval=0.02)
    calls = {"n": 0}
    real = r._lines

    def broken(drained: Any) -> list[str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(drained)

    monkeypatch.setattr(r, "_lines", broken)
    with capture_events(ERROR_EVENT) as events, r:
        execute()
        deadline = time.monotonic() + 5
        while calls["n"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        execute()
    assert r.stats()["flush_errors"] == 1
    assert events[0].metadata["kind"] == "flush"
    # The update of the failed flush was lost with it; the next ones arrive.
    assert sum(int(line.split(":")[1].split("|")[0]) for line in receiver.lines()) >= 1


def test_an_error_handler_may_stop_the_reporter_from_the_flusher_thread() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    r = reporter(dead_port, [COUNT], flush_interval=0.01)
    stopped = threading.Event()

    def on_error(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        r.stop()  # runs in the flusher thread, inside a flush
        stopped.set()

    radiosonde.attach("test.stop-on-error", ERROR_EVENT, on_error)
    r.start()
    for _ in range(50):
        execute()
        if stopped.wait(0.05):
            break
    assert stopped.is_set() and not r.running


def test_a_host_name_is_looked_up_again_from_time_to_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from radiosonde.reporters import statsd as statsd_module

    family, kind, proto, _, address = socket.getaddrinfo("localhost", 0, type=socket.SOCK_DGRAM)[0]
    server = socket.socket(family, kind, proto)
    server.bind(address)
    receiver = Receiver(server)
    monkeypatch.setattr(statsd_module, "_DNS_REFRESH_S", 0.0)  # look up on every flush
    try:
        with StatsDReporter(
            [COUNT], "localhost", server.getsockname()[1], flush_interval=3600
        ) as r:
            execute()
            r.flush()
            first = r._socket
            execute()
            r.flush()
            assert r._socket is not first  # a new lookup, a new socket
            assert receiver.lines() == ["web.request.stop.count:1|c"] * 2
        # An IP address is never looked up again.
        with reporter(server.getsockname()[1], [COUNT]) as r:
            execute()
            r.flush()
            first = r._socket
            execute()
            r.flush()
            assert r._socket is first
    finally:
        server.close()
