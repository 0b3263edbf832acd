"""Reporters: read metric values and send or show them somewhere.

* :class:`ConsoleReporter` prints each event and what it does to your metrics (development);
* :class:`PrometheusReporter` serves ``/metrics`` for Prometheus to scrape;
* :class:`StatsDReporter` sends to a StatsD / DogStatsD server.

Each has ``start()``/``stop()`` and is a context manager. They are imported on first use, so
``import radiosonde.reporters`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radiosonde.reporters.console import ConsoleReporter
    from radiosonde.reporters.prometheus import PrometheusReporter
    from radiosonde.reporters.statsd import StatsDReporter

__all__ = ["ConsoleReporter", "PrometheusReporter", "StatsDReporter"]

_LAZY = {
    "ConsoleReporter": "radiosonde.reporters.console",
    "PrometheusReporter": "radiosonde.reporters.prometheus",
    "StatsDReporter": "radiosonde.reporters.statsd",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
