"""radiosonde: telemetry and observability measured from inside the running application.

The event core (standard library only)::

    import radiosonde

    radiosonde.attach("log-queries", ("myapp", "repo", "query"), handler)
    radiosonde.execute(("myapp", "repo", "query"), {"duration": 1200}, {"table": "users"})

    with radiosonde.span(("myapp", "checkout")) as span:
        span.metadata["items"] = 3
"""

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
    list_handlers,
)
from radiosonde.facade import Metrics
from radiosonde.spans import Span, current_span_context, span

__all__ = [
    "FAILURE_EVENT",
    "EventName",
    "EventNameLike",
    "Handler",
    "HandlerExistsError",
    "HandlerInfo",
    "Metrics",
    "Span",
    "attach",
    "attach_many",
    "current_span_context",
    "detach",
    "event_name",
    "execute",
    "list_handlers",
    "span",
]

__version__ = "0.1.0"
