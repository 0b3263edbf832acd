"""The radiosonde demo: a small simulated messaging service, instrumented end to end.

Run it with ``python -m radiosonde.demo`` (``bash scripts/demo.sh``). It:

* declares metrics for its operations, the runtime and the performance budgets;
* serves them on ``/metrics`` with the Prometheus reporter (``PROMETHEUS_PORT``, or a free port);
* runs the runtime poller and a budget monitor (p95 per operation against its budget);
* logs through the structured logger (JSON lines when not on a terminal);
* simulates traffic: messages sent and fetched, with budgets of 200 ms and 50 ms, a slow path
  and some failures;
* then scrapes its own ``/metrics`` over HTTP and prints what a dashboard would show.

``--serve`` keeps serving after the run, for a real Prometheus to scrape, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import random
import time
import urllib.request
from collections.abc import Sequence

from radiosonde import log, span
from radiosonde import metrics as m
from radiosonde.budgets import BudgetMonitor, budget_metrics, with_telemetry
from radiosonde.metrics import Metric
from radiosonde.poller import Poller, runtime_metrics
from radiosonde.reporters.prometheus import PrometheusReporter

SEND = ("famichat", "message_service", "send_message")
FETCH = ("famichat", "message_service", "get_conversation_messages")


class DeliveryError(Exception):
    """A simulated failure to deliver a message."""


def service_metrics() -> list[Metric]:
    """The metrics of the simulated service's two operations."""
    result: list[Metric] = []
    for prefix in (SEND, FETCH):
        name = ".".join(prefix)
        result += [
            m.counter(f"{name}.stop.duration", tags=["conversation"]),
            m.distribution(
                f"{name}.stop.duration",
                unit=("nanosecond", "millisecond"),
                tags=["conversation"],
                description=f"Time spent in {prefix[-1]}",
            ),
            m.counter(
                f"{name}.exception.duration",
                tags=["kind"],
                tag_values=lambda metadata: {"kind": metadata["kind"].__name__},
            ),
        ]
    result.append(
        m.summary(
            "famichat.db.insert.stop.duration",
            unit=("nanosecond", "millisecond"),
            tags=["table"],
            description="Database inserts",
        )
    )
    return result


def send_message(conversation: str, body: str) -> int:
    """Store a message; now and then slow (a congested database) or failing."""
    roll = random.random()
    time.sleep(0.25 if roll < 0.04 else random.uniform(0.002, 0.02))
    if roll > 0.97:
        raise DeliveryError("recipient unreachable")
    with span(("famichat", "db", "insert"), {"table": "messages"}):
        time.sleep(0.001)
    return len(body.encode())


def get_conversation_messages(conversation: str) -> list[str]:
    """Fetch a page of messages; often too slow for its 50 ms budget, to show an alert."""
    time.sleep(random.choice((0.005, 0.01, 0.08)))
    return [f"message {i}" for i in range(20)]


def simulate(requests: int) -> tuple[int, int]:
    """Run the traffic; returns (messages sent, failures)."""
    sent = failures = 0
    for i in range(requests):
        conversation = f"c{i % 3}"
        body = "hello " * random.randint(1, 40)
        try:
            with_telemetry(
                SEND,
                functools.partial(send_message, conversation, body),
                {"conversation": conversation},
                performance_budget_ms=200,
            )
            sent += 1
        except DeliveryError as exc:
            failures += 1
            log.warning("message not delivered", conversation=conversation, reason=str(exc))
        if i % 4 == 0:
            with_telemetry(
                FETCH,
                functools.partial(get_conversation_messages, conversation),
                {"conversation": conversation},
                performance_budget_ms=50,
            )
    return sent, failures


def scrape(url: str) -> str:
    """GET the exposition, as Prometheus would."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def show(exposition: str, prefixes: Sequence[str]) -> None:
    """Print the samples whose names start with one of ``prefixes``."""
    for line in exposition.splitlines():
        if line.startswith(tuple(prefixes)) and "_bucket" not in line:
            print(f"    {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiosonde.demo", description=__doc__)
    parser.add_argument("--requests", type=int, default=120, help="simulated requests")
    parser.add_argument("--port", type=int, default=None, help="default: PROMETHEUS_PORT or 0")
    parser.add_argument("--serve", action="store_true", help="keep serving /metrics after")
    args = parser.parse_args(argv)
    random.seed(7)

    metrics = service_metrics() + runtime_metrics() + budget_metrics()
    reporter = PrometheusReporter(metrics, port=args.port if args.port is not None else 0)
    monitor = BudgetMonitor(window_s=60)
    poller = Poller(period=0.5)
    with reporter, monitor, poller:
        log.info("demo started", metrics_url=reporter.url, metrics=len(metrics))
        started = time.monotonic()
        sent, failures = simulate(args.requests)
        elapsed = time.monotonic() - started
        poller.poll_now()
        statuses = monitor.report()
        exposition = scrape(reporter.url)

        print(f"\nradiosonde demo: {sent} messages sent, {failures} failed, in {elapsed:.1f} s")
        print(f"metrics served at {reporter.url} ({len(exposition.splitlines())} lines)\n")
        print("  operations (from the scrape):")
        show(exposition, ["famichat_"])
        print("\n  performance budgets (rolling p95 against the budget):")
        for name, status in sorted(statuses.items()):
            verdict = "EXCEEDED" if status.exceeded else "ok"
            p95 = f"{status.p95_ms:.1f}" if status.p95_ms is not None else "-"
            print(
                f"    {name:<48} p95 {p95:>7} ms  budget {status.budget_ms:>5.0f} ms"
                f"  violations {status.violations:>3}/{status.count:<4} {verdict}"
            )
        print("\n  runtime (from the poller):")
        show(
            exposition,
            [
                "radiosonde_runtime_memory_rss",
                "radiosonde_runtime_threads",
                "radiosonde_runtime_gc_collections",
            ],
        )
        if args.serve:
            print(f"\nserving {reporter.url} until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
