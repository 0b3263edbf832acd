"""The aggregation store: semantics per kind, skipped updates, the series limit, threads."""

from __future__ import annotations

import enum
import logging
import math
import sys
import threading
import tracemalloc
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import radiosonde
from radiosonde import aggregation, events
from radiosonde import metrics as m
from radiosonde.aggregation import (
    Aggregator,
    MetricSnapshot,
    SeriesSnapshot,
    default_buckets,
    evaluate,
)
from radiosonde.selfmetrics import REPORTER_ERROR_EVENT, report_error, self_metrics
from radiosonde.testing import capture_events

EVENT = ("http", "request", "stop")


def run(metrics: list[m.Metric], *updates: tuple[dict[str, Any], dict[str, Any]]) -> Aggregator:
    """An aggregator of ``metrics`` that saw one EVENT per (measurements, metadata) pair."""
    agg = Aggregator(metrics)
    with agg:
        for measurements, metadata in updates:
            radiosonde.execute(EVENT, measurements, metadata)
    return agg


def only(agg: Aggregator, index: int = 0) -> list[SeriesSnapshot]:
    return agg.snapshot(emit_stats=False)[index].series


def values(agg: Aggregator, index: int = 0) -> dict[tuple[str, ...], float | None]:
    return {tuple(s.tags.values()): s.value for s in only(agg, index)}


def dropped(agg: Aggregator, index: int = 0) -> dict[str, int]:
    return agg.stats()[index].dropped


@pytest.fixture(autouse=True)
def _default_limit() -> Iterator[None]:
    before = aggregation.default_max_series()
    yield
    aggregation.set_default_max_series(before)


# -- kinds -----------------------------------------------------------------------------------


def test_a_counter_counts_events_per_tag_combination() -> None:
    agg = run(
        [m.counter("http.request.stop.duration", tags=["method", "status"])],
        ({}, {"method": "GET", "status": 200}),
        ({"duration": 5}, {"method": "GET", "status": 200}),
        ({}, {"method": "POST", "status": 500, "other": "x"}),
    )
    series = only(agg)
    assert [s.tags for s in series] == [
        {"method": "GET", "status": "200"},
        {"method": "POST", "status": "500"},
    ]
    assert [s.value for s in series] == [2.0, 1.0]
    assert all(type(s.value) is float for s in series)
    assert series[0] == SeriesSnapshot({"method": "GET", "status": "200"}, value=2.0)


def test_a_sum_adds_floats_and_ints_after_unit_conversion() -> None:
    agg = run(
        [m.sum("http.request.stop.duration", unit=("nanosecond", "millisecond"))],
        ({"duration": 1_500_000}, {}),
        ({"duration": 250_000.0}, {}),
    )
    assert values(agg) == {(): pytest.approx(1.75)}


def test_a_sum_keeps_fractions() -> None:
    agg = run([m.sum("http.request.stop.cost")], *[({"cost": 0.1}, {})] * 10)
    assert values(agg)[()] == pytest.approx(1.0)


def test_last_value_keeps_the_latest() -> None:
    agg = run(
        [m.last_value("http.request.stop.queue", tags=["pool"])],
        ({"queue": 3}, {"pool": "a"}),
        ({"queue": 7.5}, {"pool": "a"}),
        ({"queue": 1}, {"pool": "b"}),
    )
    assert values(agg) == {("a",): 7.5, ("b",): 1.0}


def test_a_summary_reports_count_sum_min_max_and_quantiles() -> None:
    agg = run(
        [m.summary("http.request.stop.duration")], *[({"duration": i}, {}) for i in range(1, 101)]
    )
    (series,) = only(agg)
    assert (series.count, series.sum, series.min, series.max) == (100, 5050.0, 1.0, 100.0)
    assert series.value is None
    assert series.bucket_bounds == ()
    assert series.bucket_counts == ()
    assert set(series.quantiles) == {0.5, 0.9, 0.95, 0.99}
    for q, exact in ((0.5, 50), (0.9, 90), (0.95, 95), (0.99, 99)):
        assert series.quantiles[q] == pytest.approx(exact, rel=0.01)


def test_a_distribution_has_cumulative_buckets_ending_with_the_count() -> None:
    agg = run(
        [m.distribution("http.request.stop.duration", reporter_options={"buckets": [1, 10, 100]})],
        *[({"duration": v}, {}) for v in (0.5, 1, 1.5, 10, 50, 100, 1000, -3)],
    )
    (series,) = only(agg)
    assert series.bucket_bounds == (1.0, 10.0, 100.0)
    # A value equal to a bound counts in that bound's bucket (Prometheus' "le").
    assert series.bucket_counts == (3, 5, 7, 8)
    assert series.count == 8
    assert series.min == -3.0
    assert series.max == 1000.0
    assert series.sum == 1160.0
    assert series.quantiles[0.5] == pytest.approx(1.5, rel=0.01)  # the 4th of 8


def test_a_distribution_counts_zero_infinities_and_large_values() -> None:
    agg = run(
        [m.distribution("http.request.stop.duration", reporter_options={"buckets": [0, 1]})],
        *[({"duration": v}, {}) for v in (0.0, math.inf, -math.inf, 1e300, 5e-324)],
    )
    (series,) = only(agg)
    assert series.bucket_counts == (2, 3, 5)
    assert series.max == math.inf
    assert series.min == -math.inf


bounds_strategy = st.lists(
    st.floats(min_value=-1e6, max_value=1e9, allow_nan=False), min_size=1, max_size=12, unique=True
).map(sorted)
value_strategy = st.one_of(
    st.floats(allow_nan=False, min_value=-1e12, max_value=1e12),
    st.floats(min_value=1e-300, max_value=1e300),
    st.integers(min_value=-(10**12), max_value=10**12),
)


@given(bounds_strategy, st.lists(value_strategy, min_size=1, max_size=80))
@settings(max_examples=150, deadline=None)
def test_bucket_counts_are_exact_for_any_bounds_and_values(
    bounds: list[float], samples: list[float]
) -> None:
    events._reset_for_tests()
    metric = m.distribution("h.e.v", reporter_options={"buckets": bounds})
    with Aggregator([metric]) as agg:
        for sample in samples:
            radiosonde.execute(("h", "e"), {"v": sample}, {})
    (series,) = agg.snapshot(emit_stats=False)[0].series
    expected = [0] * (len(bounds) + 1)
    for sample in samples:
        expected[bisect_left(bounds, float(sample))] += 1
    cumulative = []
    total = 0
    for n in expected:
        total += n
        cumulative.append(total)
    assert series.bucket_counts == tuple(cumulative)


# -- default buckets -------------------------------------------------------------------------


def test_default_buckets_follow_the_unit() -> None:
    ms = default_buckets("millisecond")
    assert ms == (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
    assert default_buckets("second") == tuple(b / 1000 for b in ms)
    assert default_buckets("microsecond") == tuple(b * 1000 for b in ms)
    assert default_buckets("nanosecond") == tuple(b * 1_000_000 for b in ms)
    assert default_buckets("byte")[0] == 64
    assert default_buckets("byte")[-1] == 1024**3
    assert default_buckets("kibibyte")[-1] == 1024**2
    assert default_buckets("kilobyte")[0] == 0.064
    assert default_buckets(None) == ms
    assert default_buckets("request") == ms
    for unit in ("millisecond", "second", "byte", "megabyte", None):
        bounds = default_buckets(unit)
        assert list(bounds) == sorted(set(bounds))


def test_a_distribution_without_buckets_uses_those_of_its_unit() -> None:
    agg = run(
        [m.distribution("http.request.stop.duration", unit=("nanosecond", "second"))],
        ({"duration": 30_000_000}, {}),
    )
    (series,) = only(agg)
    assert series.bucket_bounds == default_buckets("second")
    assert series.bucket_counts[series.bucket_bounds.index(0.05)] == 1
    assert series.bucket_counts[series.bucket_bounds.index(0.025)] == 0


# -- skipped updates -------------------------------------------------------------------------


def test_updates_that_cannot_be_used_are_skipped_and_counted_by_reason() -> None:
    metric = m.sum("http.request.stop.duration", tags=["route"])
    agg = run(
        [metric],
        ({"duration": 1}, {"route": "/"}),
        ({}, {"route": "/"}),
        ({"duration": "12"}, {"route": "/"}),
        ({"duration": True}, {"route": "/"}),
        ({"duration": math.nan}, {"route": "/"}),
        ({"duration": 10**400}, {"route": "/"}),
        ({"duration": 1}, {}),
        ({"duration": 1}, {"path": "/"}),
    )
    assert values(agg) == {("/",): 1.0}
    assert dropped(agg) == {"missing_measurement": 1, "invalid_measurement": 4, "missing_tag": 2}
    assert events.stats()["handler_failures"] == 0


def test_filtered_and_failing_user_functions_are_counted() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    metrics = [
        m.counter("http.request.stop.a", keep=lambda md: md["keep"]),
        m.counter("http.request.stop.b", drop=lambda md: md["drop"]),
        m.sum("http.request.stop.c", measurement=lambda ms: ms["x"] / ms["y"]),
        m.counter("http.request.stop.d", tags=["t"]),
        m.counter("http.request.stop.e", tags=["t"], tag_values=lambda md: {"t": md["v"]}),
    ]
    agg = run(
        metrics,
        ({"x": 1, "y": 0}, {"keep": False, "drop": True, "t": Unprintable()}),
        ({"x": 1, "y": 2}, {"keep": True, "drop": False, "t": "ok", "v": 1}),
        ({"y": 2}, {"keep": "boom", "drop": 1, "t": "ok"}),
    )
    stats = agg.stats()
    assert stats[0].dropped == {"filtered": 1}
    assert stats[1].dropped == {"filtered": 2}
    assert stats[2].dropped == {"error": 1, "missing_measurement": 1}
    assert stats[3].dropped == {"error": 1}
    assert stats[4].dropped == {"error": 2}
    assert values(agg, 2) == {(): 0.5}
    assert events.stats()["handler_failures"] == 0


def test_the_first_skip_of_each_reason_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="radiosonde")
    run(
        [m.sum("http.request.stop.duration", tags=["route"], keep=lambda md: md.get("k", True))],
        *[({}, {"route": "/"})] * 3,
        *[({"duration": 1}, {})] * 3,
        *[({"duration": 1}, {"k": False})] * 3,
    )
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # filtered events are not a problem worth a warning
    assert "missing_measurement (measurement 'duration' is missing)" in messages[0]
    assert "missing_tag (tag 'route' missing from the metadata)" in messages[1]


@pytest.mark.parametrize(
    ("measurements", "metadata", "reason", "detail"),
    [
        ({}, {"route": "/"}, "missing_measurement", "measurement 'duration' is missing"),
        ({"duration": "x"}, {"route": "/"}, "invalid_measurement", "is 'x', not a number"),
        ({"duration": 1}, {}, "missing_tag", "tag 'route' missing from the metadata"),
    ],
)
def test_evaluate_explains_a_skip(
    measurements: dict[str, Any], metadata: dict[str, Any], reason: str, detail: str
) -> None:
    metric = m.sum("http.request.stop.duration", tags=["route"])
    result = evaluate(metric, measurements, metadata)
    assert result.skipped == reason
    assert detail in result.detail
    assert result.value is None


def test_evaluate_returns_value_and_tags() -> None:
    metric = m.distribution(
        "http.request.stop.duration", tags=["route"], unit=("second", "millisecond")
    )
    result = evaluate(metric, {"duration": 2}, {"route": 7})
    assert (result.value, result.tags, result.skipped) == (2000.0, ("7",), None)


# -- the fast path and the generic path agree --------------------------------------------------


class Color(str, enum.Enum):  # noqa: UP042  (the mixin on purpose: str() differs)
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Weird:
    def __str__(self) -> str:
        return "weird"


tag_value = st.one_of(
    st.text(max_size=3),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=3),
    st.sampled_from([Color.RED, Level.HIGH, Weird(), "red", 1, 1.0, True]),
)
measurement_value = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.sampled_from([Level.HIGH, 10**400, 2.5]),
)
# Mostly complete events, so that the value and tag checks are reached; sometimes not.
metadata_strategy = st.one_of(
    st.fixed_dictionaries({"a": tag_value, "b": tag_value}),
    st.fixed_dictionaries({"a": tag_value, "b": tag_value}),
    st.dictionaries(st.sampled_from(["a", "b"]), tag_value, max_size=2),
)
measurements_strategy = st.one_of(
    st.fixed_dictionaries({"v": measurement_value}),
    st.fixed_dictionaries({"v": measurement_value}),
    st.dictionaries(st.sampled_from(["v", "w"]), measurement_value, max_size=1),
)
TRICKY = [
    ({"v": math.nan}, {"a": "x", "b": "y"}),
    ({"v": True}, {"a": "x", "b": "y"}),
    ({"v": 10**400}, {"a": "x", "b": "y"}),
    ({"v": Level.HIGH}, {"a": Color.RED, "b": Level.HIGH}),
    ({"v": 2}, {"a": None, "b": b"\xff"}),
    ({"v": 2.5}, {"a": 1, "b": 1.0}),
    ({"v": 2.5}, {"a": True, "b": Weird()}),
    ({"v": -math.inf}, {"a": "x", "b": "y"}),
    ({"v": "3"}, {"a": "x", "b": "y"}),
    ({}, {"a": "x", "b": "y"}),
    ({"v": 1}, {"a": "x"}),
]


@pytest.mark.parametrize("kind", ["counter", "sum", "last_value", "summary", "distribution"])
@given(updates=st.lists(st.tuples(measurements_strategy, metadata_strategy), max_size=25))
@example(updates=TRICKY)
@settings(max_examples=100, deadline=None)
def test_the_compiled_fast_path_matches_the_definition_semantics(
    kind: str, updates: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """The fast path (a key and plain tags) against the generic one (forced by a keep= that
    always says yes) and against Metric.value / Metric.tags_for directly."""
    events._reset_for_tests()
    define = getattr(m, kind)
    unit = ("second", "millisecond")
    fast = define("x.y.v", tags=["a", "b"], unit=unit)
    generic = define("x.y.w", measurement="v", tags=["a", "b"], unit=unit, keep=lambda md: True)
    with Aggregator([fast, generic]) as agg:
        for measurements, metadata in updates:
            radiosonde.execute(("x", "y"), measurements, metadata)
    snap_fast, snap_generic = agg.snapshot(emit_stats=False)
    assert _comparable(snap_fast) == _comparable(snap_generic)
    stats_fast, stats_generic = agg.stats()
    assert stats_fast.dropped == stats_generic.dropped
    taken = [
        (fast.value(measurements, metadata), fast.tags_for(metadata))
        for measurements, metadata in updates
    ]
    taken = [(v, t) for v, t in taken if v is not None and t is not None]
    assert sum(stats_fast.dropped.values()) == len(updates) - len(taken)
    if kind == "sum":
        expected: dict[tuple[str, ...], float] = {}
        for v, t in taken:
            expected[t] = expected.get(t, 0.0) + v
        assert {tuple(s.tags.values()): s.value for s in snap_fast.series} == expected


def _comparable(snapshot: MetricSnapshot) -> list[Any]:
    return [
        (s.tags, s.value, s.count, s.sum, s.min, s.max, s.bucket_counts, s.quantiles)
        for s in snapshot.series
    ]


# -- cardinality guard -----------------------------------------------------------------------


def test_updates_past_the_series_limit_go_to_the_overflow_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="radiosonde")
    metric = m.counter("http.request.stop.duration", tags=["user"], max_series=3)
    agg = run([metric], *[({}, {"user": f"u{i % 5}"}) for i in range(10)])
    series = only(agg)
    assert [s.tags for s in series] == [
        {"user": "u0"},
        {"user": "u1"},
        {"user": "u2"},
        {"overflow": "true"},
    ]
    assert [s.value for s in series] == [2.0, 2.0, 2.0, 4.0]
    (stats,) = agg.stats()
    assert (stats.series, stats.max_series, stats.overflow) == (3, 3, 4)
    assert len([r for r in caplog.records if "limit of 3 series" in r.getMessage()]) == 1


def test_the_limit_comes_from_the_metric_then_the_aggregator_then_the_default() -> None:
    aggregation.set_default_max_series(2)
    own = m.counter("a.b", tags=["t"], max_series=5)
    plain = m.counter("a.c", tags=["t"])
    assert [s.max_series for s in Aggregator([own, plain]).stats()] == [5, 2]
    assert [s.max_series for s in Aggregator([own, plain], max_series=4).stats()] == [5, 4]


def test_every_kind_overflows_into_one_series() -> None:
    kinds = [m.sum, m.last_value, m.summary, m.distribution]
    metrics = [
        k(f"http.request.stop.{k.__name__}", measurement="v", tags=["t"], max_series=1)
        for k in kinds
    ]
    agg = run(metrics, ({"v": 1}, {"t": "a"}), ({"v": 2}, {"t": "b"}), ({"v": 3}, {"t": "c"}))
    for snapshot in agg.snapshot(emit_stats=False):
        assert [s.tags for s in snapshot.series] == [{"t": "a"}, {"overflow": "true"}]
    assert [s.overflow for s in agg.stats()] == [2, 2, 2, 2]
    summary = agg.snapshot(emit_stats=False)[2].series[1]
    assert (summary.count, summary.sum) == (2, 5.0)


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_series"):
        Aggregator([], max_series=0)
    with pytest.raises(ValueError, match="default max_series"):
        aggregation.set_default_max_series(-1)


def test_memory_does_not_grow_with_traffic() -> None:
    """Aggregated, not buffered: 10x more samples into the same series cost no more memory."""
    metric = m.distribution("h.e.v")
    with Aggregator([metric]):
        feed = [{"v": 1.0 + (i % 997) / 10} for i in range(20_000)]
        for measurements in feed[:2000]:
            radiosonde.execute(("h", "e"), measurements, {})
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for measurements in feed:
            radiosonde.execute(("h", "e"), measurements, {})
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    assert grown < 40_000


# -- threads ---------------------------------------------------------------------------------


DURATIONS = (1, 2, 3, 0, -1.5)  # the common path (positive) and the others (zero, negative)


def _hammer(threads: int, per_thread: int) -> None:
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        metadata = {"route": f"/r{index % 2}"}
        barrier.wait()
        for i in range(per_thread):
            radiosonde.execute(EVENT, {"duration": DURATIONS[i % 5]}, metadata)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


@pytest.fixture
def _frequent_thread_switches() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that a missing lock loses updates."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("_frequent_thread_switches")
@pytest.mark.parametrize("atomic_count", [True, False])
def test_no_update_is_lost_between_threads(
    monkeypatch: pytest.MonkeyPatch, atomic_count: bool
) -> None:
    monkeypatch.setattr(aggregation, "_ATOMIC_COUNT", atomic_count)
    metrics = [
        m.counter("http.request.stop.duration", tags=["route"]),
        m.sum("http.request.stop.duration", tags=["route"]),
        m.summary("http.request.stop.duration", tags=["route"]),
        m.distribution(
            "http.request.stop.duration", tags=["route"], reporter_options={"buckets": [1, 2]}
        ),
    ]
    n = 20_000
    with Aggregator(metrics) as agg:
        _hammer(4, n)
    counter, total, summary, distribution = agg.snapshot(emit_stats=False)
    per_route = 2 * n  # two threads per route
    per_route_sum = float(sum(DURATIONS[i % 5] for i in range(n)) * 2)
    assert [s.value for s in counter.series] == [per_route, per_route]
    assert [s.value for s in total.series] == [per_route_sum, per_route_sum]
    assert [s.count for s in summary.series] == [per_route, per_route]
    assert [s.sum for s in summary.series] == [per_route_sum, per_route_sum]
    assert [s.bucket_counts[-1] for s in distribution.series] == [per_route, per_route]
    assert [s.count for s in distribution.series] == [per_route, per_route]


def test_no_lock_is_held_while_user_code_runs() -> None:
    """A measurement function that needs the aggregator's state (a snapshot from another
    thread) would deadlock if the update held a lock around it."""
    finished: list[bool] = []
    holder: list[Aggregator] = []

    def measurement(measurements: dict[str, Any]) -> float:
        reader = threading.Thread(target=lambda: finished.append(bool(holder[0].snapshot())))
        reader.start()
        reader.join(timeout=10)
        return 1.0

    metric = m.summary("http.request.stop.duration", measurement=measurement, tags=["t"])
    plain = m.summary("http.request.stop.duration2", measurement="duration", tags=["t"])
    agg = Aggregator([plain, metric])
    holder.append(agg)
    with agg:
        radiosonde.execute(EVENT, {"duration": 1}, {"t": "x"})  # the series exist: locks in use
        radiosonde.execute(EVENT, {"duration": 1}, {"t": "x"})
    assert finished == [True, True]


# -- attaching, snapshots, self-metrics ------------------------------------------------------


def test_one_handler_per_event_name_and_idempotent_attach_detach() -> None:
    metrics = [
        m.counter("http.request.stop.duration"),
        m.sum("http.request.stop.duration"),
        m.counter("db.query.stop.duration"),
    ]
    agg = Aggregator(metrics, name="web")
    assert not agg.attached
    agg.attach()
    agg.attach()
    handlers = radiosonde.list_handlers()
    assert sorted(h.event for h in handlers) == [("db", "query", "stop"), EVENT]
    assert agg.attached
    radiosonde.execute(EVENT, {"duration": 2}, {})
    agg.detach()
    agg.detach()
    assert radiosonde.list_handlers() == []
    radiosonde.execute(EVENT, {"duration": 2}, {})
    assert [snap.series[0].value for snap in agg.snapshot(emit_stats=False)[:2]] == [1.0, 2.0]
    assert agg.snapshot(emit_stats=False)[2].series == []


def test_two_aggregators_of_the_same_metrics_count_independently() -> None:
    metric = m.counter("http.request.stop.duration")
    with Aggregator([metric], name="same") as first, Aggregator([metric], name="same") as second:
        radiosonde.execute(EVENT, {}, {})
    assert values(first) == values(second) == {(): 1.0}


def test_snapshot_follows_the_order_of_the_metrics() -> None:
    metrics = [m.sum("b.c.d"), m.counter("a.b.c"), m.last_value("b.c.e")]
    agg = Aggregator(metrics)
    assert agg.metrics == tuple(metrics)
    assert [s.metric for s in agg.snapshot()] == metrics


def test_snapshot_quantiles_can_be_chosen_or_skipped() -> None:
    agg = run([m.summary("http.request.stop.duration")], ({"duration": 3}, {}))
    assert only(agg)[0].quantiles == {0.5: 3.0, 0.9: 3.0, 0.95: 3.0, 0.99: 3.0}
    assert agg.snapshot(quantiles=(), emit_stats=False)[0].series[0].quantiles == {}
    assert agg.snapshot(quantiles=(0.25,), emit_stats=False)[0].series[0].quantiles == {0.25: 3.0}
    with pytest.raises(ValueError, match="between 0 and 1"):
        agg.snapshot(quantiles=(99,))


def test_bad_definitions_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="not a metric definition"):
        Aggregator(["http.request.stop.duration"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="a list of metrics"):
        Aggregator(m.counter("a.b"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="defined twice"):
        Aggregator([m.counter("a.b"), m.counter("a.b", tags=["x"])])
    with pytest.raises(ValueError, match="name"):
        Aggregator([], name="")
    Aggregator([m.counter("a.b"), m.sum("a.b")])  # same name, other kind: fine


def test_stats_events_are_emitted_when_a_snapshot_is_taken() -> None:
    metric = m.sum("http.request.stop.duration", tags=["t"], max_series=1)
    agg = run(
        [metric], ({"duration": 1}, {"t": "a"}), ({"duration": 1}, {"t": "b"}), ({}, {"t": "a"})
    )
    with capture_events("radiosonde.metrics.*") as captured:
        agg.snapshot()
    meta = {"aggregator": agg.name, "metric": metric.name, "kind": "sum"}
    assert captured == [
        (("radiosonde", "metrics", "series"), {"series": 1, "overflow": 1}, meta),
        (
            ("radiosonde", "metrics", "dropped"),
            {"dropped": 1},
            {**meta, "reason": "missing_measurement"},
        ),
    ]


def test_self_metrics_aggregate_like_any_other() -> None:
    mine = m.counter("http.request.stop.duration", tags=["route"])
    with Aggregator([mine, *self_metrics()], name="web") as agg:
        radiosonde.execute(EVENT, {}, {})  # no route: skipped
        report_error("statsd", "send", OSError("refused"))
        agg.snapshot()  # publishes the stats, which the self-metrics aggregate
        snapshot = {s.metric.name: s for s in agg.snapshot()}
    dropped_series = snapshot["radiosonde.metrics.dropped"].series
    assert dropped_series == [
        SeriesSnapshot(
            {"aggregator": "web", "metric": mine.name, "kind": "counter", "reason": "missing_tag"},
            value=1.0,
        )
    ]
    series = {tuple(s.tags.values()): s.value for s in snapshot["radiosonde.metrics.series"].series}
    assert series[("web", mine.name, "counter")] == 0.0
    errors = snapshot["radiosonde.reporter.errors"].series
    assert [(s.tags, s.value) for s in errors] == [({"reporter": "statsd", "kind": "send"}, 1.0)]


def test_report_error_emits_an_event_and_never_loops() -> None:
    def fails_again(*_args: Any) -> None:
        report_error("console", "write", None)  # an error while reporting an error
        raise RuntimeError("handler fails too")

    radiosonde.attach("loop", REPORTER_ERROR_EVENT, fails_again, on_error="keep")
    with capture_events(REPORTER_ERROR_EVENT) as captured:
        report_error("statsd", "send", OSError("x"))
    assert len(captured) == 1
    assert captured[0].metadata["reporter"] == "statsd"
    assert captured[0].measurements == {"count": 1}


def test_repr() -> None:
    agg = Aggregator([m.counter("a.b")], name="x")
    assert repr(agg) == "<Aggregator 'x' 1 metrics, detached>"


def test_user_functions_run_once_per_event_even_when_the_skip_is_logged() -> None:
    calls: list[str] = []

    def measurement(measurements: dict[str, Any]) -> Any:
        calls.append("measurement")
        return "not a number"

    def keep(metadata: dict[str, Any]) -> bool:
        calls.append("keep")
        return True

    agg = run(
        [m.sum("http.request.stop.x", measurement=measurement, keep=keep)], ({}, {}), ({}, {})
    )
    assert calls == ["keep", "measurement"] * 2
    assert dropped(agg) == {"invalid_measurement": 2}


def test_snapshot_rows_hold_what_snapshot_holds_without_series_objects() -> None:
    metrics = [
        m.counter("http.request.stop.count", tags=["route"], max_series=2),
        m.sum("http.request.stop.bytes", tags=["route"], max_series=2),
        m.last_value("http.request.stop.bytes", tags=["route"]),
        m.summary("http.request.stop.duration", tags=["route"]),
    ]
    agg = run(
        metrics,
        *[({"duration": 5, "bytes": 10.5}, {"route": f"/r{i % 3}"}) for i in range(7)],
    )
    rows = agg.snapshot_rows(quantiles=(0.5,), emit_stats=False)
    full = agg.snapshot(quantiles=(0.5,), emit_stats=False)
    counter_rows, sum_rows, last_rows, summary = rows
    assert isinstance(counter_rows, aggregation.ScalarRows)
    assert counter_rows.rows == [(("/r0",), 3.0), (("/r1",), 2.0)]
    assert counter_rows.overflow == 2.0  # the two updates of /r2, past the limit of 2
    assert sum_rows.rows == [(("/r0",), 31.5), (("/r1",), 21.0)]
    assert sum_rows.overflow == 21.0
    assert last_rows.overflow is None
    assert isinstance(summary, MetricSnapshot)  # distributions and summaries: as snapshot()
    for got, want in zip(rows, full, strict=True):
        assert got.metric is want.metric
        assert got.series == want.series
