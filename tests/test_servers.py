"""The real-server fixtures of tests/servers.py work: Prometheus scrapes and answers PromQL,
promtool judges expositions, the StatsD daemon shows what it received."""

from __future__ import annotations

import http.server
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import _realserver
from tests._realserver import free_port
from tests.servers import (
    PrometheusServer,
    StatsDDaemon,
    parse_js_literal,
    promtool_check_metrics,
)

GOOD_EXPOSITION = b"""\
# HELP demo_total Things demonstrated.
# TYPE demo_total counter
demo_total 3
"""


class Exposition:
    """A tiny stdlib HTTP server serving a hand-written exposition at /metrics."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = outer.body
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def demo() -> Iterator[Exposition]:
    exposition = Exposition(GOOD_EXPOSITION)
    yield exposition
    exposition.close()


@pytest.fixture(scope="module")
def dead_target() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def prometheus(demo: Exposition, dead_target: str) -> Iterator[PrometheusServer]:
    # One Prometheus for the module: its first scrape comes ~5 s after start.
    with PrometheusServer({"demo": [demo.target], "dead": [dead_target]}) as prom:
        yield prom


@pytest.mark.server
def test_prometheus_scrapes_a_target_and_answers_promql(
    prometheus: PrometheusServer, demo: Exposition
) -> None:
    prometheus.wait_for_scrape("demo")
    assert prometheus.value('demo_total{job="demo"}') == 3
    [series] = prometheus.query("demo_total")
    assert series["metric"] == {"__name__": "demo_total", "job": "demo", "instance": demo.target}
    assert prometheus.value("sum(demo_total) * 2") == 6
    [target] = [t for t in prometheus.targets() if t["labels"]["job"] == "demo"]
    assert target["health"] == "up"
    assert target["scrapeUrl"] == f"http://{demo.target}/metrics"


@pytest.mark.server
def test_wait_for_scrape_waits_for_a_scrape_after_the_call(
    prometheus: PrometheusServer, demo: Exposition
) -> None:
    prometheus.wait_for_scrape(demo.target)
    demo.body = GOOD_EXPOSITION.replace(b"demo_total 3", b"demo_total 5")
    try:
        prometheus.wait_for_scrape(demo.target)
        assert prometheus.value("demo_total") == 5
    finally:
        demo.body = GOOD_EXPOSITION


@pytest.mark.server
def test_wait_for_scrape_reports_a_target_that_is_down(
    prometheus: PrometheusServer, dead_target: str
) -> None:
    with pytest.raises(TimeoutError, match=dead_target):
        prometheus.wait_for_scrape("dead", timeout=1.5)


@pytest.mark.server
def test_prometheus_query_reports_promql_errors(prometheus: PrometheusServer) -> None:
    with pytest.raises(RuntimeError, match="parse error"):
        prometheus.query("sum(")
    with pytest.raises(ValueError, match="2 series"):
        prometheus.value("up")


@pytest.mark.server
def test_prometheus_stops_and_cleans_up(demo: Exposition) -> None:
    with PrometheusServer([demo.target]) as prom:
        pid, tmp = prom.pid, prom.dir
        assert pid is not None and tmp is not None and _alive(pid)
        assert prom.value("vector(1)") == 1
    assert not _alive(pid)
    assert not tmp.exists()


@pytest.mark.server
def test_promtool_accepts_a_good_exposition() -> None:
    ok, output = promtool_check_metrics(GOOD_EXPOSITION)
    assert ok, output


@pytest.mark.server
def test_promtool_rejects_a_broken_exposition() -> None:
    ok, output = promtool_check_metrics(b"demo_total{job= 3\n")
    assert not ok
    assert "error while linting" in output


@pytest.mark.server
def test_promtool_reports_lint_problems() -> None:
    ok, output = promtool_check_metrics("# HELP demo Demo.\n# TYPE demo counter\ndemo 3\n")
    assert not ok
    assert '"_total" suffix' in output


@pytest.mark.server
def test_statsd_daemon_shows_what_it_received_over_udp() -> None:
    with StatsDDaemon() as statsd, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in (b"x:1|c", b"g:5|g", b"t:12|ms", b"x:1|c|@0.5", b"not a metric"):
            sock.sendto(line, ("127.0.0.1", statsd.port))
        statsd.wait_for(lambda: statsd.packets_received() == 5)
        assert statsd.counters() == {"x": 3}
        assert statsd.gauges() == {"g": 5}
        assert statsd.timers() == {"t": [12]}
        assert statsd.bad_lines() == 1
        statsd.reset()
        assert (statsd.counters(), statsd.gauges(), statsd.timers()) == ({}, {}, {})
        pid, tmp = statsd.pid, statsd.dir
    assert pid is not None and tmp is not None
    assert not _alive(pid)
    assert not tmp.exists()


@pytest.mark.server
def test_statsd_daemon_folds_dogstatsd_tags_into_the_key() -> None:
    with StatsDDaemon() as statsd, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"req:2|c|#route:/a,status:200", ("127.0.0.1", statsd.port))
        assert statsd.wait_for(statsd.counters) == {"req;route=-a;status=200": 2}


@pytest.mark.server
def test_statsd_unix_datagram_socket_reaches_the_daemon() -> None:
    with StatsDDaemon(unix_socket=True) as statsd:
        assert statsd.socket_path is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"u:7|c\nu:1|c", statsd.socket_path)
        statsd.wait_for(lambda: statsd.counters().get("u") == 8)
        path = statsd.socket_path
    assert not Path(path).exists()


@pytest.mark.server
def test_statsd_flushes_show_sets_and_timer_statistics() -> None:
    with StatsDDaemon(flush_interval_ms=200) as statsd:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"s:a|s\ns:b|s\ns:a|s\nt:5|ms\nt:7|ms", ("127.0.0.1", statsd.port))
        [flush] = statsd.wait_for(lambda: [f for f in statsd.flushes() if f["sets"]])
    assert flush["sets"] == {"s": ["a", "b"]}
    assert flush["timer_data"]["t"]["count"] == 2
    assert flush["timer_data"]["t"]["mean"] == 6


@pytest.mark.server
def test_statsd_wait_for_times_out_with_the_daemon_state() -> None:
    with StatsDDaemon() as statsd, pytest.raises(TimeoutError, match="counters="):
        statsd.wait_for(lambda: "never" in statsd.counters(), timeout=0.2)


def test_parse_js_literal_reads_util_inspect_output() -> None:
    text = """{
      'statsd.bad_lines_seen': 0,
      x: 3,
      'a;k=v': -1.5e+21,
      n: NaN, inf: -Infinity,
      t: [
         1,  2,  3,
        40, 50, 60
      ],
      s: 'it\\'s \\n',
      nested: { empty: [], e: {} }
    }"""
    parsed = parse_js_literal(text)
    assert math.isnan(parsed.pop("n"))
    assert parsed == {
        "statsd.bad_lines_seen": 0,
        "x": 3,
        "a;k=v": -1.5e21,
        "inf": float("-inf"),
        "t": [1, 2, 3, 40, 50, 60],
        "s": "it's \n",
        "nested": {"empty": [], "e": {}},
    }


def test_parse_js_literal_refuses_truncated_output() -> None:
    with pytest.raises(ValueError):
        parse_js_literal("[ 1, 2, ... 98 more items ]")
    with pytest.raises(ValueError):
        parse_js_literal("{ a: 1")


@pytest.mark.parametrize("server", [lambda: PrometheusServer([]), StatsDDaemon])
@pytest.mark.parametrize("in_ci", [False, True])
def test_a_missing_server_skips_locally_and_fails_in_ci(
    server: Callable[[], PrometheusServer | StatsDDaemon],
    in_ci: bool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_realserver, "IN_CI", in_ci)
    outcome = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(outcome, match="not available"), server():
        pass
