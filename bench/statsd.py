"""The StatsD reporter next to the ``statsd`` package (pystatsd), sending to the same UDP sink.

The targets are those of issue 3, as ratios measured in the same run: an update through
``execute`` into a :class:`StatsDReporter` counter with 3 tags <= 0.5x an ``incr`` on a
``statsd`` pipeline (``StatsClient(...).pipeline()``, sent when the batch ends, as a pipeline
is used); and 4 threads updating together reach >= 0.9x the updates/s of one thread, losing
nothing (the check reads the totals back from the datagrams).

Each statement runs a batch of :data:`BATCH` updates, so both sides pay their sending inside
the measured time: the pipeline on leaving its ``with`` block, the reporter in its flusher
thread (every ``flush_interval``, here the default 1 s). Figures are ns per batch.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import threading
import time
from collections import defaultdict
from multiprocessing.connection import Connection
from typing import Any

import radiosonde
from bench._harness import Case, CheckResult, Group, require
from radiosonde import metrics as m
from radiosonde.reporters.statsd import StatsDReporter

BATCH = 1_000
EVENT = ("bench", "statsd", "request")
METADATA: dict[str, Any] = {"method": "GET", "route": "/api/users", "status": 200}
MEASUREMENTS: dict[str, Any] = {"duration": 1_234_567}

statsd_group = Group(
    "statsd",
    f"StatsD: updates through the reporter vs the statsd package (ns per {BATCH:,} updates)",
    baseline="statsd pipeline incr + send",
)
GROUPS = [statsd_group]


def _sink_main(conn: Connection) -> None:
    """The sink process: drain a UDP socket, add up counters, answer queries for them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.01)
    conn.send(sock.getsockname()[1])
    counters: dict[str, float] = defaultdict(float)
    while True:
        if conn.poll():
            names = conn.recv()
            if names is None:
                return
            conn.send({name: counters.get(name, 0.0) for name in names})
        try:
            data = sock.recv(65_535)
        except TimeoutError:
            continue
        for line in data.decode().split("\n"):
            name, _, rest = line.partition(":")
            fields = rest.split("|")
            if len(fields) >= 2 and fields[1] == "c":
                counters[name] += float(fields[0])


class _Sink:
    """A UDP socket on loopback, drained by another process (as a StatsD daemon would be, so
    that receiving takes no GIL time from the threads measured), that counts counters."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_sink_main, args=(child,), daemon=True)
        self._process.start()
        self.port: int = self._conn.recv()

    def counters(self, names: list[str]) -> dict[str, float]:
        self._conn.send(names)
        got: dict[str, float] = self._conn.recv()
        return got

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(timeout=2)


_hole: socket.socket | None = None


def _blackhole_port() -> int:
    """A bound UDP socket nobody reads: the timed cases send there, so that no thread of this
    process spends time receiving while they are measured (the kernel drops what overflows)."""
    global _hole
    if _hole is None:
        _hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _hole.bind(("127.0.0.1", 0))
    port: int = _hole.getsockname()[1]
    return port


def _reporter_case(metric: m.Metric, handler_name: str) -> Case:
    """Every case is set up before any runs: each has its own event, so one reporter each."""
    # Values are never dropped for a full buffer here: the figure includes sending them all.
    reporter = StatsDReporter(
        [metric], "127.0.0.1", _blackhole_port(), name=handler_name, max_samples=10**7
    )
    reporter.start()
    return Case(
        "for _ in R:\n    execute(EVENT, M, MD)",
        {
            "execute": radiosonde.execute,
            "EVENT": metric.event_name,
            "M": MEASUREMENTS,
            "MD": METADATA,
            "R": range(BATCH),
        },
        cleanup=reporter.stop,
    )


@statsd_group.case("execute -> StatsD counter (3 tags)", peer="statsd pipeline incr + send")
def _counter() -> Case:
    metric = m.counter("bench.statsd.counter.count", tags=["method", "route", "status"])
    return _reporter_case(metric, "bench-counter")


@statsd_group.case("execute -> StatsD counter (no tags)", peer="statsd pipeline incr + send")
def _counter_plain() -> Case:
    metric = m.counter("bench.statsd.plain.count")
    return _reporter_case(metric, "bench-counter-plain")


@statsd_group.case("execute -> StatsD timer (summary, 1 tag)", peer="statsd pipeline timing + send")
def _timer() -> Case:
    metric = m.summary(
        "bench.statsd.timer.duration", unit=("nanosecond", "millisecond"), tags=["route"]
    )
    return _reporter_case(metric, "bench-timer")


@statsd_group.case("statsd pipeline incr + send")
def _pipeline_incr() -> Case:
    statsd = require("statsd", "statsd")
    client = statsd.StatsClient("127.0.0.1", _blackhole_port())
    # The standard format has no tags: pystatsd users put them in the name, as we do.
    return Case(
        "with client.pipeline() as pipe:\n    for _ in R:\n        pipe.incr(NAME)",
        {"client": client, "R": range(BATCH), "NAME": "bench.statsd.request.count.GET.api.200"},
        cleanup=client.close,
    )


@statsd_group.case("statsd pipeline incr, never sent")
def _pipeline_buffer_only() -> Case:
    # Not a use of a pipeline (nothing reaches a server): the buffering part alone, for scale.
    statsd = require("statsd", "statsd")
    client = statsd.StatsClient("127.0.0.1", _blackhole_port())
    pipe = client.pipeline()
    return Case(
        "for _ in R:\n    pipe.incr(NAME)\npipe._stats.clear()",
        {"pipe": pipe, "R": range(BATCH), "NAME": "bench.statsd.request.count.GET.api.200"},
        cleanup=client.close,
    )


@statsd_group.case("statsd pipeline timing + send")
def _pipeline_timing() -> Case:
    statsd = require("statsd", "statsd")
    client = statsd.StatsClient("127.0.0.1", _blackhole_port())
    return Case(
        "with client.pipeline() as pipe:\n    for _ in R:\n        pipe.timing(NAME, MS)",
        {
            "client": client,
            "R": range(BATCH),
            "NAME": "bench.statsd.request.duration.api",
            "MS": 1.234567,
        },
        cleanup=client.close,
    )


@statsd_group.case("statsd client incr (no pipeline)")
def _client_incr() -> Case:
    statsd = require("statsd", "statsd")
    client = statsd.StatsClient("127.0.0.1", _blackhole_port())
    return Case(
        "for _ in R:\n    client.incr(NAME)",
        {"client": client, "R": range(BATCH), "NAME": "bench.statsd.request.count.GET.api.200"},
        cleanup=client.close,
    )


statsd_group.target("execute -> StatsD counter (3 tags)", "statsd pipeline incr + send", 0.5)


# -- threads ---------------------------------------------------------------------------------

TOTAL = 900_000
ROUNDS = 9


def _updates_per_second(reporter: StatsDReporter, threads: int, run: str) -> float:
    per_thread = TOTAL // threads
    metadata = {**METADATA, "run": run}
    start = threading.Barrier(threads + 1)
    execute = radiosonde.execute

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            execute(EVENT, MEASUREMENTS, metadata)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - began)


@statsd_group.check("4 threads >= 0.9x the updates/s of 1 thread, nothing lost")
def _threads() -> CheckResult:
    sink = _Sink()
    try:
        return _measure_threads(sink)
    finally:
        sink.close()


def _measure_threads(sink: _Sink) -> CheckResult:
    metric = m.counter(
        "bench.statsd.threads.count", event_name=EVENT, tags=["method", "route", "status", "run"]
    )
    reporter = StatsDReporter([metric], "127.0.0.1", sink.port, name="bench-threads")
    one: list[float] = []
    four: list[float] = []
    reporter.start()
    try:
        # Each 1-thread run is paired with the 4-thread run next to it (alternating which goes
        # first), so that a noisy neighbour weighs on both halves of a pair alike.
        for i in range(ROUNDS):
            if i % 2:
                four.append(_updates_per_second(reporter, 4, f"four{i}"))
                one.append(_updates_per_second(reporter, 1, f"one{i}"))
            else:
                one.append(_updates_per_second(reporter, 1, f"one{i}"))
                four.append(_updates_per_second(reporter, 4, f"four{i}"))
    finally:
        reporter.stop()
    # Loopback UDP delivers what a drained socket receives; wait for the sink to read it all.
    deadline = time.monotonic() + 5
    names = [
        f"bench.statsd.threads.count.GET._api_users.200.{r}{i}"
        for r in ("one", "four")
        for i in range(ROUNDS)
    ]
    got = sink.counters(names)
    while time.monotonic() < deadline and any(got[n] != TOTAL for n in names):
        time.sleep(0.05)
        got = sink.counters(names)
    lost = {n: TOTAL - got[n] for n in names if got[n] != TOTAL}
    ratio = statistics.median(f / o for f, o in zip(four, one, strict=True))
    detail = (
        f"1 thread {statistics.median(one):,.0f}/s, 4 threads {statistics.median(four):,.0f}/s"
        f" (medians of {ROUNDS}); 4 threads / 1 thread {ratio:.2f}x (median of paired runs);"
        f" {'nothing lost' if not lost else f'lost {lost}'}"
        f" ({2 * ROUNDS * TOTAL:,} updates counted back from the datagrams)"
    )
    return CheckResult(ratio >= 0.9 and not lost, detail)
