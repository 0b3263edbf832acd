"""Summaries and distributions take values in batches: an update appends its value to the
series' pending list without a lock, a full batch (or a snapshot) folds it into the sketch and
the buckets. These tests hold the batching to the contract: snapshots see every update, exactly;
memory stays bounded; nothing is lost between threads while batches are being folded."""

from __future__ import annotations

import math
import sys
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import radiosonde
from radiosonde import aggregation, events
from radiosonde import metrics as m
from radiosonde._sketch import QuantileSketch
from radiosonde.aggregation import Aggregator, SeriesSnapshot

EVENT = ("svc", "op", "stop")
BATCH = aggregation._BATCH
BOUNDS = [-1.0, 0.0, 1.0, 2.5, 10.0, 100.0]


def distribution(**options: Any) -> m.Metric:
    return m.distribution("svc.op.stop.v", reporter_options={"buckets": BOUNDS}, **options)


def pending(agg: Aggregator, index: int = 0) -> list[list[float]]:
    """The values waiting to be folded, per series (internal: what bounds the memory)."""
    state = agg._states[index]
    return [series.pending for series in state.series.values()]


def only_series(agg: Aggregator, index: int = 0) -> SeriesSnapshot:
    (series,) = agg.snapshot(emit_stats=False)[index].series
    return series


def expected_buckets(values: list[float]) -> tuple[int, ...]:
    per_bucket = [0] * (len(BOUNDS) + 1)
    for value in values:
        per_bucket[bisect_left(BOUNDS, value)] += 1
    cumulative, total = [], 0
    for n in per_bucket:
        total += n
        cumulative.append(total)
    return tuple(cumulative)


@pytest.fixture
def _frequent_thread_switches() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_a_snapshot_sees_the_values_of_a_batch_not_yet_full() -> None:
    values = [3.0, 0.5, 250.0, -2.0, 0.0]
    assert len(values) < BATCH
    with Aggregator([distribution(), m.summary("svc.op.stop.v")]) as agg:
        for value in values:
            radiosonde.execute(EVENT, {"v": value})
        assert [len(p) for p in pending(agg)] == [len(values)]  # nothing folded yet
        dist = only_series(agg)
        summary = only_series(agg, 1)
        assert pending(agg) == [[]]  # the snapshot folded them
    for series in (dist, summary):
        assert (series.count, series.sum, series.min, series.max) == (5, 251.5, -2.0, 250.0)
        assert series.quantiles[0.5] == pytest.approx(0.5, rel=0.01)
    assert dist.bucket_counts == expected_buckets(values)


def test_pending_values_stay_below_one_batch_per_series() -> None:
    with Aggregator([distribution(tags=["t"])]) as agg:
        for i in range(10 * BATCH + 7):
            radiosonde.execute(EVENT, {"v": float(i)}, {"t": f"s{i % 3}"})
            assert all(len(p) < BATCH for p in pending(agg))
        snapshot = agg.snapshot(emit_stats=False)[0]
    assert sum(s.count for s in snapshot.series) == 10 * BATCH + 7


def test_an_append_racing_with_a_fold_is_kept() -> None:
    """The interleaving that a swap of the pending list would lose, played in order: an update
    has read ``series.pending`` when a fold runs, then appends."""
    with Aggregator([distribution()]) as agg:
        radiosonde.execute(EVENT, {"v": 1.0})
        (series,) = agg._states[0].series.values()
        held = series.pending  # what the update read just before the fold
        assert only_series(agg).count == 1  # the snapshot folds
        held.append(2.0)  # the update goes on
        late = only_series(agg)
    assert (late.count, late.sum, late.max) == (2, 3.0, 2.0)


def test_an_update_never_waits_for_a_busy_lock_to_fold() -> None:
    """While the metric's lock is held (a snapshot, another thread's fold, or a finalizer run
    in the middle of a fold), updates keep appending; the first one after folds them all."""
    with Aggregator([distribution()]) as agg:
        radiosonde.execute(EVENT, {"v": 0.5})  # the series exists (making one takes the lock)
        only_series(agg)
        lock = agg._states[0].lock
        finished = threading.Event()

        def update_many() -> None:
            for i in range(2 * BATCH):
                radiosonde.execute(EVENT, {"v": float(i)})
            finished.set()

        with lock:
            worker = threading.Thread(target=update_many)
            worker.start()
            waited = not finished.wait(timeout=10)
            assert [len(p) for p in pending(agg)] == [2 * BATCH]
        worker.join()
        assert not waited
        radiosonde.execute(EVENT, {"v": -1.0})
        assert pending(agg) == [[]]  # that update found the lock free and folded everything
        series = only_series(agg)
    assert (series.count, series.min, series.max) == (2 * BATCH + 2, -1.0, 2 * BATCH - 1.0)


measurement = st.one_of(
    st.floats(allow_nan=False, min_value=-1e9, max_value=1e9),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, 5e-324, 1.0, 2.5, 100.0]),
    st.integers(min_value=-(10**6), max_value=10**6),
)


@given(st.lists(measurement, min_size=1, max_size=4 * BATCH + 3))
@settings(max_examples=60, deadline=None)
def test_batched_series_match_a_reference_computed_value_by_value(values: list[float]) -> None:
    events._reset_for_tests()
    with Aggregator([distribution(), m.summary("svc.op.stop.v")]) as agg:
        for value in values:
            radiosonde.execute(EVENT, {"v": value})
    floats = [float(v) for v in values]
    reference = QuantileSketch()
    for value in floats:
        reference.add(value)
    qs = aggregation.DEFAULT_QUANTILES
    for series in (only_series(agg), only_series(agg, 1)):
        assert series.count == len(values)
        assert (series.min, series.max) == (min(floats), max(floats))
        if math.isnan(reference.sum):  # inf - inf
            assert math.isnan(series.sum)
        elif sys.version_info < (3, 12):  # sum() adds in order there, as the reference does
            assert series.sum == reference.sum
        else:
            assert series.sum == pytest.approx(reference.sum, rel=1e-9, abs=1e-6, nan_ok=True)
        assert series.quantiles == {
            q: v for q, v in zip(qs, reference.quantiles(qs), strict=True) if v is not None
        }
    assert only_series(agg).bucket_counts == expected_buckets(floats)


@pytest.mark.usefixtures("_frequent_thread_switches")
@pytest.mark.parametrize("kind", ["summary", "distribution"])
def test_nothing_is_lost_while_snapshots_fold_batches_concurrently(kind: str) -> None:
    """Four writers append while a reader keeps taking snapshots (each one folds the pending
    values under the lock, racing with the appends)."""
    writers, per_writer = 4, 6_000
    metric = (
        distribution(tags=["t"])
        if kind == "distribution"
        else m.summary("svc.op.stop.v", tags=["t"])
    )
    barrier = threading.Barrier(writers + 1)
    done = threading.Event()
    counts_seen: list[int] = []

    def write(index: int) -> None:
        metadata = {"t": "shared"}
        barrier.wait()
        for i in range(per_writer):
            # Distinct small integers: any order of addition gives the same exact sum.
            radiosonde.execute(EVENT, {"v": float(index * per_writer + i) - 100.0}, metadata)

    def read(agg: Aggregator) -> None:
        barrier.wait()
        while not done.is_set():
            for snapshot in agg.snapshot(emit_stats=False)[0].series:
                counts_seen.append(snapshot.count)

    with Aggregator([metric]) as agg:
        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        reader = threading.Thread(target=read, args=(agg,))
        for thread in [*threads, reader]:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        reader.join()
        series = only_series(agg)
    values = [float(i) - 100.0 for i in range(writers * per_writer)]
    assert series.count == len(values)
    assert series.sum == sum(values)
    assert (series.min, series.max) == (min(values), max(values))
    assert counts_seen  # the reader did race with the writers
    assert counts_seen == sorted(counts_seen)  # every snapshot saw at least what the last did
    if kind == "distribution":
        assert series.bucket_counts == expected_buckets(values)
