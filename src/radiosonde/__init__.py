"""radiosonde: telemetry and observability measured from inside the running application.

The event core (standard library only)::

    import radiosonde

    radiosonde.attach("log-queries", ("myapp", "repo", "query"), handler)
    radiosonde.execute(("myapp", "repo", "query"), {"duration": 1200}, {"table": "users"})

    with radiosonde.span(("myapp", "checkout")) as span:
        span.metadata["items"] = 3

Around it: ``radiosonde.metrics`` (definitions), ``radiosonde.reporters`` (console, Prometheus,
StatsD), ``radiosonde.poller``, ``radiosonde.log``, budgets (``emit_event``,
``with_telemetry``, ``telemetry``), ``radiosonde.redact`` and ``configure``. Importing this
package imports no third-party module.
"""

from typing import TYPE_CHECKING, Any

from radiosonde.events import (
    FAILURE_EVENT,
    EventName,
    EventNameLike,
    Handler,
    HandlerExistsError,
    HandlerInfo,
    attach,
    attach_many,
    detach,
    event_name,
    execute,
    has_handlers,
    list_handlers,
)
from radiosonde.spans import Span, current_span_context, span

if TYPE_CHECKING:
    from radiosonde.budgets import BudgetMonitor, emit_event, telemetry, with_telemetry
    from radiosonde.config import ConfigurationError, Settings, configure, get_settings
    from radiosonde.facade import Metrics

# Loaded on first use, so that `import radiosonde` costs only the event core.
_LAZY = {
    "BudgetMonitor": "radiosonde.budgets",
    "emit_event": "radiosonde.budgets",
    "telemetry": "radiosonde.budgets",
    "with_telemetry": "radiosonde.budgets",
    "ConfigurationError": "radiosonde.config",
    "Settings": "radiosonde.config",
    "configure": "radiosonde.config",
    "get_settings": "radiosonde.config",
    "Metrics": "radiosonde.facade",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'radiosonde' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FAILURE_EVENT",
    "BudgetMonitor",
    "ConfigurationError",
    "EventName",
    "EventNameLike",
    "Handler",
    "HandlerExistsError",
    "HandlerInfo",
    "Metrics",
    "Settings",
    "Span",
    "attach",
    "attach_many",
    "configure",
    "current_span_context",
    "detach",
    "emit_event",
    "event_name",
    "execute",
    "get_settings",
    "has_handlers",
    "list_handlers",
    "span",
    "telemetry",
    "with_telemetry",
]

__version__ = "0.1.0"
