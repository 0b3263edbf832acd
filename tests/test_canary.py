"""No secret leaves the process: canaries planted in events, spans and log calls reach no sink.

The end-to-end test plants canary secrets (a password, an Authorization bearer token, a JWT, a
Luhn-valid card number, an API key, session and token tag values) in event metadata that feed
metrics tagged with them, in span metadata, and in log calls (metadata and message). It then
reads what every sink received, as the sink itself has it:

* logs: the console backend (JSON lines in a StringIO), the JSON-lines file, a real rsyslog
  (UDP, TCP and Unix socket; what it wrote), the Datadog receiver (the request bodies);
* metrics: the ConsoleReporter's output; the Prometheus exposition (``render()`` in both
  formats, two HTTP scrapes of ``/metrics``, and what a real Prometheus stored after scraping
  it); a real StatsD daemon (its counters, gauges and timers) and the raw datagrams a second,
  DogStatsD-style reporter sent to a plain UDP socket.

Each sink must hold none of the canaries and must hold the run's non-secret parts (the run id,
the route, the counts), so that the test cannot pass by sending nothing. The smaller tests
below pin the reporters' redaction rules: series that redaction makes equal are merged, the
policy can change at run time, and ``redact=False`` turns it off.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import radiosonde
from radiosonde import log
from radiosonde import metrics as m
from radiosonde.logging_backends import ConsoleBackend, JsonFileBackend
from radiosonde.logging_backends.datadog import DatadogBackend
from radiosonde.logging_backends.syslog import SyslogBackend
from radiosonde.redact import REDACTED, Redactor
from radiosonde.reporters import _exposition
from radiosonde.reporters import _statsd_format as fmt
from radiosonde.reporters.console import ConsoleReporter
from radiosonde.reporters.prometheus import PrometheusReporter
from radiosonde.reporters.statsd import StatsDReporter
from tests._realserver import free_port
from tests.servers import PrometheusServer, RsyslogServer, StatsDDaemon, promtool_check_metrics
from tests.test_log import fresh_log  # noqa: F401  # the autouse fixture: clean facade per test
from tests.test_log_datadog import API_KEY, DatadogReceiver

# -- the canaries ----------------------------------------------------------------------------------

CANARY_PASSWORD = "canary-pw-Zq81x"
CANARY_BEARER = "canaryBearerTok3nW7kd"
CANARY_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnktMiJ9.Y2FuYXJ5LXNpZy0y"
CANARY_CARD = "5555 5555 5555 4444"  # a Luhn-valid test card number
CANARY_API_KEY = "canary-apikey-0c4e9"
CANARY_SESSIONS = ("canary-sess-a1", "canary-sess-b2", "canary-sess-c3")
CANARY_TOKEN = "canary-tok-77f0"
CANARY_GLOBAL = "canary-global-3d2b"
CANARIES = (
    CANARY_PASSWORD,
    CANARY_BEARER,
    CANARY_JWT,
    CANARY_CARD,
    CANARY_API_KEY,
    *CANARY_SESSIONS,
    CANARY_TOKEN,
    CANARY_GLOBAL,
)
# What a sink may do to a value short of removing it: JSON or syslog escaping aside, StatsD
# makes names safe ("-" and "." kept or replaced by "_"), so canaries are also looked for with
# every non-alphanumeric character as a wildcard, and the card as its bare digits.
_CANARY_PATTERNS = [
    re.compile("[^A-Za-z0-9]?".join(re.escape(c) for c in re.sub(r"[^A-Za-z0-9]", "", canary)))
    for canary in CANARIES
]

ROUTE = "/login"
EVENT = ("canary", "request", "stop")
TAGS = ("route", "password", "authorization", "forwarded", "trace", "card", "api_key", "session")
DURATIONS_S = (0.001, 0.002, 0.003)
SIZES = (10.0, 20.0, 30.0)

METRICS = [
    m.counter("canary.request.stop.count", tags=TAGS),
    m.distribution(
        "canary.request.stop.duration",
        unit=("nanosecond", "second"),
        tags=TAGS,
        reporter_options={"buckets": [0.0015, 0.0025, 0.01]},
    ),
    m.last_value("canary.request.stop.size", tags=TAGS),
    m.counter("canary.job.stop.count", tags=("job", "token")),
    m.summary("canary.job.stop.duration", unit=("nanosecond", "second"), tags=("job", "token")),
]


def leaks(text: str) -> list[str]:
    """The canaries found in ``text``, in any of the shapes a sink could give them."""
    found = [
        canary
        for canary, pattern in zip(CANARIES, _CANARY_PATTERNS, strict=True)
        if pattern.search(text)
    ]
    if CANARY_CARD.replace(" ", "") in re.sub(r"[^0-9]", "", text):
        found.append("card digits")
    return found


def request_metadata(run: str, session: str) -> dict[str, Any]:
    """An event's metadata: every metric tag holds a secret except the route (and the run)."""
    return {
        "run": run,
        "route": ROUTE,
        "password": CANARY_PASSWORD,  # a sensitive key
        "authorization": f"Bearer {CANARY_BEARER}",  # a sensitive key
        "forwarded": f"for 10.0.0.1 Bearer {CANARY_BEARER}",  # a value pattern
        "trace": CANARY_JWT,  # a harmless key: the value pattern finds it
        "card": f"paid with {CANARY_CARD}",  # likewise
        "api_key": CANARY_API_KEY,
        "session": session,  # a sensitive key (word): three sessions, one series once redacted
    }


# -- real servers ----------------------------------------------------------------------------------


@dataclass
class UdpCapture:
    """A plain UDP socket on loopback keeping every datagram it receives."""

    sock: socket.socket
    datagrams: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(65_535)
            except OSError:
                return
            with self.lock:
                self.datagrams.append(data)

    def text(self) -> str:
        with self.lock:
            return b"\n".join(self.datagrams).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def prometheus_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prometheus(prometheus_port: int) -> Iterator[PrometheusServer]:
    # Started first: its first scrape comes ~5 s after start; the target comes up meanwhile.
    with PrometheusServer([f"127.0.0.1:{prometheus_port}"], job="canary") as server:
        yield server


@pytest.fixture(scope="module")
def rsyslog() -> Iterator[RsyslogServer]:
    with RsyslogServer() as server:
        yield server


@pytest.fixture
def udp_capture() -> Iterator[UdpCapture]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    capture = UdpCapture(sock)
    thread = threading.Thread(target=capture.run, daemon=True)
    thread.start()
    yield capture
    sock.close()
    thread.join(timeout=2)


# -- the end-to-end test ---------------------------------------------------------------------------


def _scrape(url: str, *, openmetrics: bool) -> str:
    headers = {"Accept-Encoding": "gzip"}
    if openmetrics:
        headers["Accept"] = "application/openmetrics-text; version=1.0.0"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as got:
        body = got.read()
        if got.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert got.status == 200
        return body.decode()


@pytest.mark.server
def test_no_sink_ever_receives_a_planted_secret(
    prometheus: PrometheusServer,
    prometheus_port: int,
    rsyslog: RsyslogServer,
    statsd: StatsDDaemon,
    udp_capture: UdpCapture,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex
    log_console = io.StringIO()
    log_human = io.StringIO()
    log_file = tmp_path / "app.log"
    reporter_console = io.StringIO()
    with DatadogReceiver() as receiver:
        datadog = DatadogBackend(API_KEY, url=receiver.url, flush_interval=0.05)
        syslogs = [
            SyslogBackend(("127.0.0.1", rsyslog.udp_port)),
            SyslogBackend(("127.0.0.1", rsyslog.tcp_port), transport="tcp"),
            SyslogBackend(rsyslog.socket_path),
        ]
        log.configure(
            backends=[
                ConsoleBackend(log_console, format="json"),
                ConsoleBackend(log_human, format="human"),
                JsonFileBackend(log_file),
                datadog,
                *syslogs,
            ],
            level="debug",
        )
        console = ConsoleReporter(METRICS, reporter_console)
        exporter = PrometheusReporter(METRICS, port=prometheus_port, host="127.0.0.1")
        to_daemon = StatsDReporter(METRICS, "127.0.0.1", statsd.port, flush_interval=60)
        to_socket = StatsDReporter(
            METRICS,
            "127.0.0.1",
            udp_capture.port,
            formatter="datadog",
            global_tags={"env": "canary-test", "auth_token": CANARY_GLOBAL},
            flush_interval=60,
        )
        with console, exporter, to_daemon, to_socket:
            for session, duration, size in zip(CANARY_SESSIONS, DURATIONS_S, SIZES, strict=True):
                radiosonde.execute(
                    EVENT,
                    {"duration": round(duration * 1e9), "size": size},
                    request_metadata(run, session),
                )
            with radiosonde.span(
                ("canary", "job"),
                {"job": "import", "token": CANARY_TOKEN, "password": CANARY_PASSWORD, "run": run},
            ):
                log.warning(f"importing with card {CANARY_CARD} and jwt {CANARY_JWT}", run=run)
            log.info(
                f"login attempt password={CANARY_PASSWORD} with Bearer {CANARY_BEARER}",
                {
                    "password": CANARY_PASSWORD,
                    "headers": {"Authorization": f"Bearer {CANARY_BEARER}"},
                },
                run=run,
                session=CANARY_SESSIONS[0],
                trace=CANARY_JWT,
                note=f"paid with {CANARY_CARD}",
                api_key=CANARY_API_KEY,
            )
            try:
                raise PermissionError(f"bad credentials password={CANARY_PASSWORD}")
            except PermissionError:
                log.exception("auth failed", run=run)  # the traceback text is a sink input too
            log.capture_stdlib(level="info")  # third-party libraries log through the bridge
            logging.getLogger("thirdparty.http").info(
                "GET /x Authorization: Bearer %s", CANARY_BEARER, extra={"run": run}
            )
            log.flush(10.0)
            receiver.wait_for(lambda: len(receiver.entries) == 4)
            text = exporter.render().decode()
            openmetrics = exporter.render(openmetrics=True).decode()
            scraped_text = _scrape(exporter.url, openmetrics=False)
            scraped_om = _scrape(exporter.url, openmetrics=True)
            prometheus.wait_for_scrape("canary")
            stored = prometheus.query('{__name__=~"canary_.*"}')
            counted = prometheus.query(f'canary_request_stop_count_total{{route="{ROUTE}"}}')
            to_daemon.flush()
            to_socket.flush()
        datadog_text = b"\n".join(receiver.bodies).decode()
        datadog.close()
        for syslog in syslogs:
            syslog.close()
    syslog_lines = rsyslog.wait_for(
        lambda lines: (
            sum(line["sd"].get("radiosonde@32473", {}).get("run") == run for line in lines) == 12
        )
    )

    def both_counters() -> dict[str, float] | None:
        # Every update arrived: the three requests (in however many series) and the job.
        got = {k: v for k, v in statsd.counters().items() if k.startswith("canary.")}
        requests = sum(v for k, v in got.items() if k.startswith("canary.request."))
        job = any(k.startswith("canary.job.") for k in got)
        return got if requests == 3 and job else None

    daemon_counters = statsd.wait_for(both_counters)
    daemon_gauges = {k: v for k, v in statsd.gauges().items() if k.startswith("canary.")}
    daemon_timers = {k: v for k, v in statsd.timers().items() if k.startswith("canary.")}
    raw = udp_capture.text()

    sinks = {
        "log console": log_console.getvalue(),
        "log console (human)": log_human.getvalue(),
        "log file": log_file.read_text(),
        "syslog (rsyslog's output)": rsyslog.raw_output(),
        "datadog receiver": datadog_text,
        "console reporter": reporter_console.getvalue(),
        "prometheus render()": text,
        "prometheus render(openmetrics=True)": openmetrics,
        "prometheus /metrics (text)": scraped_text,
        "prometheus /metrics (openmetrics, gzip)": scraped_om,
        "prometheus server (stored series)": json.dumps(stored),
        "statsd daemon": json.dumps([daemon_counters, daemon_gauges, daemon_timers]),
        "statsd datagrams (datadog)": raw,
    }
    leaked = {name: leaks(got) for name, got in sinks.items() if leaks(got)}
    assert leaked == {}, f"secrets reached sinks: {leaked}"

    # Everything else arrived. Logs: the run id, the messages, the redaction marker.
    for name in ("log console", "log file", "syslog (rsyslog's output)", "datadog receiver"):
        assert run in sinks[name], f"{name} received nothing of this run"
        assert "login attempt password=" in sinks[name] and REDACTED in sinks[name], name
    assert "auth failed" in sinks["log console (human)"]
    for name in ("log console", "log file", "syslog (rsyslog's output)", "datadog receiver"):
        assert "auth failed" in sinks[name] and "Authorization: [REDACTED]" in sinks[name], name
    assert len(syslog_lines) >= 12
    # The console reporter: each event, its metric updates, the route and the durations.
    shown = sinks["console reporter"]
    assert shown.count("[radiosonde] event canary.request.stop") == 3
    assert f'route="{ROUTE}", password="{REDACTED}"' in shown
    assert "distribution canary.request.stop.duration = 0.002 second" in shown
    assert run in shown and "'job': 'import'" in shown

    # Prometheus: the three sessions are one series once redacted, with all three events.
    series = (
        f'route="{ROUTE}",password="{REDACTED}",authorization="{REDACTED}",'
        f'forwarded="for 10.0.0.1 Bearer {REDACTED}",'
        f'trace="{REDACTED}",card="paid with {REDACTED}",api_key="{REDACTED}",'
        f'session="{REDACTED}"'
    )
    for name in ("prometheus render()", "prometheus /metrics (text)"):
        assert f"canary_request_stop_count_total{{{series}}} 3.0\n" in sinks[name], name
        assert (
            f'canary_request_stop_duration_seconds_bucket{{{series},le="0.0025"}} 2\n'
            in (sinks[name])
        )
        assert f"canary_request_stop_size{{{series}}} " in sinks[name]
        assert sinks[name].count("canary_request_stop_count_total{") == 1
    for name in ("prometheus render(openmetrics=True)", "prometheus /metrics (openmetrics, gzip)"):
        assert f"canary_request_stop_count_total{{{series}}} 3.0\n" in sinks[name], name
        assert sinks[name].endswith("# EOF\n")
    assert f'canary_job_stop_duration_seconds_count{{job="import",token="{REDACTED}"}} 1' in (text)
    ok, problems = promtool_check_metrics(text)
    assert ok, problems
    # What the real Prometheus stored: the merged series, counted 3, labels redacted.
    assert [float(found["value"][1]) for found in counted] == [3.0]
    sessions = {s["metric"].get("session") for s in stored if "session" in s["metric"]}
    assert sessions == {REDACTED}

    # StatsD (standard): tag values are name segments; the three sessions merged into one.
    [(counter_key, total)] = [
        (k, v) for k, v in daemon_counters.items() if k.startswith("canary.request.stop.count.")
    ]
    assert total == 3
    assert counter_key.startswith(
        "canary.request.stop.count._login._REDACTED_._REDACTED_.for_10_0_0_1_Bearer__REDACTED_"
    )
    assert daemon_counters["canary.job.stop.count.import._REDACTED_"] == 1
    [(gauge_key, gauge)] = daemon_gauges.items()
    assert gauge_key == counter_key.replace(".count.", ".size.") and gauge == SIZES[-1]
    timer_key = counter_key.replace(".count.", ".duration.")
    assert sorted(daemon_timers[timer_key]) == list(DURATIONS_S)
    # DogStatsD datagrams: tags listed, redacted, then the global tags (one of them redacted).
    assert (
        f"canary.request.stop.count:3|c|#route:{ROUTE},password:{REDACTED},"
        f"authorization:{REDACTED},forwarded:for_10.0.0.1_Bearer_{REDACTED},trace:{REDACTED},card:paid_with_{REDACTED},"
        f"api_key:{REDACTED},session:{REDACTED},env:canary-test,auth_token:{REDACTED}"
    ) in raw.split("\n")


# -- the reporters' redaction rules ----------------------------------------------------------------


def test_series_made_equal_by_redaction_are_merged_in_the_exposition() -> None:
    event = ("merge", "req", "stop")
    metrics = [
        m.counter("merge.req.stop.count", tags=["token", "route"]),
        m.sum("merge.req.stop.bytes", tags=["token"]),
        m.last_value("merge.req.stop.level", tags=["token"]),
        m.distribution("merge.req.stop.size", tags=["token"], reporter_options={"buckets": [5]}),
        m.summary("merge.req.stop.wait", tags=["token"]),
    ]
    with PrometheusReporter(metrics, port=0, include_self_metrics=False) as reporter:
        for token, value in (("t-1", 1.0), ("t-2", 10.0), ("t-3", 3.0)):
            radiosonde.execute(
                event,
                {"bytes": value, "level": value, "size": value, "wait": value},
                {"token": token, "route": "/a"},
            )
        text = reporter.render().decode()
    marked = f'token="{REDACTED}"'
    assert f'merge_req_stop_count_total{{{marked},route="/a"}} 3.0\n' in text
    assert text.count("merge_req_stop_count_total{") == 1
    assert f"merge_req_stop_bytes_total{{{marked}}} 14.0\n" in text
    # A last value keeps one of the values it merged.
    [level] = re.findall(r"merge_req_stop_level\{.*\} (\S+)\n", text)
    assert float(level) in (1.0, 10.0, 3.0)
    assert f'merge_req_stop_size_bucket{{{marked},le="5.0"}} 2\n' in text
    assert f'merge_req_stop_size_bucket{{{marked},le="+Inf"}} 3\n' in text
    assert f"merge_req_stop_size_count{{{marked}}} 3\n" in text
    assert f"merge_req_stop_size_sum{{{marked}}} 14.0\n" in text
    # Quantiles of different series cannot be combined: the merged summary has none.
    assert f"merge_req_stop_wait_count{{{marked}}} 3\n" in text
    assert "merge_req_stop_wait{" not in text
    ok, problems = promtool_check_metrics(text)
    assert ok, problems


def test_values_holding_secrets_are_redacted_and_merged_only_when_they_become_equal() -> None:
    metric = m.counter("jwt.req.stop.count", tags=["trace"])
    exposition = _exposition.Exposition([metric])
    other = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvdGhlciJ9.b3RoZXItc2lnbmF0dXJl"
    series = [
        _Series({"trace": "plain"}, 2.0),
        _Series({"trace": f"{CANARY_JWT} a"}, 1.0),
        _Series({"trace": f"{other} a"}, 4.0),
        _Series({"trace": f"{CANARY_JWT} b"}, 8.0),
    ]
    first = exposition.render([_Snapshot(metric, series)]).decode()
    again = exposition.render([_Snapshot(metric, series)]).decode()
    assert first == again
    assert leaks(first) == []
    lines = [line for line in first.splitlines() if not line.startswith("#")]
    assert lines == [
        'jwt_req_stop_count_total{trace="plain"} 2.0',
        f'jwt_req_stop_count_total{{trace="{REDACTED} a"}} 5.0',
        f'jwt_req_stop_count_total{{trace="{REDACTED} b"}} 8.0',
    ]


def test_a_policy_change_applies_to_series_already_rendered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = Redactor()
    monkeypatch.setattr(_exposition, "default_redactor", policy)
    metric = m.counter("ssn.req.stop.count", tags=["customer"])
    exposition = _exposition.Exposition([metric])
    snapshot = _Snapshot(metric, [_Series({"customer": "078-05-1120"}, 1.0)])
    assert 'customer="078-05-1120"' in exposition.render([snapshot]).decode()
    policy.add_keys("customer")
    assert f'customer="{REDACTED}"' in exposition.render([snapshot]).decode()


def test_redact_false_exports_tags_and_prints_metadata_as_they_are() -> None:
    metric = m.counter("raw.req.stop.count", tags=["session"])
    series = [_Series({"session": CANARY_SESSIONS[0]}, 1.0)]
    raw = _exposition.Exposition([metric], redact=False).render([_Snapshot(metric, series)])
    assert f'session="{CANARY_SESSIONS[0]}"' in raw.decode()
    redacted = _exposition.Exposition([metric]).render([_Snapshot(metric, series)])
    assert f'session="{REDACTED}"' in redacted.decode()

    namer = fmt.SeriesNamer("datadog", None, {"auth_token": CANARY_GLOBAL}, redact=False)
    assert namer.series("x", ("session",), (CANARY_SESSIONS[0],)) == (
        "x",
        f"|#session:{CANARY_SESSIONS[0]},auth_token:{CANARY_GLOBAL}",
    )
    namer = fmt.SeriesNamer("standard", None, {})
    assert namer.series("x", ("session", "route"), (CANARY_SESSIONS[0], "/a")) == (
        "x._REDACTED_._a",
        "",
    )

    metadata = {"session": CANARY_SESSIONS[0], "route": "/a"}
    shown = ConsoleReporter([metric], redact=False).format(metric.event_name, {}, metadata)
    assert CANARY_SESSIONS[0] in shown
    shown = ConsoleReporter([metric]).format(metric.event_name, {}, metadata)
    assert CANARY_SESSIONS[0] not in shown and f'session="{REDACTED}"' in shown


@pytest.mark.parametrize(
    "make",
    [
        lambda: PrometheusReporter([], port=0, redact="yes"),
        lambda: StatsDReporter([], "127.0.0.1", 8125, redact=1),
        lambda: ConsoleReporter([], redact=None),
    ],
    ids=["prometheus", "statsd", "console"],
)
def test_the_redact_option_takes_a_bool_only(make: Any) -> None:
    with pytest.raises(ValueError, match="redact must be True or False"):
        make()


@dataclass
class _Series:
    """A counter series as the renderer reads it (the aggregator's SeriesSnapshot shape)."""

    tags: dict[str, str]
    value: float | None
    count: int = 0
    sum: float = 0.0
    bucket_bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    quantiles: dict[float, float] = field(default_factory=dict)


@dataclass
class _Snapshot:
    metric: m.Metric
    series: list[_Series]
