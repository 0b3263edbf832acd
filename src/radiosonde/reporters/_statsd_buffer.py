"""The StatsD reporter's in-memory buffer: what event handlers write and the flusher reads.

The hot path takes no lock, and no update can be lost.

Counters (the commonest metric) share one ``itertools.count`` per series between all threads:
``next()`` on it is a single C call, atomic under the GIL, and the cheapest thread-safe
increment Python has. The flusher reads each count (through its ``repr``, the one way to read
it without moving it) and sends the difference from its previous reading. A series idle for two
flushes is taken out of the table and read once more on the next flush (so an increment racing
with its removal still counts), then forgotten. On a build without the GIL, counters use the
per-thread buffers below instead.

For everything else, each thread writes, for each metric, only to its own *shard* (found
through a ``threading.local`` per metric), so every dict has a single writer:

* sums (and counters without the GIL) keep a running total per series; the flusher copies the
  dict (one C-level operation) and sends the difference from its previous copy;
* last values keep ``(sequence, value)``; across threads the highest sequence wins;
* timer/distribution values go into a ``deque`` per series (one producer, one consumer:
  ``append`` and ``popleft`` are atomic).

Memory is bounded: a shard holds at most ``max_series`` series. When a thread needs a new
series in a full shard it *retires* the dict (hands it over whole to the flusher, who reads it
one last time) and starts an empty one; if the previous retired dict has not been read yet,
the update is dropped and counted. Buffered timer values are capped per shard. A shard whose
thread has ended is read one last time and forgotten.

Series are keyed by the raw tag values: the value itself for one tag, the tuple of values for
several, ``()`` for none; they are turned into text and sanitised at flush time, off the hot
path.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from random import random
from typing import Any, Literal, TypeAlias

from radiosonde.events import Handler
from radiosonde.metrics import Metric, tag_text

Mode: TypeAlias = Literal["count", "gauge", "samples"]
_Internal: TypeAlias = Literal["tally", "count", "gauge", "samples"]
Key: TypeAlias = tuple[int, Any]
"""``(slot, raw tag values)``: a series of the metric at index ``slot``."""


class _Shard:
    """One thread's buffer for one metric.

    Written by the owning thread only: ``data``, ``retired``, ``appended`` and the drop
    counters; by the flusher only: ``consumed`` and ``tracked``; ``dead`` by the callback that
    runs when the thread has ended.
    """

    __slots__ = (
        "__weakref__",
        "appended",
        "consumed",
        "data",
        "dead",
        "dropped_samples",
        "dropped_series",
        "retired",
        "skipped",
        "slot",
        "tracked",
        "watch",
    )

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.data: dict[Any, Any] = {}
        self.retired: deque[dict[Any, Any]] = deque()
        self.appended = 0
        self.consumed = 0
        self.skipped = 0
        self.dropped_series = 0
        self.dropped_samples = 0
        self.dead = False
        self.watch: weakref.ref[_Token] | None = None
        # id(dict) -> (dict, the flusher's last copy of it)
        self.tracked: dict[int, tuple[dict[Any, Any], dict[Any, Any]]] = {}


class _Token:
    """Lives in the thread-local: its death tells that the thread (and its writes) ended."""

    __slots__ = ("__weakref__",)


class Drained:
    """What one flush took from the buffer, per series."""

    __slots__ = ("counts", "gauges", "samples")

    def __init__(self) -> None:
        self.counts: dict[Key, float] = {}
        self.gauges: dict[Key, tuple[int, float]] = {}
        self.samples: dict[Key, list[float]] = {}


_COUNTERS = ("skipped", "dropped_series", "dropped_samples")


def _gil_counts() -> bool:
    """Whether ``next()`` on an ``itertools.count`` is atomic here and its value readable."""
    gil_enabled = getattr(sys, "_is_gil_enabled", None)  # Python >= 3.13
    if gil_enabled is not None and not gil_enabled():
        return False
    return repr(itertools.count(7)) == "count(7)"


SHARED_COUNTS = _gil_counts()
"""Counters use shared ``itertools.count`` tables (else per-thread shards)."""


def _read(count: itertools.count[int]) -> int:
    # "count(42)": the only way to read a count without advancing it (its pickling support,
    # the other one, is deprecated since Python 3.12).
    return int(repr(count)[6:-1])


class _Table:
    """The shared series of one counter: ``series`` is written by any thread (only to add a
    series, with ``setdefault``), entries are removed by the flusher only."""

    __slots__ = ("dropped", "last", "retiring", "series", "skipped")

    def __init__(self) -> None:
        self.series: dict[Any, itertools.count[int]] = {}
        self.skipped = itertools.count()
        self.dropped = itertools.count()
        # Flusher-only: raw -> (count, value at the last reading, flushes seen idle).
        self.last: dict[Any, tuple[itertools.count[int], int, int]] = {}
        # Flusher-only: counts taken out of ``series``, read once more on the next flush.
        self.retiring: list[tuple[Any, itertools.count[int], int]] = []


class Collector:
    """Builds the event handlers of a set of metrics and drains what they buffered."""

    def __init__(
        self,
        metrics: Sequence[Metric],
        modes: Sequence[Mode],
        *,
        tag_defaults: Mapping[str, str],
        max_series: int,
        max_samples: int,
        shared_counts: bool | None = None,
    ) -> None:
        self.metrics = tuple(metrics)
        shared = SHARED_COUNTS if shared_counts is None else shared_counts
        self.modes: tuple[_Internal, ...] = tuple(
            "tally" if shared and metric.kind == "counter" else mode
            for metric, mode in zip(self.metrics, modes, strict=True)
        )
        self.tag_defaults = dict(tag_defaults)
        self.max_series = tuple(m.max_series or max_series for m in self.metrics)
        self.max_samples = max_samples
        self._locals = tuple(threading.local() for _ in self.metrics)
        self._tables = tuple(_Table() for _ in self.metrics)
        self._shards: list[_Shard] = []
        self._seq = itertools.count(1)
        self._stats_lock = threading.Lock()
        # The counts of shards already forgotten (their thread ended).
        self._gone = dict.fromkeys(_COUNTERS, 0)

    # -- hot path ------------------------------------------------------------------------------

    def handler(self, slot: int) -> Handler:
        """The event handler for metric ``slot``: never raises, takes no lock."""
        metric = self.metrics[slot]
        mode = self.modes[slot]
        local = self._locals[slot]
        slow = self._update
        computed = metric.tag_values is not None or metric.keep is not None
        if mode == "tally":
            handler = self._tallying(slot, computed or metric.drop is not None)
        elif computed or metric.drop is not None or not isinstance(metric.measurement, str):
            handler = self._general(slot)
        elif metric.kind == "counter":
            handler = self._counting(slot, local, slow)
        elif mode == "count":
            handler = self._adding(slot, local, slow)
        elif mode == "gauge":
            handler = self._setting(slot, local, slow)
        else:
            handler = self._recording(slot, local, slow)
        rate = float(metric.reporter_options.get("sampling_rate") or 1.0)
        if rate >= 1.0:
            return handler
        inner = handler

        def sampled(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            if random() < rate:
                inner(event, measurements, metadata, config)

        return sampled

    # The fast handlers handle the common case (known thread, known series, plain numbers) and
    # hand everything else to the general path, which re-checks from scratch. An exception can
    # only come before their single write, so nothing is counted twice.

    def _tag_key(self, slot: int) -> Callable[[Any], Any] | None:
        tags = self.metrics[slot].tags
        return itemgetter(*tags) if tags else None

    def _tallying(self, slot: int, general: bool) -> Handler:
        series = self._tables[slot].series
        slow = self._tally
        key_of = self._tag_key(slot)
        if general:

            def tally_general(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
                slow(slot, metadata)

            return tally_general
        if key_of is None:

            def tally_untagged(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
                try:
                    next(series[()])
                except Exception:
                    slow(slot, metadata)

            return tally_untagged

        def tally(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            try:
                next(series[key_of(metadata)])
            except Exception:
                slow(slot, metadata)

        return tally

    def _tally(self, slot: int, metadata: Any) -> None:
        """The general path of a shared counter. Never raises."""
        table = self._tables[slot]
        try:
            key = self._series_key(self.metrics[slot], metadata)
            if key is _SKIP:
                next(table.skipped)
                return
            series = table.series
            count = series.get(key)
            if count is None:
                if len(series) >= self.max_series[slot]:
                    next(table.dropped)
                    return
                count = series.setdefault(key, itertools.count())
            next(count)
        except Exception:
            next(table.skipped)

    def _counting(self, slot: int, local: threading.local, slow: _Slow) -> Handler:
        key_of = self._tag_key(slot)
        if key_of is None:

            def count_untagged(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
                try:
                    local.data[()] += 1.0
                except Exception:
                    slow(slot, measurements, metadata)

            return count_untagged

        def count(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            try:
                local.data[key_of(metadata)] += 1.0
            except Exception:
                slow(slot, measurements, metadata)

        return count

    def _adding(self, slot: int, local: threading.local, slow: _Slow) -> Handler:
        key_of = self._tag_key(slot) or _no_tags
        field = self.metrics[slot].measurement
        scale = self.metrics[slot].scale

        def add(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            try:
                value = measurements[field]
                if type(value) is float or type(value) is int:
                    value = value * scale
                    if value - value == 0.0:  # finite
                        local.data[key_of(metadata)] += value
                        return
            except Exception:
                pass
            slow(slot, measurements, metadata)

        return add

    def _setting(self, slot: int, local: threading.local, slow: _Slow) -> Handler:
        key_of = self._tag_key(slot) or _no_tags
        field = self.metrics[slot].measurement
        scale = self.metrics[slot].scale
        seq = self._seq

        def put(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            try:
                value = measurements[field]
                if type(value) is float or type(value) is int:
                    value = value * scale
                    if value - value == 0.0:
                        key = key_of(metadata)
                        data = local.data
                        if key in data:
                            data[key] = (next(seq), value)
                            return
            except Exception:
                pass
            slow(slot, measurements, metadata)

        return put

    def _recording(self, slot: int, local: threading.local, slow: _Slow) -> Handler:
        key_of = self._tag_key(slot) or _no_tags
        field = self.metrics[slot].measurement
        scale = self.metrics[slot].scale
        cap = self.max_samples

        def record(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            try:
                value = measurements[field]
                if type(value) is float or type(value) is int:
                    value = value * scale
                    if value - value == 0.0:
                        shard = local.shard
                        values = shard.data[key_of(metadata)]
                        if shard.appended - shard.consumed < cap:
                            values.append(value)
                            shard.appended += 1
                        else:
                            shard.dropped_samples += 1
                        return
            except Exception:
                pass
            slow(slot, measurements, metadata)

        return record

    def _general(self, slot: int) -> Handler:
        slow = self._update

        def general(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
            slow(slot, measurements, metadata)

        return general

    def _update(self, slot: int, measurements: Mapping[str, Any], metadata: Any) -> None:
        """The general path of a per-thread buffer: every check, new series, new threads, bad
        input. Never raises."""
        shard = self._shard(slot)
        try:
            metric = self.metrics[slot]
            mode = self.modes[slot]
            value = metric.value(measurements, metadata)
            if value is None or not math.isfinite(value):
                shard.skipped += 1
                return
            key = self._series_key(metric, metadata)
            if key is _SKIP:
                shard.skipped += 1
                return
            data = shard.data
            if key not in data:
                if len(data) >= self.max_series[slot]:
                    if shard.retired:
                        shard.dropped_series += 1
                        return
                    shard.retired.append(data)
                    data = shard.data = self._locals[slot].data = {}
                if mode == "count":
                    data[key] = 0.0
                elif mode == "samples":
                    data[key] = deque()
            if mode == "count":
                data[key] += value
            elif mode == "gauge":
                data[key] = (next(self._seq), value)
            elif shard.appended - shard.consumed < self.max_samples:
                data[key].append(value)
                shard.appended += 1
            else:
                shard.dropped_samples += 1
        except Exception:
            shard.skipped += 1

    def _series_key(self, metric: Metric, metadata: Any) -> Any:
        """The series key, as the fast handlers build it (the raw tag values, a global tag
        standing in for a missing one); ``_SKIP`` to skip the update."""
        try:
            if metric.keep is not None and not metric.keep(metadata):
                return _SKIP
            if metric.drop is not None and metric.drop(metadata):
                return _SKIP
            source = metric.tag_values(metadata) if metric.tag_values is not None else metadata
            values = []
            for tag in metric.tags:
                if tag in source:
                    values.append(source[tag])
                elif tag in self.tag_defaults:
                    values.append(self.tag_defaults[tag])
                else:
                    return _SKIP
        except Exception:
            return _SKIP
        key: Any = () if not values else values[0] if len(values) == 1 else tuple(values)
        try:
            hash(key)
        except TypeError:  # e.g. a list in the metadata: key the series by its text
            key = tag_text(key) if len(values) == 1 else tuple(tag_text(v) for v in values)
        return key

    def _shard(self, slot: int) -> _Shard:
        local = self._locals[slot]
        try:
            shard: _Shard = local.shard
            return shard
        except AttributeError:
            pass
        shard = _Shard(slot)
        token = _Token()
        # The thread-local's values die with their thread, and so does the token: its
        # callback marks the shard as final (every write of that thread happened before).
        ref = weakref.ref(shard)

        def ended(_: object) -> None:
            target = ref()
            if target is not None:
                target.dead = True

        shard.watch = weakref.ref(token, ended)
        local.token = token
        local.shard = shard
        local.data = shard.data
        self._shards.append(shard)
        return shard

    # -- flusher side --------------------------------------------------------------------------

    def drain(self) -> Drained:
        """Take everything buffered since the last drain. Call from one thread at a time."""
        out = Drained()
        for slot, mode in enumerate(self.modes):
            if mode == "tally":
                self._drain_table(slot, out.counts)
        for shard in list(self._shards):
            dead = shard.dead  # read first: if set, every write of its thread is visible below
            retired: list[dict[Any, Any]] = []
            while shard.retired:
                retired.append(shard.retired.popleft())
            current = shard.data
            for data in retired:
                self._take(shard, data, out, final=True)
            if not any(current is data for data in retired):
                self._take(shard, current, out, final=dead)
            if dead:
                with self._stats_lock:
                    for name in _COUNTERS:
                        self._gone[name] += getattr(shard, name)
                    self._shards.remove(shard)
        return out

    def _drain_table(self, slot: int, counts: dict[Key, float]) -> None:
        table = self._tables[slot]
        # Increments that raced with a removal at the previous drain.
        for raw, count, seen in table.retiring:
            late = _read(count) - seen
            if late:
                key = (slot, raw)
                counts[key] = counts.get(key, 0.0) + late
        table.retiring = []
        last = table.last
        fresh: dict[Any, tuple[itertools.count[int], int, int]] = {}
        for raw, count in table.series.copy().items():
            value = _read(count)
            previous = last.get(raw)
            if previous is not None and previous[0] is not count:
                previous = None  # a new series under the same key
            delta = value - (previous[1] if previous is not None else 0)
            if delta:
                key = (slot, raw)
                counts[key] = counts.get(key, 0.0) + delta
                fresh[raw] = (count, value, 0)
                continue
            idle = previous[2] + 1 if previous is not None else 1
            if idle >= 2 and table.series.get(raw) is count:
                # Only this thread removes entries: nobody can have replaced it in between.
                del table.series[raw]
                table.retiring.append((raw, count, value))
            else:
                fresh[raw] = (count, value, idle)
        table.last = fresh

    def _take(self, shard: _Shard, data: dict[Any, Any], out: Drained, *, final: bool) -> None:
        entry = shard.tracked.pop(id(data), None)
        previous = entry[1] if entry is not None and entry[0] is data else {}
        snapshot = data.copy()
        slot = shard.slot
        mode = self.modes[slot]
        if mode == "count":
            counts = out.counts
            for raw, total in snapshot.items():
                delta = total - previous.get(raw, 0.0)
                if delta:
                    key = (slot, raw)
                    counts[key] = counts.get(key, 0.0) + delta
        elif mode == "gauge":
            gauges = out.gauges
            for raw, latest in snapshot.items():
                # Unchanged since the last drain: the very same (sequence, value) tuple.
                if latest is not previous.get(raw):
                    key = (slot, raw)
                    held = gauges.get(key)
                    if held is None or latest[0] > held[0]:
                        gauges[key] = latest
        else:
            samples = out.samples
            for raw, values in snapshot.items():
                n = len(values)
                if n:
                    popleft = values.popleft
                    samples.setdefault((slot, raw), []).extend(popleft() for _ in range(n))
                    shard.consumed += n
        if not final:
            shard.tracked[id(data)] = (data, snapshot)

    def stats(self) -> dict[str, int]:
        """``skipped`` (bad measurement or missing tag), ``dropped_series`` (more series of a
        metric than its limit), ``dropped_samples`` (timer values over the buffer's limit)."""
        with self._stats_lock:
            totals = dict(self._gone)
            shards = list(self._shards)
        for shard in shards:
            for name in _COUNTERS:
                totals[name] += getattr(shard, name)
        for table in self._tables:
            totals["skipped"] += _read(table.skipped)
            totals["dropped_series"] += _read(table.dropped)
        return totals

    def buffers(self) -> int:
        """Per-thread, per-metric buffers held now (shared counter tables not included)."""
        return len(self._shards)


_Slow: TypeAlias = Callable[[int, Mapping[str, Any], Any], None]
_SKIP: Any = object()


def _no_tags(metadata: Any) -> tuple[()]:
    return ()
