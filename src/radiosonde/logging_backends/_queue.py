"""A bounded queue drained in batches by one background thread: how slow backends stay off the
caller's path.

``put`` never blocks and never raises: when the queue is full the item is dropped, counted and
reported (``("radiosonde", "log", "dropped")`` with reason ``"queue_full"``). The thread starts
on the first ``put`` (not at construction, so configuring a backend starts nothing) and again
after a ``fork``. ``flush(timeout)`` waits, at most ``timeout`` seconds, until everything put
before it has been handed to the sink; ``close(timeout)`` flushes, then stops the thread.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from radiosonde.logging_backends import _report

__all__ = ["BackgroundQueue"]

T = TypeVar("T")

# Every live queue, so a forked child can reset the locks and threads it inherited.
_queues: weakref.WeakSet[BackgroundQueue[object]] = weakref.WeakSet()


class BackgroundQueue(Generic[T]):
    """Items put by any thread, handed in batches to ``sink`` on one background thread.

    ``sink(batch)`` is called with 1 to ``batch_size`` items, in put order. It should handle
    its own errors; if it raises, the batch is dropped and the failure reported as a backend
    failure of ``owner``. After the first item of a batch arrives, the thread waits up to
    ``linger`` seconds for more (0 sends at once), unless a flush or close is asked for.
    """

    def __init__(
        self,
        owner: object,
        sink: Callable[[list[T]], None],
        *,
        max_queue: int = 10_000,
        batch_size: int = 100,
        linger: float = 0.0,
        thread_name: str = "radiosonde-log",
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, got {linger!r}")
        self.owner = owner
        self._sink = sink
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.linger = linger
        self._thread_name = thread_name
        self._init_state()
        _queues.add(self)  # type: ignore[arg-type]  # WeakSet is invariant; we only reset state

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[T] = deque()
        self._in_flight = 0
        self._flush_waiters = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the caller's side -------------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Queue one item; False (and the item dropped, counted, reported) when full or closed."""
        cond = self._cond
        with cond:
            if self._closed or len(self._items) >= self.max_queue:
                dropped = True
            else:
                dropped = False
                self._items.append(item)
                if self._thread is None:
                    self._start()
                elif self.linger == 0 or len(self._items) >= self.batch_size:
                    cond.notify()
        if dropped:
            _report.report_dropped(self.owner, 1, "closed" if self._closed else "queue_full")
            return False
        return True

    def __len__(self) -> int:
        return len(self._items)

    def flush(self, timeout: float) -> bool:
        """Wait until every item put so far went through the sink; False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                if not self._items:
                    return True
                self._start()
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._items or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float) -> bool:
        """Flush (at most ``timeout`` s), then stop the thread; later puts are dropped.

        Items still queued when the time is up are dropped and reported (reason ``"closed"``).
        Returns True when everything was sent in time.
        """
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            leftover = len(self._items)
            self._items.clear()
            self._cond.notify_all()
        self._stop.set()
        _report.report_dropped(self.owner, leftover, "closed")
        return flushed

    @property
    def stop_event(self) -> threading.Event:
        """Set when the queue is closed: a sink sleeping between retries should wait on it."""
        return self._stop

    @property
    def flushing(self) -> bool:
        """True while someone waits in :meth:`flush` or :meth:`close` (sinks stop lingering)."""
        return self._flush_waiters > 0 or self._closed

    # -- the thread's side -------------------------------------------------------------------

    def _start(self) -> None:
        # Called with the condition held.
        thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread = thread
        thread.start()

    def _next_batch(self) -> list[T] | None:
        cond = self._cond
        with cond:
            while not self._items:
                if self._closed:
                    return None
                cond.wait()
            if self.linger > 0 and len(self._items) < self.batch_size:
                deadline = time.monotonic() + self.linger
                while (
                    len(self._items) < self.batch_size
                    and not self._flush_waiters
                    and not self._closed
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
            n = min(self.batch_size, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            self._in_flight = n
            return batch

    def _run(self) -> None:
        _report.mark_worker_thread()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._sink(batch)
            except Exception as exc:
                _report.report_failure(self.owner, exc)
                _report.report_dropped(self.owner, len(batch), "send_failed")
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here and its lock may have been held at fork time:
    # start over with fresh state. What was queued is the parent's to send, not the child's.
    for queue in list(_queues):
        queue._init_state()


os.register_at_fork(after_in_child=_after_fork_in_child)
