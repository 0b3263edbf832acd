"""Metric updates through ``execute`` into an Aggregator, next to prometheus_client.

The targets are those of issue 3, as ratios measured in the same run:

* ``execute`` feeding one counter with 3 tags from metadata <= 0.25x prometheus_client
  ``Counter.labels(m, r, s).inc()``;
* ``execute`` feeding one distribution with 3 tags <= 0.3x ``Histogram.labels(...).observe()``;
* memory per counter series (3 tags) <= 0.5x prometheus_client (a check: tracemalloc over
  10,000 new series on each side, the label strings made beforehand for both).

Context cases show the floor (``execute`` with one no-op handler) and the other kinds. Every case
uses its own event name, since the harness sets all cases up before timing them.

The target cases observe one constant value, as the issue states them. Summaries and
distributions cost more per value when values differ (more sketch buckets and histogram buckets
touched per batch), so "varied values" cases observe a cycle of 4,096 log-normal latencies (median
20 ms) instead, next to prometheus_client observing the same cycle; both sides pay the same
``next()`` on an :func:`itertools.cycle`, ours also a store into the measurements dict.
"""

from __future__ import annotations

import gc
import itertools
import random
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import radiosonde
from bench._harness import Case, CheckResult, Group, require
from radiosonde import metrics as m
from radiosonde.aggregation import Aggregator

METADATA: dict[str, Any] = {"method": "GET", "route": "/api/users", "status": "200"}
MEASUREMENTS: dict[str, Any] = {"duration": 12.5}
TAGS = ["method", "route", "status"]
SERIES = 10_000
# Log-normal latencies in ms (median 20, 95% between ~3 and ~140), fixed by the seed.
_rng = random.Random(2024)
VARIED = [round(_rng.lognormvariate(3.0, 1.0), 3) for _ in range(4096)]

metrics_group = Group(
    "metrics",
    "metric updates through execute vs prometheus_client",
    baseline="prometheus_client: Counter.labels().inc()",
)
GROUPS = [metrics_group]

_events = (("bench", "metrics", f"e{i}") for i in itertools.count())


def _aggregated(
    metrics: Callable[[tuple[str, ...]], list[m.Metric]], *, varied: bool = False
) -> Case:
    """A case executing a fresh event that feeds the metrics ``metrics(event)`` returns, with
    the constant MEASUREMENTS or (``varied``) the next of a cycle over VARIED."""
    event = next(_events)
    aggregator = Aggregator(metrics(event), name=f"bench-{event[-1]}")
    aggregator.attach()
    names = {"execute": radiosonde.execute, "EVENT": event, "M": MEASUREMENTS, "MD": METADATA}
    if varied:
        # One dict updated in place: a cycle of 4,096 dicts would add cache misses that the
        # peer, observing plain floats, does not pay. The store costs us ~15 ns more than it.
        names["M"] = {"duration": 0.0}
        names["VS"] = itertools.cycle(VARIED)
    return Case(
        "M['duration'] = next(VS); execute(EVENT, M, MD)" if varied else "execute(EVENT, M, MD)",
        names,
        cleanup=aggregator.detach,
    )


@metrics_group.case("prometheus_client: Counter.labels().inc()")
def _prom_counter() -> Case:
    prometheus_client = require("prometheus_client", "prometheus-client")
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("requests", "Requests.", TAGS, registry=registry)
    return Case("c.labels('GET', '/api/users', '200').inc()", {"c": counter})


@metrics_group.case("prometheus_client: Histogram.labels().observe()")
def _prom_histogram() -> Case:
    prometheus_client = require("prometheus_client", "prometheus-client")
    registry = prometheus_client.CollectorRegistry()
    histogram = prometheus_client.Histogram("latency", "Latency.", TAGS, registry=registry)
    return Case("h.labels('GET', '/api/users', '200').observe(12.5)", {"h": histogram})


@metrics_group.case("prometheus_client: Histogram.labels().observe(), varied values")
def _prom_histogram_varied() -> Case:
    prometheus_client = require("prometheus_client", "prometheus-client")
    registry = prometheus_client.CollectorRegistry()
    histogram = prometheus_client.Histogram("latency", "Latency.", TAGS, registry=registry)
    return Case(
        "h.labels('GET', '/api/users', '200').observe(next(VS))",
        {"h": histogram, "VS": itertools.cycle(VARIED)},
    )


@metrics_group.case("execute, 1 no-op handler (the floor)")
def _floor() -> Case:
    event = next(_events)

    def noop(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        pass

    radiosonde.attach("bench.metrics.floor", event, noop)
    return Case(
        "execute(EVENT, M, MD)",
        {"execute": radiosonde.execute, "EVENT": event, "M": MEASUREMENTS, "MD": METADATA},
        cleanup=lambda: radiosonde.detach("bench.metrics.floor"),
    )


@metrics_group.case("execute -> counter (3 tags)", peer="prometheus_client: Counter.labels().inc()")
def _counter() -> Case:
    return _aggregated(lambda e: [m.counter("bench.requests", event_name=e, tags=TAGS)])


@metrics_group.case(
    "execute -> distribution (3 tags)", peer="prometheus_client: Histogram.labels().observe()"
)
def _distribution() -> Case:
    return _aggregated(
        lambda e: [
            m.distribution(
                "bench.latency", event_name=e, measurement="duration", tags=TAGS, unit="millisecond"
            )
        ]
    )


@metrics_group.case(
    "execute -> distribution (3 tags), varied values",
    peer="prometheus_client: Histogram.labels().observe(), varied values",
)
def _distribution_varied() -> Case:
    return _aggregated(
        lambda e: [
            m.distribution(
                "bench.latency", event_name=e, measurement="duration", tags=TAGS, unit="millisecond"
            )
        ],
        varied=True,
    )


@metrics_group.case("execute -> sum (3 tags)", peer="prometheus_client: Counter.labels().inc()")
def _sum() -> Case:
    return _aggregated(
        lambda e: [m.sum("bench.time", event_name=e, measurement="duration", tags=TAGS)]
    )


@metrics_group.case(
    "execute -> summary (3 tags)", peer="prometheus_client: Histogram.labels().observe()"
)
def _summary() -> Case:
    return _aggregated(
        lambda e: [m.summary("bench.time", event_name=e, measurement="duration", tags=TAGS)]
    )


@metrics_group.case(
    "execute -> summary (3 tags), varied values",
    peer="prometheus_client: Histogram.labels().observe(), varied values",
)
def _summary_varied() -> Case:
    return _aggregated(
        lambda e: [m.summary("bench.time", event_name=e, measurement="duration", tags=TAGS)],
        varied=True,
    )


@metrics_group.case(
    "execute -> counter + distribution (3 tags)",
    peer="prometheus_client: Histogram.labels().observe()",
)
def _both() -> Case:
    return _aggregated(
        lambda e: [
            m.counter("bench.requests", event_name=e, tags=TAGS),
            m.distribution("bench.latency", event_name=e, measurement="duration", tags=TAGS),
        ]
    )


metrics_group.target(
    "execute -> counter (3 tags)", "prometheus_client: Counter.labels().inc()", 0.25
)
metrics_group.target(
    "execute -> distribution (3 tags)", "prometheus_client: Histogram.labels().observe()", 0.3
)


# -- memory ----------------------------------------------------------------------------------


def _labels() -> list[tuple[str, str, str]]:
    # Made before measuring, and shared by both sides: only the series themselves are counted.
    return [(f"GET{i % 7}", f"/api/items/{i}", str(200 + i % 5)) for i in range(SERIES)]


def _traced(fill: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return used / SERIES


def _prometheus_bytes() -> float:
    prometheus_client = require("prometheus_client", "prometheus-client")
    labels = _labels()
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("mem", "Memory.", TAGS, registry=registry)

    def fill() -> object:
        for method, route, status in labels:
            counter.labels(method, route, status).inc()
        return counter

    return _traced(fill)


def _radiosonde_bytes() -> float:
    event = next(_events)
    metadata = [dict(zip(TAGS, values, strict=True)) for values in _labels()]
    aggregator = Aggregator(
        [m.counter("bench.mem", event_name=event, tags=TAGS, max_series=SERIES)], name="bench-mem"
    )
    execute = radiosonde.execute

    def fill() -> object:
        for md in metadata:
            execute(event, MEASUREMENTS, md)
        return aggregator

    with aggregator:
        used = _traced(fill)
        assert aggregator.stats()[0].series == SERIES
    return used


@metrics_group.check(
    f"memory per counter series (3 tags, {SERIES:,} series) <= 0.5x prometheus_client"
)
def _memory() -> CheckResult:
    ours = _radiosonde_bytes()
    theirs = _prometheus_bytes()
    ratio = ours / theirs
    return CheckResult(
        ratio <= 0.5,
        f"radiosonde {ours:,.0f} B/series, prometheus_client {theirs:,.0f} B/series: {ratio:.2f}x",
    )


# -- threads ---------------------------------------------------------------------------------

THREADS = 4
PER_THREAD = 50_000


@metrics_group.check(
    f"{THREADS} threads x {PER_THREAD:,} updates: counter, sum and distribution exact"
)
def _threads() -> CheckResult:
    event = next(_events)
    metrics = [
        m.counter("bench.t.count", event_name=event, tags=TAGS),
        m.sum("bench.t.sum", event_name=event, measurement="duration", tags=TAGS),
        m.distribution("bench.t.dist", event_name=event, measurement="duration", tags=TAGS),
    ]
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        barrier.wait()
        for _ in range(PER_THREAD):
            radiosonde.execute(event, MEASUREMENTS, METADATA)

    with Aggregator(metrics, name="bench-threads") as aggregator:
        workers = [threading.Thread(target=work) for _ in range(THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    counter, total, distribution = (s.series[0] for s in aggregator.snapshot(emit_stats=False))
    n = THREADS * PER_THREAD
    seen = (counter.value, total.value, distribution.count, distribution.bucket_counts[-1])
    expected = (float(n), n * MEASUREMENTS["duration"], n, n)
    return CheckResult(seen == expected, f"expected {expected}, got {seen}")
