"""The quantile sketch: the 1% error bound against exact quantiles, merging, bounded size."""

from __future__ import annotations

import math
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiosonde._sketch import RELATIVE_ACCURACY, QuantileSketch, nearest_rank

# Rounding in log() may move a value lying exactly on a bucket edge to the next bucket.
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
quantile = st.floats(min_value=0.0, max_value=1.0)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[nearest_rank(q, len(ordered)) - 1]


def within(estimate: float | None, truth: float) -> bool:
    assert estimate is not None
    return abs(estimate - truth) <= TOLERANCE * abs(truth)


def sketch_of(values: list[float]) -> QuantileSketch:
    sketch = QuantileSketch()
    for value in values:
        sketch.add(value)
    return sketch


@given(st.lists(finite, min_size=1, max_size=300), st.lists(quantile, min_size=1, max_size=5))
@settings(max_examples=300, deadline=None)
def test_every_quantile_is_within_one_percent_of_the_exact_one(
    values: list[float], qs: list[float]
) -> None:
    sketch = sketch_of(values)
    for q, estimate in zip(qs, sketch.quantiles(qs), strict=True):
        assert within(estimate, exact(values, q)), (q, estimate, exact(values, q))


@given(st.lists(positive, min_size=1, max_size=200), quantile)
@settings(max_examples=200, deadline=None)
def test_quantile_matches_quantiles(values: list[float], q: float) -> None:
    sketch = sketch_of(values)
    assert sketch.quantile(q) == sketch.quantiles([q])[0]


@given(st.lists(finite, min_size=1, max_size=200))
@settings(max_examples=200, deadline=None)
def test_count_sum_min_max_are_exact(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert sketch.count == len(values)
    assert sketch.sum == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-6)
    assert sketch.min == min(values)
    assert sketch.max == max(values)
    assert sketch.quantile(0.0) == min(values)
    assert sketch.quantile(1.0) == max(values)


@given(
    st.lists(finite, min_size=0, max_size=150),
    st.lists(finite, min_size=0, max_size=150),
    st.lists(quantile, min_size=1, max_size=4),
)
@settings(max_examples=200, deadline=None)
def test_a_merge_answers_like_one_sketch_of_both_streams(
    left: list[float], right: list[float], qs: list[float]
) -> None:
    merged = sketch_of(left)
    merged.merge(sketch_of(right))
    whole = sketch_of(left + right)
    assert merged.count == whole.count
    assert merged.quantiles(qs) == whole.quantiles(qs)
    if left or right:
        for q, estimate in zip(qs, merged.quantiles(qs), strict=True):
            assert within(estimate, exact(left + right, q))


def test_the_classic_percentiles_of_a_long_tailed_stream() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 2) for _ in range(50_000)]
    sketch = sketch_of(values)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        assert within(sketch.quantile(q), exact(values, q))
    assert sketch.bucket_count < 1000


def test_nearest_rank_ignores_float_noise() -> None:
    assert nearest_rank(0.95, 100) == 95  # 0.95 * 100 == 95.00000000000001
    assert nearest_rank(0.5, 3) == 2
    assert nearest_rank(0.0, 10) == 1
    assert nearest_rank(1.0, 10) == 10


def test_zero_and_negative_values() -> None:
    sketch = sketch_of([-100.0, -1.0, 0.0, 0.0, 0.0, 5.0])
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(0.1) == -100.0  # rank 1: the minimum, exactly
    assert within(sketch.quantile(0.3), -1.0)  # rank 2
    assert sketch.quantile(1.0) == 5.0


def test_nan_is_ignored_and_infinities_are_counted() -> None:
    sketch = sketch_of([math.nan, 1.0, math.inf, -math.inf])
    assert sketch.count == 3
    assert sketch.min == -math.inf
    assert sketch.max == math.inf
    assert sketch.quantile(0.5) == pytest.approx(1.0, rel=RELATIVE_ACCURACY)


def test_an_empty_sketch_has_no_quantiles() -> None:
    sketch = QuantileSketch()
    assert sketch.quantile(0.5) is None
    assert sketch.quantiles([0.1, 0.9]) == [None, None]


def test_quantiles_outside_zero_one_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        sketch_of([1.0]).quantile(1.5)


def test_max_buckets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buckets"):
        QuantileSketch(max_buckets=0)


def test_the_number_of_buckets_is_bounded_and_the_top_stays_accurate() -> None:
    sketch = QuantileSketch(max_buckets=64)
    values = [1.5**i for i in range(400)]  # spans ~1e70: far more than 64 buckets
    for value in values:
        sketch.add(value)
    assert sketch.bucket_count == 64
    assert sketch.count == 400
    # The lowest buckets were merged; the high quantiles keep the bound.
    for q in (0.9, 0.95, 0.99):
        assert within(sketch.quantile(q), exact(values, q))
    # Values below the collapsed floor still count, in the floor bucket.
    sketch.add(1.0)
    assert sketch.count == 401
    assert sketch.bucket_count == 64


def test_merging_collapsed_sketches_stays_bounded() -> None:
    low = QuantileSketch(max_buckets=32)
    high = QuantileSketch(max_buckets=32)
    for i in range(200):
        low.add(1.1**i)
        high.add(1.1 ** (i + 100))
    low.merge(high)
    assert low.bucket_count <= 32
    assert low.count == 400
    assert low.max == high.max


def test_copy_is_independent() -> None:
    sketch = sketch_of([1.0, 2.0, 3.0])
    clone = sketch.copy()
    clone.add(100.0)
    assert sketch.count == 3
    assert clone.count == 4
    assert sketch.max == 3.0


# -- add_many: a batch counts as the same values added one by one ------------------------------

any_float = st.one_of(
    finite,
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 1.7e308]),
)


def state(sketch: QuantileSketch) -> tuple[object, ...]:
    """Everything a sketch holds, ±0 told apart in min and max."""
    return (
        sketch.count,
        sketch.zero_count,
        math.copysign(1.0, sketch.min) if sketch.min == 0.0 else sketch.min,
        math.copysign(1.0, sketch.max) if sketch.max == 0.0 else sketch.max,
        sketch._pos,
        sketch._neg,
        sketch._floor,
        sketch.bucket_count,
    )


def same_sum(batched: QuantileSketch, reference: QuantileSketch) -> bool:
    if math.isnan(reference.sum):
        return math.isnan(batched.sum)
    if sys.version_info < (3, 12):  # sum() adds in order, as add() does
        return batched.sum == reference.sum
    # From 3.12 sum() compensates: at least as accurate as adding in order.
    return batched.sum == pytest.approx(reference.sum, rel=1e-9, abs=1e-6)


@given(
    st.lists(st.lists(any_float, max_size=70), max_size=4),
    st.sampled_from([4, 16, 2048]),
)
@settings(max_examples=300, deadline=None)
def test_add_many_is_the_same_as_adding_one_by_one(
    batches: list[list[float]], max_buckets: int
) -> None:
    batched = QuantileSketch(max_buckets)
    reference = QuantileSketch(max_buckets)
    for batch in batches:
        batched.add_many(batch)
        for value in batch:
            reference.add(value)
        assert state(batched) == state(reference)
        assert same_sum(batched, reference)
        qs = [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0]
        assert batched.quantiles(qs) == reference.quantiles(qs)


def test_add_many_keeps_the_first_of_equal_extremes_as_add_does() -> None:
    for values in ([0.0, -0.0], [-0.0, 0.0], [1.0, -0.0, 0.0], [-1.0, 0.0, -0.0]):
        batched = QuantileSketch()
        batched.add_many(values)
        reference = sketch_of(values)
        assert state(batched) == state(reference), values


def test_add_many_past_the_bucket_limit_collapses_like_add() -> None:
    values = [1.5**i for i in range(400)]
    rng = random.Random(11)
    rng.shuffle(values)
    batched = QuantileSketch(max_buckets=64)
    for start in range(0, 400, 64):
        batched.add_many(values[start : start + 64])
    batched.add_many([1.0, 2.0, -3.0])  # below the collapsed floor, and the other sign
    reference = QuantileSketch(max_buckets=64)
    for value in [*values, 1.0, 2.0, -3.0]:
        reference.add(value)
    assert batched.bucket_count == 65  # 64 positive, 1 negative
    assert state(batched) == state(reference)


def test_add_many_ignores_nan_and_accepts_an_empty_batch() -> None:
    sketch = QuantileSketch()
    sketch.add_many([])
    sketch.add_many([math.nan, math.nan])
    assert sketch.count == 0
    sketch.add_many([math.nan, 2.0, math.nan, 1.0])
    assert (sketch.count, sketch.sum, sketch.min, sketch.max) == (2, 3.0, 1.0, 2.0)
