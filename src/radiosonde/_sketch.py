"""A mergeable quantile sketch with a bounded relative error (DDSketch-style).

Values are counted in logarithmic buckets: bucket ``k`` holds the positive values in
``(gamma**(k-1), gamma**k]`` with ``gamma = (1 + a) / (1 - a)``, and reports them as
``2 * gamma**k / (gamma + 1)``, which is within a relative error ``a`` of every value in the
bucket. Negative values are counted the same way by magnitude; exact zeros have their own count.
With ``a = 0.01`` any quantile is within 1% of the exact nearest-rank quantile (up to float
rounding at bucket edges), whatever the data, as long as no buckets have been collapsed.

Memory is bounded: past ``max_buckets`` buckets per sign, the buckets of the smallest magnitudes
are merged into one, so the quantiles of the largest values keep their accuracy. With ``a = 0.01``
2048 buckets cover a ratio of about 1e17 between the smallest and the largest value, so the
limit is only reached by pathological data.

Two sketches merge exactly (bucket counts add up): the merged sketch answers as if it had seen
both streams. :meth:`QuantileSketch.add_many` counts a batch of values in a few C-level passes
(about 0.6x the cost per value of :meth:`~QuantileSketch.add`) with the same result as adding them
one by one. Not thread-safe: callers that share one serialise access themselves.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from math import ceil, log2

_count_elements: Callable[[dict[int, int], Iterable[int]], None]
try:
    # What Counter.update uses to count an iterable into a dict, in C. The stores stay plain
    # dicts: a Counter costs 20x more to create and 5x more to copy (its __init__ is Python).
    from collections import _count_elements  # type: ignore[attr-defined,no-redef]
except ImportError:  # another implementation: the same, in Python

    def _count_elements(mapping: dict[int, int], iterable: Iterable[int]) -> None:
        get = mapping.get
        for key in iterable:
            mapping[key] = get(key, 0) + 1


__all__ = ["MAX_BUCKETS", "RELATIVE_ACCURACY", "QuantileSketch", "nearest_rank"]

RELATIVE_ACCURACY = 0.01
"""The relative error bound of :meth:`QuantileSketch.quantile`."""

MAX_BUCKETS = 2048
"""The default bound on the number of buckets per sign."""

_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
# A value's key is ceil(log2(x) * _MULTIPLIER), i.e. ceil(log_gamma(x)): log2 rather than log
# because math.log takes an optional base and is parsed as varargs, which makes it twice as slow
# per call (the key is computed once per value: it is the bulk of the cost of add()).
_MULTIPLIER = 1 / math.log2(_GAMMA)
# The key of +/-inf: one past the key of the largest finite float, so infinities sort last.
_INF_KEY = math.ceil(math.log2(1.7976931348623157e308) * _MULTIPLIER) + 1
_INF = math.inf


def nearest_rank(q: float, count: int) -> int:
    """The 1-based rank of the ``q``-quantile among ``count`` values (nearest-rank definition).

    ``ceil(q * count)``, at least 1; the product is rounded to 9 decimals first so that
    ``nearest_rank(0.95, 100) == 95`` despite ``0.95 * 100 == 95.00000000000001``.
    """
    return max(1, math.ceil(round(q * count, 9)))


def _bucket_value(key: int) -> float:
    if key >= _INF_KEY:
        return math.inf
    return 2.0 * _GAMMA**key / (_GAMMA + 1.0)


class QuantileSketch:
    """Counts, sum, min, max and log-bucketed counts of a stream of floats.

    ``add`` counts one value: one ``log2``, one dict update, no allocation once the bucket
    exists; ``add_many`` counts a batch at about 0.6x the cost per value. NaN is ignored (not
    counted). ``quantile(q)`` follows the nearest-rank definition of :func:`nearest_rank`,
    within :data:`RELATIVE_ACCURACY` of the exact answer and clamped to ``[min, max]``; the
    first and the last rank (``quantile(0)``, ``quantile(1)``) are ``min`` and ``max`` exactly.
    """

    __slots__ = ("_floor", "_limit", "_neg", "_pos", "count", "max", "min", "sum", "zero_count")

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        if type(max_buckets) is not int or max_buckets < 1:
            raise ValueError(f"max_buckets must be a positive integer, got {max_buckets!r}")
        self._limit = max_buckets
        # Bucket key -> count, for positive values and for the magnitudes of negative ones.
        self._pos: dict[int, int] = {}
        self._neg: dict[int, int] = {}
        # The lowest key each store still has after a collapse: (positive, negative).
        self._floor: list[int | None] = [None, None]
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: float) -> None:
        """Count one value (a float; NaN is ignored)."""
        if x > 0.0:
            store = self._pos
            try:
                key = ceil(log2(x) * _MULTIPLIER)
            except OverflowError:  # +inf
                key = _INF_KEY
        elif x < 0.0:
            store = self._neg
            try:
                key = ceil(log2(-x) * _MULTIPLIER)
            except OverflowError:  # -inf
                key = _INF_KEY
        elif x == 0.0:
            self.zero_count += 1
            store = None
            key = 0
        else:  # NaN
            return
        self.count += 1
        self.sum += x
        # Compares, not min()/max(): a builtin call costs more on this hot path.
        if x < self.min:  # noqa: PLR1730
            self.min = x
        if x > self.max:  # noqa: PLR1730
            self.max = x
        if store is not None:
            n = store.get(key)
            if n is None:
                self._insert(store, key, 1)
            else:
                store[key] = n + 1

    def add_many(self, values: Sequence[float]) -> None:
        """Count every value of ``values`` (floats; NaNs are ignored), in their order.

        The result is the same as calling :meth:`add` on each value in turn (count, min, max,
        buckets; the sum is ``sum(values, start=self.sum)``, which is the same sequence of
        additions up to Python 3.11 and a compensated, more accurate one from 3.12). Cheaper
        per value than :meth:`add` for batches of a few dozen values and more.
        """
        total = sum(values, self.sum)
        if math.isnan(total):  # a NaN among the values, or inf - inf
            values = [x for x in values if not math.isnan(x)]
            total = sum(values, self.sum)
        if values:
            self._add_sorted(sorted(values), total)

    def _add_sorted(self, ordered: list[float], total: float) -> None:
        """:meth:`add_many` of values already sorted and NaN-free; ``total`` is the new sum.

        The sort must be stable (``list.sort``): of equal values, the first in arrival order
        comes first, which is what makes ``min`` and ``max`` the same as with :meth:`add` (it
        matters for ``0.0`` and ``-0.0`` only: ``add`` keeps the first of equal extremes).
        """
        n = len(ordered)
        self.count += n
        self.sum = total
        low = ordered[0]
        high = ordered[-1]
        # Compares, not min()/max() (a call costs more), and strict: of equal values the
        # first stays, as in add().
        if low < self.min:  # noqa: PLR1730
            self.min = low
        if low > 0.0 and high < _INF:  # the common case: finite positive values only
            if high > self.max:  # noqa: PLR1730
                self.max = high
            self._count_keys(self._pos, [ceil(log2(x) * _MULTIPLIER) for x in ordered])
            return
        zeros_from = bisect_left(ordered, 0.0)
        if high == 0.0:  # the first zero in arrival order is the first of the run of zeros
            high = ordered[zeros_from]
        if high > self.max:  # noqa: PLR1730
            self.max = high
        positives_from = bisect_right(ordered, 0.0, zeros_from)
        self.zero_count += positives_from - zeros_from
        if positives_from < n:
            end = bisect_left(ordered, _INF, positives_from) if high == _INF else n
            keys = [ceil(log2(x) * _MULTIPLIER) for x in ordered[positives_from:end]]
            if end < n:
                keys += [_INF_KEY] * (n - end)
            self._count_keys(self._pos, keys)
        if zeros_from:
            start = bisect_right(ordered, -_INF, 0, zeros_from) if low == -_INF else 0
            keys = [ceil(log2(-x) * _MULTIPLIER) for x in ordered[start:zeros_from]]
            if start:
                keys += [_INF_KEY] * start
            self._count_keys(self._neg, keys)

    def _count_keys(self, store: dict[int, int], keys: list[int]) -> None:
        _count_elements(store, keys)
        if len(store) > self._limit:
            # Collapsing once after the batch ends where inserting one by one does: either way
            # the highest _limit keys stay and the rest count in the lowest of them. (A key
            # below a collapsed floor is new, so it always brings the store past the limit.)
            self._collapse(store)

    def _insert(self, store: dict[int, int], key: int, n: int) -> None:
        floor = self._floor[0 if store is self._pos else 1]
        if floor is not None and key < floor:
            store[floor] = store.get(floor, 0) + n
            return
        store[key] = n
        if len(store) > self._limit:
            self._collapse(store)

    def _collapse(self, store: dict[int, int]) -> None:
        """Merge the lowest keys into one so that ``store`` holds ``_limit`` buckets."""
        keys = sorted(store)
        excess = len(keys) - self._limit
        floor = keys[excess]
        store[floor] += sum(store.pop(k) for k in keys[:excess])
        self._floor[0 if store is self._pos else 1] = floor

    @property
    def bucket_count(self) -> int:
        """How many buckets are in use (both signs, plus one for zeros if any)."""
        return len(self._pos) + len(self._neg) + (1 if self.zero_count else 0)

    def merge(self, other: QuantileSketch) -> None:
        """Add every value counted by ``other`` to this sketch (``other`` is unchanged)."""
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.zero_count += other.zero_count
        for mine, theirs, side in ((self._pos, other._pos, 0), (self._neg, other._neg, 1)):
            their_floor = other._floor[side]
            my_floor = self._floor[side]
            if their_floor is not None and (my_floor is None or their_floor > my_floor):
                # Their low end was collapsed: ours must be too, at the same key, to stay exact.
                self._floor[side] = their_floor
                low = [k for k in mine if k < their_floor]
                if low:
                    mine[their_floor] = mine.get(their_floor, 0) + sum(mine.pop(k) for k in low)
            for key, n in theirs.items():
                if key in mine:
                    mine[key] += n
                else:
                    self._insert(mine, key, n)

    def copy(self) -> QuantileSketch:
        """An independent copy."""
        clone = QuantileSketch(self._limit)
        clone._pos = self._pos.copy()
        clone._neg = self._neg.copy()
        clone._floor = list(self._floor)
        clone.zero_count = self.zero_count
        clone.count = self.count
        clone.sum = self.sum
        clone.min = self.min
        clone.max = self.max
        return clone

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (``0 <= q <= 1``), or ``None`` when nothing was counted."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Several quantiles in one pass over the buckets (same contract as :meth:`quantile`)."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be between 0 and 1, got {q!r}")
        if self.count == 0:
            return [None] * len(qs)
        count = self.count
        lo, hi = self.min, self.max
        results: list[float | None] = [None] * len(qs)
        pending: list[tuple[int, int]] = []  # (rank, index in qs) of the inner quantiles
        for index, q in enumerate(qs):
            rank = nearest_rank(q, count)
            # The first and last ranks are known exactly.
            if rank == 1:
                results[index] = lo
            elif rank >= count:
                results[index] = hi
            else:
                pending.append((rank, index))
        if not pending:
            return results
        pending.sort()
        cumulative = 0
        i = 0
        for value, n in self._ascending():
            cumulative += n
            while i < len(pending) and pending[i][0] <= cumulative:
                results[pending[i][1]] = min(max(value, lo), hi)
                i += 1
            if i == len(pending):
                break
        return results

    def _ascending(self) -> Iterable[tuple[float, int]]:
        for key in sorted(self._neg, reverse=True):
            yield -_bucket_value(key), self._neg[key]
        if self.zero_count:
            yield 0.0, self.zero_count
        for key in sorted(self._pos):
            yield _bucket_value(key), self._pos[key]

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(count={self.count}, min={self.min}, max={self.max},"
            f" buckets={self.bucket_count})"
        )
