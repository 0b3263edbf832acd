"""The default runtime measurements behind :mod:`radiosonde.poller` (private mechanics).

Each measurement is a callable object that reads one aspect of the process and emits one event
(per generation for GC). Values a platform cannot give are left out of the measurements rather
than reported as zero, so a metric on them skips the update instead of plotting a lie.

``psutil`` is imported only when a measurement is built with it; the standard-library readers
(``/proc/self/*``, :mod:`resource`, :func:`os.times`, :mod:`threading`) need nothing.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from radiosonde.events import EventName, execute

if TYPE_CHECKING:
    import asyncio

MEMORY_EVENT: EventName = ("radiosonde", "runtime", "memory")
CPU_EVENT: EventName = ("radiosonde", "runtime", "cpu")
FDS_EVENT: EventName = ("radiosonde", "runtime", "fds")
THREADS_EVENT: EventName = ("radiosonde", "runtime", "threads")
GC_EVENT: EventName = ("radiosonde", "runtime", "gc")
EVENT_LOOP_EVENT: EventName = ("radiosonde", "runtime", "event_loop")

PSUTIL_HINT = "pip install 'radiosonde[runtime]'"

try:
    import resource as _resource
except ImportError:  # Windows
    _resource = None  # type: ignore[assignment]

# ru_maxrss is in kibibytes on Linux and the BSDs, in bytes on macOS.
_MAXRSS_SCALE = 1 if sys.platform == "darwin" else 1024


def load_psutil(required: bool) -> Any:
    """Import psutil; ``None`` when it is missing and not ``required``, else ImportError."""
    try:
        # Through importlib: psutil is optional and ships no type stubs.
        psutil = importlib.import_module("psutil")
    except ImportError as exc:
        if required:
            raise ImportError(
                f"the psutil runtime measurements need psutil: {PSUTIL_HINT}"
            ) from exc
        return None
    return psutil


class _Process:
    """A psutil.Process for the current pid, rebuilt after a fork (psutil pins the pid)."""

    __slots__ = ("_pid", "_process", "_psutil")

    def __init__(self, psutil: Any) -> None:
        self._psutil = psutil
        self._pid = os.getpid()
        self._process = psutil.Process(self._pid)

    def get(self) -> Any:
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self._process = self._psutil.Process(pid)
        return self._process


class RuntimeMeasurement:
    """Base of the default measurements: a ``name`` for failure reports and the data source."""

    name = "runtime"
    source = "stdlib"

    def __call__(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<radiosonde runtime measurement {self.name!r} ({self.source})>"


class MemoryMeasurement(RuntimeMeasurement):
    """``("radiosonde", "runtime", "memory")``: ``rss``, ``vms``, ``peak_rss`` in bytes."""

    name = "memory"

    def __init__(self, psutil: Any = None, proc: str = "/proc") -> None:
        self._process = _Process(psutil) if psutil is not None else None
        self.source = "psutil" if psutil is not None else "stdlib"
        self._statm = os.path.join(proc, "self", "statm")
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __call__(self) -> None:
        values: dict[str, int] = {}
        if self._process is not None:
            info = self._process.get().memory_info()
            values["rss"] = int(info.rss)
            values["vms"] = int(info.vms)
            peak = getattr(info, "peak_wset", None)  # Windows only
            if peak is not None:
                values["peak_rss"] = int(peak)
        else:
            try:
                with open(self._statm, "rb") as statm:
                    size, resident = statm.read().split()[:2]
            except OSError:
                pass  # no procfs (macOS, BSD): only the peak below is known
            else:
                values["vms"] = int(size) * self._page_size
                values["rss"] = int(resident) * self._page_size
        if "peak_rss" not in values and _resource is not None:
            values["peak_rss"] = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss * (
                _MAXRSS_SCALE
            )
        execute(MEMORY_EVENT, values)


class CpuMeasurement(RuntimeMeasurement):
    """``("radiosonde", "runtime", "cpu")``: cumulative ``user_time``/``system_time`` (seconds)
    and ``utilisation``, the percent of one CPU used since the previous reading."""

    name = "cpu"

    def __init__(self, psutil: Any = None) -> None:
        # The standard library is the right tool on every path: psutil.Process.cpu_times()
        # reads the same clock-tick counters (10 ms steps on Linux) as os.times(), while
        # getrusage() and process_time() resolve microseconds, which short periods need.
        self.source = "stdlib"
        self._last_cpu = time.process_time()
        self._last_wall = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if _resource is not None:
            usage = _resource.getrusage(_resource.RUSAGE_SELF)
            user, system = usage.ru_utime, usage.ru_stime
        else:
            times = os.times()
            user, system = times.user, times.system
        cpu = time.process_time()
        now = time.monotonic()
        values: dict[str, float] = {"user_time": user, "system_time": system}
        with self._lock:  # the baseline is shared by poll_now() and the poller thread
            wall = now - self._last_wall
            if wall > 0:  # 0 only where the monotonic clock is coarse (Windows: ~16 ms)
                values["utilisation"] = max(0.0, (cpu - self._last_cpu) / wall * 100.0)
                self._last_cpu = cpu
                self._last_wall = now
        execute(CPU_EVENT, values)


class FdsMeasurement(RuntimeMeasurement):
    """``("radiosonde", "runtime", "fds")``: ``count`` of open descriptors, soft ``limit``."""

    name = "fds"

    def __init__(self, psutil: Any = None, proc: str = "/proc") -> None:
        self._process = _Process(psutil) if psutil is not None else None
        self.source = "psutil" if psutil is not None else "stdlib"
        self._dirs = (os.path.join(proc, "self", "fd"), "/dev/fd")

    def __call__(self) -> None:
        values: dict[str, int] = {}
        if self._process is not None:
            process = self._process.get()
            if hasattr(process, "num_fds"):
                values["count"] = int(process.num_fds())
            else:  # Windows has handles, not descriptors
                values["count"] = int(process.num_handles())
        else:
            for directory in self._dirs:
                try:
                    # The listing includes the descriptor listdir itself opened, as psutil's does.
                    values["count"] = len(os.listdir(directory))
                except OSError:
                    continue
                break
        if _resource is not None:
            soft = _resource.getrlimit(_resource.RLIMIT_NOFILE)[0]
            if soft != _resource.RLIM_INFINITY:
                values["limit"] = int(soft)
        execute(FDS_EVENT, values)


class ThreadsMeasurement(RuntimeMeasurement):
    """``("radiosonde", "runtime", "threads")``: ``count`` of Python threads alive and
    ``os_count`` of OS threads (including native ones that Python does not know about)."""

    name = "threads"

    def __init__(self, psutil: Any = None, proc: str = "/proc") -> None:
        self._process = _Process(psutil) if psutil is not None else None
        self.source = "psutil" if psutil is not None else "stdlib"
        self._status = os.path.join(proc, "self", "status")

    def __call__(self) -> None:
        values: dict[str, int] = {"count": threading.active_count()}
        if self._process is not None:
            values["os_count"] = int(self._process.get().num_threads())
        else:
            try:
                with open(self._status, "rb") as status:
                    for line in status:
                        if line.startswith(b"Threads:"):
                            values["os_count"] = int(line.split()[1])
                            break
            except OSError:
                pass
        execute(THREADS_EVENT, values)


# --- GC pause timing -------------------------------------------------------------------------
# One gc.callbacks hook for the whole process, installed on first use and never removed. It runs
# inside every collection, so it only does arithmetic on preallocated lists: no locks (a
# collection can start in a thread that holds any lock), no allocation beyond small ints, and it
# swallows every error (an exception there would be reported as unraisable on each collection).

_GENERATIONS = len(gc.get_stats())
_gc_pause_total = [0] * _GENERATIONS  # cumulative nanoseconds per generation, since install
_gc_started = 0
# Each GC measurement's "longest pause since my last reading", per generation. Replaced as a
# whole (copy-on-write) so the callback never sees a container change while it iterates.
_gc_windows: tuple[list[int], ...] = ()
_gc_lock = threading.RLock()  # writers only; re-entrant because a finalizer may run inside
_gc_installed = False


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    try:
        if phase == "start":
            _gc_started = time.perf_counter_ns()
            return
        started = _gc_started
        if not started:
            return
        _gc_started = 0
        elapsed = time.perf_counter_ns() - started
        generation = info["generation"]
        _gc_pause_total[generation] += elapsed
        for window in _gc_windows:
            window[generation] = max(window[generation], elapsed)
    except Exception:
        pass


def install_gc_callback() -> None:
    """Install the process-wide GC timing callback (idempotent)."""
    global _gc_installed
    with _gc_lock:
        if not _gc_installed:
            gc.callbacks.append(_on_gc)
            _gc_installed = True


def _open_window() -> list[int]:
    global _gc_windows
    window = [0] * _GENERATIONS
    with _gc_lock:
        _gc_windows = (*_gc_windows, window)
    return window


def _close_window(window: list[int]) -> None:
    global _gc_windows
    with _gc_lock:
        _gc_windows = tuple(w for w in _gc_windows if w is not window)


class GcMeasurement(RuntimeMeasurement):
    """``("radiosonde", "runtime", "gc")``, one event per generation (metadata ``generation``):
    ``count``, ``threshold``, cumulative ``collections``/``collected``/``uncollectable``, and
    ``pause_time`` (total) and ``pause_max`` (longest) in nanoseconds since the last reading."""

    name = "gc"

    def __init__(self, psutil: Any = None) -> None:
        install_gc_callback()
        self._window = _open_window()
        weakref.finalize(self, _close_window, self._window)
        self._last_total = list(_gc_pause_total)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        stats = gc.get_stats()
        counts = gc.get_count()
        thresholds = gc.get_threshold()
        window = self._window
        readings: list[tuple[int, dict[str, int]]] = []
        with self._lock:
            for generation, stat in enumerate(stats[:_GENERATIONS]):
                total = _gc_pause_total[generation]
                # Read then reset: a pause landing between the two is lost from the max (the
                # total stays exact); locking here could deadlock against a collection.
                longest = window[generation]
                window[generation] = 0
                values = {
                    "collections": stat["collections"],
                    "collected": stat["collected"],
                    "uncollectable": stat["uncollectable"],
                    "pause_time": total - self._last_total[generation],
                    "pause_max": longest,
                }
                self._last_total[generation] = total
                if generation < len(counts):
                    values["count"] = counts[generation]
                if generation < len(thresholds):
                    values["threshold"] = thresholds[generation]
                readings.append((generation, values))
        for generation, values in readings:
            execute(GC_EVENT, values, {"generation": generation})


# --- asyncio event loops ---------------------------------------------------------------------


class LoopGone(Exception):
    """Raised by a loop measurement whose loop was closed or garbage-collected."""


class LoopMeasurement(RuntimeMeasurement):
    """``("radiosonde", "runtime", "event_loop")``: ``lag`` (ns) and ``tasks``, metadata ``loop``
    and ``stalled``.

    Each call schedules a probe on the loop with ``call_soon_threadsafe``; the probe measures how
    late it ran and counts the tasks from inside the loop. When the previous probe has still not
    run, the loop is blocked: the call emits the lag so far with ``stalled=True`` (no task count,
    which cannot be read safely from outside the loop) and schedules nothing more.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, label: str | None = None) -> None:
        self._loop = weakref.ref(loop)
        self.label = label if label is not None else f"loop-{id(loop):x}"
        self.name = f"event_loop[{self.label}]"
        self._pending: int | None = None  # monotonic_ns when the outstanding probe was scheduled

    def __call__(self) -> None:
        loop = self._loop()
        if loop is None or loop.is_closed():
            raise LoopGone(f"event loop {self.label!r} is closed")
        now = time.monotonic_ns()
        pending = self._pending
        if not loop.is_running():
            # A loop between run_until_complete() calls is idle, not late: the probe it still
            # holds would report the idle time as lag, so that probe is made void.
            self._pending = None
            return
        if pending is not None:
            execute(EVENT_LOOP_EVENT, {"lag": now - pending}, {"loop": self.label, "stalled": True})
            return
        self._pending = now
        try:
            loop.call_soon_threadsafe(self._probe, now)
        except RuntimeError:  # closed between the check and the call
            self._pending = None
            raise LoopGone(f"event loop {self.label!r} is closed") from None

    def _probe(self, scheduled: int) -> None:
        # Runs inside the loop: it must never raise into it.
        try:
            lag = time.monotonic_ns() - scheduled
            if self._pending != scheduled:
                return  # made void while its loop was stopped
            self._pending = None
            loop = self._loop()
            values = {"lag": lag}
            if loop is not None:
                import asyncio  # imported already: the loop runs

                values["tasks"] = len(asyncio.all_tasks(loop))
            execute(EVENT_LOOP_EVENT, values, {"loop": self.label, "stalled": False})
        except Exception:
            pass
