"""The benchmark harness: groups of named cases, timed side by side in one run.

A benchmark module in ``bench/`` (any module not starting with ``_``) exposes ``GROUPS``, a list
of :class:`Group`. A group holds:

* **cases**: a setup function, registered with ``@group.case(name, peer=...)``, that prepares
  whatever the case needs and returns a :class:`Case` (a statement, the globals it runs with,
  an optional cleanup). The statement is timed with :class:`timeit.Timer`, so the measured loop
  holds nothing but that statement. A setup that raises :class:`PeerMissing` (or
  ``ImportError``) marks the case as skipped and the run goes on;
* **targets**: ``group.target(case, reference, max_ratio)``, checked as ratios of medians
  measured in the same run;
* **checks**: functions registered with ``@group.check(name)`` that return a
  :class:`CheckResult` (for properties that are not timings, e.g. nothing lost under threads).

How figures are taken: every case is set up first; the loop count of each is sized with
``Timer.autorange`` (GC enabled in the timer's setup, as in the code under test); then the
repeats run round-robin over all the cases, so that a noisy neighbour on a shared machine
slows every case alike instead of one. The ns/op figure is the median of the repeats. A ratio
is the median of the per-round ratios (case / reference timed in the same round, moments
apart), which cancels load that comes and goes better than a ratio of two medians.
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Case",
    "CheckResult",
    "Group",
    "PeerMissing",
    "Result",
    "Target",
    "require",
    "run_groups",
]


class PeerMissing(RuntimeError):
    """Raised by a case setup when the library it compares against is not installed."""


def require(module: str, package: str) -> Any:
    """Import ``module`` for a peer case, or raise :class:`PeerMissing` naming ``package``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerMissing(
            f"{package} is not installed (pip install {package}, or bash scripts/bench.sh)"
        ) from exc


@dataclass
class Case:
    """What a case setup returns: ``stmt`` is timed, run with ``globals``."""

    stmt: str
    globals: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[], object] | None = None


@dataclass
class CheckResult:
    """The outcome of a check: ``detail`` says what was expected and what was seen."""

    ok: bool
    detail: str


@dataclass
class Target:
    """``case`` must take at most ``max_ratio`` times the time of ``reference``."""

    case: str
    reference: str
    max_ratio: float


@dataclass
class _CaseSpec:
    name: str
    setup: Callable[[], Case]
    peer: str | None


@dataclass
class Result:
    """One measured case: median ns/op and the repeats it came from, or why it was skipped."""

    name: str
    peer: str | None
    ns: float | None = None
    repeats: list[float] = field(default_factory=list)
    skipped: str | None = None


class Group:
    """A named set of cases measured together, with a baseline case for the ratio column."""

    def __init__(self, name: str, title: str, *, baseline: str) -> None:
        self.name = name
        self.title = title
        self.baseline = baseline
        self.cases: list[_CaseSpec] = []
        self.targets: list[Target] = []
        self.checks: list[tuple[str, Callable[[], CheckResult]]] = []

    def case(
        self, name: str, *, peer: str | None = None
    ) -> Callable[[Callable[[], Case]], Callable[[], Case]]:
        """Register a case setup under ``name``; ``peer`` names the case it is compared with."""

        def register(setup: Callable[[], Case]) -> Callable[[], Case]:
            if any(spec.name == name for spec in self.cases):
                raise ValueError(f"bench group {self.name!r} has two cases named {name!r}")
            self.cases.append(_CaseSpec(name, setup, peer))
            return setup

        return register

    def target(self, case: str, reference: str, max_ratio: float) -> None:
        """Require ``case`` <= ``max_ratio`` x ``reference`` (both case names of this group)."""
        self.targets.append(Target(case, reference, max_ratio))

    def check(self, name: str) -> Callable[[Callable[[], CheckResult]], Callable[[], CheckResult]]:
        """Register a check, run after the timings."""

        def register(fn: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
            self.checks.append((name, fn))
            return fn

        return register

    def validate(self) -> None:
        """Fail early on a baseline, peer or target that names no case of the group."""
        names = {spec.name for spec in self.cases}
        wanted = [self.baseline]
        wanted += [spec.peer for spec in self.cases if spec.peer]
        wanted += [name for t in self.targets for name in (t.case, t.reference)]
        unknown = sorted(set(wanted) - names)
        if unknown:
            raise ValueError(f"bench group {self.name!r} refers to unknown cases: {unknown}")


# -- measuring -----------------------------------------------------------------------------


def _measure(group: Group, repeats: int, min_time: float) -> list[Result]:
    results: list[Result] = []
    timers: list[tuple[Result, timeit.Timer, int]] = []
    cleanups: list[Callable[[], object]] = []
    try:
        for spec in group.cases:
            result = Result(spec.name, spec.peer)
            results.append(result)
            try:
                case = spec.setup()
            except (PeerMissing, ImportError) as exc:
                result.skipped = str(exc)
                continue
            if case.cleanup is not None:
                cleanups.append(case.cleanup)
            timer = timeit.Timer(case.stmt, "gc.enable()", globals={"gc": gc, **case.globals})
            timers.append((result, timer, _loops(timer, min_time)))
        for _ in range(repeats):
            for result, timer, loops in timers:
                result.repeats.append(timer.timeit(loops) / loops * 1e9)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    for result in results:
        if result.repeats:
            result.ns = statistics.median(result.repeats)
    return results


def _loops(timer: timeit.Timer, min_time: float) -> int:
    """Loop count such that one repeat lasts about ``min_time`` seconds (autorange, scaled)."""
    loops, elapsed = timer.autorange()  # >= 0.2 s
    return max(1, int(loops * min_time / max(elapsed, 1e-9)))


# -- reporting -----------------------------------------------------------------------------


def _ratio(case: Result, reference: Result) -> float | None:
    """Median of the per-round ratios of two measured cases (None if either was skipped)."""
    if not case.repeats or not reference.repeats:
        return None
    return statistics.median(a / b for a, b in zip(case.repeats, reference.repeats, strict=True))


def _fmt_ns(ns: float) -> str:
    return f"{ns:,.1f}" if ns < 10_000 else f"{ns:,.0f}"


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


def _print_group(group: Group, results: list[Result], out: Callable[[str], None]) -> bool:
    by_name = {r.name: r for r in results}
    base = by_name[group.baseline]
    width = max(len(r.name) for r in results) + 2
    out(f"\n== {group.name}: {group.title}")
    out(f"{'case':<{width}} {'ns/op':>10} {'x baseline':>11}   vs peer")
    for r in results:
        if r.ns is None:
            out(f"{r.name:<{width}} {'-':>10} {'-':>11}   skipped: {r.skipped}")
            continue
        base_ratio = _ratio(r, base)
        base_col = "-" if base_ratio is None else _fmt_ratio(base_ratio)
        peer_col = ""
        if r.peer:
            peer_ratio = _ratio(r, by_name[r.peer])
            peer_col = (
                f"- ({r.peer} skipped)"
                if peer_ratio is None
                else f"{_fmt_ratio(peer_ratio)} {r.peer}"
            )
        mark = "  (baseline)" if r.name == group.baseline else ""
        out(f"{r.name:<{width}} {_fmt_ns(r.ns):>10} {base_col:>11}   {peer_col}{mark}")
    skipped = [r for r in results if r.skipped]
    if skipped:
        out("")
        for r in skipped:
            out(f"NOTE: peer missing, skipped {r.name!r}: {r.skipped}")

    ok = True
    if group.targets:
        out("\ntargets (ratios measured in this run)")
        for t in group.targets:
            ratio = _ratio(by_name[t.case], by_name[t.reference])
            label = f"{t.case} <= {t.max_ratio:g}x {t.reference}"
            if ratio is None:
                out(f"  SKIP  {label}: not measured")
                continue
            passed = ratio <= t.max_ratio
            ok = ok and passed
            out(f"  {'PASS' if passed else 'MISS'}  {label}: {_fmt_ratio(ratio)}")
    if group.checks:
        out("\nchecks")
        for name, fn in group.checks:
            try:
                check = fn()
            except Exception as exc:  # a broken check is a failed check, not a crash
                check = CheckResult(False, f"raised {type(exc).__name__}: {exc}")
            ok = ok and check.ok
            out(f"  {'PASS' if check.ok else 'FAIL'}  {name}: {check.detail}")
    return ok


def run_groups(
    groups: Iterable[Group],
    *,
    repeats: int = 11,
    min_time: float = 0.05,
    out: Callable[[str], None] = print,
) -> bool:
    """Measure and print every group; True when every target passed and every check held."""
    groups = list(groups)
    for group in groups:
        group.validate()
    out(
        f"radiosonde bench: Python {platform.python_version()} ({sys.implementation.name}),"
        f" {platform.machine()}; median ns/op of {repeats} round-robin repeats of ~{min_time:g} s,"
        " GC on; ratios: median of per-round ratios"
    )
    ok = True
    for group in groups:
        started = time.perf_counter()
        results = _measure(group, repeats, min_time)
        ok = _print_group(group, results, out) and ok
        out(f"({group.name}: {time.perf_counter() - started:.1f} s)")
    return ok
