"""The event core (``execute``, ``span``) next to its peers: prometheus_client, blinker, OTel.

The targets are those of issue 2, as ratios measured in the same run: ``execute`` with no
handler <= 2.5x a no-op call with 3 arguments, with one no-op handler <= 5x, and a span with no
handler <= 0.05x an OpenTelemetry SDK span. Peers are imported here only, never in ``src/``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import radiosonde
from bench._harness import Case, CheckResult, Group, require

core = Group("core", "the event core next to its peers", baseline="noop call (3 args)")
GROUPS = [core]

MEASUREMENTS: dict[str, Any] = {"duration": 1_200_000}
METADATA: dict[str, Any] = {"table": "users"}


def _noop_handler(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    pass


def _attached(handler_id: str, events: list[Any], stmt: str, **names: Any) -> Case:
    """A case that runs ``stmt`` with ``_noop_handler`` attached to ``events`` meanwhile."""
    radiosonde.attach_many(handler_id, events, _noop_handler)
    return Case(stmt, _globals(**names), cleanup=lambda: radiosonde.detach(handler_id))


def _globals(**names: Any) -> dict[str, Any]:
    return {
        "execute": radiosonde.execute,
        "span": radiosonde.span,
        "M": MEASUREMENTS,
        "MD": METADATA,
        **names,
    }


# -- radiosonde ----------------------------------------------------------------------------


@core.case("noop call (3 args)")
def _noop_call() -> Case:
    def noop(event: Any, measurements: Any, metadata: Any) -> None:
        pass

    return Case("noop(EVENT, M, MD)", _globals(noop=noop, EVENT=("bench", "noop", "call")))


@core.case("execute, no handler", peer="blinker send, 0 receivers")
def _execute_none() -> Case:
    return Case("execute(EVENT, M, MD)", _globals(EVENT=("bench", "nobody", "listens")))


@core.case("execute, 1 no-op handler", peer="blinker send, 1 receiver")
def _execute_one() -> Case:
    event = ("bench", "one", "handler")
    return _attached("bench.core.one", [event], "execute(EVENT, M, MD)", EVENT=event)


@core.case("execute, dotted name, 1 handler", peer="blinker send, 1 receiver")
def _execute_dotted() -> Case:
    return _attached(
        "bench.core.dotted", ["bench.dotted.name"], "execute('bench.dotted.name', M, MD)"
    )


@core.case("execute, 1 prefix subscription", peer="blinker send, 1 receiver")
def _execute_prefix() -> Case:
    return _attached(
        "bench.core.prefix",
        [("bench", "prefixed", "*")],
        "execute(EVENT, M, MD)",
        EVENT=("bench", "prefixed", "event"),
    )


@core.case("span, no handler", peer="otel start_as_current_span")
def _span_none() -> Case:
    return Case("with span(PREFIX):\n    pass", _globals(PREFIX=("bench", "quiet", "span")))


@core.case("span, no-op handler on start/stop", peer="otel start_as_current_span")
def _span_handled() -> Case:
    prefix = ("bench", "watched", "span")
    return _attached(
        "bench.core.span",
        [(*prefix, "start"), (*prefix, "stop")],
        "with span(PREFIX):\n    pass",
        PREFIX=prefix,
    )


# -- peers ---------------------------------------------------------------------------------


@core.case("prometheus Counter.inc()")
def _prometheus_inc() -> Case:
    prometheus_client = require("prometheus_client", "prometheus-client")
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("bench_plain", "bench", registry=registry)
    return Case("counter.inc()", {"counter": counter})


@core.case("prometheus Counter.labels(a,b,c).inc()")
def _prometheus_labels() -> Case:
    prometheus_client = require("prometheus_client", "prometheus-client")
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter(
        "bench_labelled", "bench", ["a", "b", "c"], registry=registry
    )
    return Case("counter.labels('x', 'y', 'z').inc()", {"counter": counter})


@core.case("blinker send, 0 receivers")
def _blinker_none() -> Case:
    blinker = require("blinker", "blinker")
    signal = blinker.Signal()
    # The same payload execute carries, so both deliver two dicts.
    return Case("signal.send(None, measurements=M, metadata=MD)", _globals(signal=signal))


@core.case("blinker send, 1 receiver")
def _blinker_one() -> Case:
    blinker = require("blinker", "blinker")
    signal = blinker.Signal()

    def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    signal.connect(receiver, weak=False)
    return Case(
        "signal.send(None, measurements=M, metadata=MD)",
        _globals(signal=signal),
        cleanup=lambda: signal.disconnect(receiver),
    )


@core.case("otel start_as_current_span")
def _otel_span() -> Case:
    sdk_trace = require("opentelemetry.sdk.trace", "opentelemetry-sdk")
    provider = sdk_trace.TracerProvider()  # no span processor, no exporter
    tracer = provider.get_tracer("radiosonde.bench")
    return Case(
        "with tracer.start_as_current_span('bench'):\n    pass",
        {"tracer": tracer},
        cleanup=provider.shutdown,
    )


core.target("execute, no handler", "noop call (3 args)", 2.5)
core.target("execute, 1 no-op handler", "noop call (3 args)", 5.0)
core.target("span, no handler", "otel start_as_current_span", 0.05)


# -- correctness under threads -------------------------------------------------------------

THREADS = 4
PER_THREAD = 50_000


@core.check(f"{THREADS} threads execute into a locked counter while a 5th attaches/detaches")
def _threads_lose_nothing() -> CheckResult:
    event = ("bench", "threads", "count")
    count = 0
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def counting(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        nonlocal count
        with lock:
            count += 1

    def work() -> None:
        try:
            for _ in range(PER_THREAD):
                radiosonde.execute(event, MEASUREMENTS, METADATA)
        except BaseException as exc:
            errors.append(exc)

    def churn() -> None:
        # Every attach/detach publishes a new table and empties the resolved cache.
        i = 0
        try:
            while not stop.is_set():
                handler_id = f"bench.threads.churn-{i % 8}"
                radiosonde.detach(handler_id)
                names = [event] if i % 2 else [("bench", "threads", "*")]
                radiosonde.attach_many(handler_id, names, _noop_handler)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    before = radiosonde.events.stats()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to give races a chance
    radiosonde.attach("bench.threads.count", event, counting)
    try:
        churner = threading.Thread(target=churn)
        workers = [threading.Thread(target=work) for _ in range(THREADS)]
        churner.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        churner.join()
    finally:
        sys.setswitchinterval(old_interval)
        for handler in radiosonde.list_handlers(("bench", "threads")):
            radiosonde.detach(handler.id)
    after = radiosonde.events.stats()
    failures = after["handler_failures"] - before["handler_failures"]
    expected = THREADS * PER_THREAD
    ok = count == expected and not errors and failures == 0
    detail = f"expected {expected}, got {count}; errors {len(errors)}; handler failures {failures}"
    if errors:
        detail += f" (first: {errors[0]!r})"
    return CheckResult(ok, detail)
