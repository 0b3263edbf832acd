"""Rendering a Prometheus scrape: radiosonde next to prometheus_client, on the same series.

The targets are those of issue 3, as ratios measured in the same run: rendering 10,000
histogram series <= 0.2x ``prometheus_client.generate_latest`` on the same series, and 10,000
counter series likewise. radiosonde's figure is a whole scrape minus the HTTP: the aggregator's
snapshot, then the rendering (text 0.0.4), self-metrics included, as
:meth:`PrometheusReporter.render` does it; prometheus_client's is ``generate_latest`` of a
registry holding the same series (it collects and renders too).
"""

from __future__ import annotations

import random
from typing import Any

import radiosonde
from bench._harness import Case, CheckResult, Group, require
from radiosonde import metrics as m
from radiosonde.reporters.prometheus import PrometheusReporter

SERIES = 10_000
# prometheus_client's default buckets, so both sides render the same number of lines.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
LABELS = ("route", "method", "status")
OBSERVATIONS_PER_SERIES = 3

prometheus = Group(
    "prometheus",
    f"rendering a scrape of {SERIES:,} series (ns per scrape)",
    baseline="prometheus_client: 10k histograms",
)
GROUPS = [prometheus]


def _label_values() -> list[tuple[str, str, str]]:
    methods = ("GET", "POST", "PUT", "DELETE")
    return [
        (f"/api/v1/resource/{i}", methods[i % 4], str(200 + i % 7 * 100)) for i in range(SERIES)
    ]


def _durations() -> list[float]:
    rng = random.Random(3)
    return [rng.lognormvariate(-3, 1.5) for _ in range(SERIES * OBSERVATIONS_PER_SERIES)]


_reporters: dict[str, PrometheusReporter] = {}


def _radiosonde_reporter(kind: str) -> PrometheusReporter:
    """A reporter (not serving: the aggregator is attached, no HTTP) holding SERIES series."""
    if kind in _reporters:
        return _reporters[kind]
    event = ("bench", "prometheus", kind)
    if kind == "histogram":
        metric = m.distribution(
            "bench.prometheus.histogram.duration",
            unit="second",
            tags=LABELS,
            max_series=SERIES,
            reporter_options={"buckets": BUCKETS},
        )
    else:
        metric = m.counter(
            "bench.prometheus.counter.requests", event_name=event, tags=LABELS, max_series=SERIES
        )
    reporter = PrometheusReporter([metric], port=0, host="127.0.0.1", name=f"bench-{kind}")
    reporter.aggregator.attach()
    durations = iter(_durations())
    for route, method, status in _label_values():
        metadata = {"route": route, "method": method, "status": status}
        for _ in range(OBSERVATIONS_PER_SERIES):
            radiosonde.execute(event, {"duration": next(durations)}, metadata)
    _reporters[kind] = reporter
    return reporter


def _prometheus_client_registry(kind: str) -> tuple[Any, Any]:
    prometheus_client = require("prometheus_client", "prometheus-client")
    registry = prometheus_client.CollectorRegistry()
    if kind == "histogram":
        metric = prometheus_client.Histogram(
            "bench_prometheus_histogram_duration_seconds",
            "Histogram of bench.prometheus.histogram.duration",
            LABELS,
            registry=registry,
            buckets=BUCKETS,
        )
    else:
        metric = prometheus_client.Counter(
            "bench_prometheus_counter_requests",
            "Count of bench.prometheus.counter events",
            LABELS,
            registry=registry,
        )
    durations = iter(_durations())
    for labels in _label_values():
        child = metric.labels(*labels)
        for _ in range(OBSERVATIONS_PER_SERIES):
            if kind == "histogram":
                child.observe(next(durations))
            else:
                child.inc()
    return prometheus_client, registry


def _detach(kind: str) -> None:
    reporter = _reporters.pop(kind, None)
    if reporter is not None:
        reporter.stop()


@prometheus.case("radiosonde: 10k histograms", peer="prometheus_client: 10k histograms")
def _ours_histograms() -> Case:
    reporter = _radiosonde_reporter("histogram")
    return Case("render()", {"render": reporter.render}, cleanup=lambda: _detach("histogram"))


@prometheus.case("radiosonde: 10k histograms, OpenMetrics")
def _ours_histograms_om() -> Case:
    reporter = _radiosonde_reporter("histogram")
    return Case("render(True)", {"render": reporter.render})


@prometheus.case("radiosonde: 10k counters", peer="prometheus_client: 10k counters")
def _ours_counters() -> Case:
    reporter = _radiosonde_reporter("counter")
    return Case("render()", {"render": reporter.render}, cleanup=lambda: _detach("counter"))


@prometheus.case("prometheus_client: 10k histograms")
def _theirs_histograms() -> Case:
    prometheus_client, registry = _prometheus_client_registry("histogram")
    return Case(
        "generate_latest(registry)",
        {"generate_latest": prometheus_client.generate_latest, "registry": registry},
    )


@prometheus.case("prometheus_client: 10k counters")
def _theirs_counters() -> Case:
    prometheus_client, registry = _prometheus_client_registry("counter")
    return Case(
        "generate_latest(registry)",
        {"generate_latest": prometheus_client.generate_latest, "registry": registry},
    )


prometheus.target("radiosonde: 10k histograms", "prometheus_client: 10k histograms", 0.2)
prometheus.target("radiosonde: 10k counters", "prometheus_client: 10k counters", 0.2)


@prometheus.check("both sides expose the same series and values (read back by one parser)")
def _same_values() -> CheckResult:
    """The comparison is fair only if both render the same data: parse both and compare."""
    parser = require("prometheus_client.parser", "prometheus-client")
    problems: list[str] = []
    for kind in ("histogram", "counter"):
        reporter = _radiosonde_reporter(kind)
        ours = _samples(parser, reporter.render(), prefix="bench_prometheus_")
        prometheus_client, registry = _prometheus_client_registry(kind)
        theirs = _samples(parser, prometheus_client.generate_latest(registry), prefix="bench_")
        theirs = {k: v for k, v in theirs.items() if not k[0].endswith("_created")}
        _detach(kind)
        if ours.keys() != theirs.keys():
            problems.append(f"{kind}: {len(ours)} samples vs {len(theirs)}")
            continue
        bad = [k for k in ours if abs(ours[k] - theirs[k]) > 1e-9 * max(1.0, abs(theirs[k]))]
        if bad:
            problems.append(f"{kind}: {len(bad)} values differ, e.g. {bad[0]}")
    if problems:
        return CheckResult(False, "; ".join(problems))
    return CheckResult(True, f"{SERIES:,} histogram and {SERIES:,} counter series, equal")


def _samples(parser: Any, text: bytes, prefix: str) -> dict[tuple[Any, ...], float]:
    found: dict[tuple[Any, ...], float] = {}
    for family in parser.text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if not sample.name.startswith(prefix):
                continue
            labels = dict(sample.labels)
            if "le" in labels:
                labels["le"] = float(labels["le"])
            found[(sample.name, tuple(sorted(labels.items())))] = float(sample.value)
    return found
