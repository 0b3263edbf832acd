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
both streams. Not thread-safe: callers that share one serialise access themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from math import ceil, log

__all__ = ["MAX_BUCKETS", "RELATIVE_ACCURACY", "QuantileSketch", "nearest_rank"]

RELATIVE_ACCURACY = 0.01
"""The relative error bound of :meth:`QuantileSketch.quantile`."""

MAX_BUCKETS = 2048
"""The default bound on the number of buckets per sign."""

_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_MULTIPLIER = 1 / math.log(_GAMMA)
# The key of +/-inf: one past the key of the largest finite float, so infinities sort last.
_INF_KEY = math.ceil(math.log(1.7976931348623157e308) * _MULTIPLIER) + 1


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

    ``add`` is the hot path: one ``log``, one dict update, no allocation once the bucket
    exists. NaN is ignored (not counted). ``quantile(q)`` follows the nearest-rank definition
    of :func:`nearest_rank`, within :data:`RELATIVE_ACCURACY` of the exact answer and clamped
    to ``[min, max]``; the first and the last rank (``quantile(0)``, ``quantile(1)``) are
    ``min`` and ``max`` exactly.
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
                key = ceil(log(x) * _MULTIPLIER)
            except OverflowError:  # +inf
                key = _INF_KEY
        elif x < 0.0:
            store = self._neg
            try:
                key = ceil(log(-x) * _MULTIPLIER)
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
