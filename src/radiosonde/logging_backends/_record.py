"""The metadata dict the facade hands to backends, with its JSON partly encoded in advance.

To a backend it is a plain ``dict``. JSON writers (console, file) that see a :class:`Record`
take a faster path: the enrichment that is the same on every record (service, environment, pid)
was encoded once by the facade, so only the timestamp, the message and the record's own fields
are encoded per record — which is most of what a log call costs.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

from radiosonde.logging_backends._json import dumps, record_dict

__all__ = ["RESERVED_KEYS", "Record", "json_line"]

RESERVED_KEYS = frozenset(
    {"timestamp", "service", "environment", "pid", "span_id", "level", "message"}
)
"""Keys the fast path writes itself: a record whose own fields use one takes the general path."""


class Record(dict[str, Any]):
    """A record's metadata. ``fields`` (the record's own fields, or None when they clash with
    :data:`RESERVED_KEYS`), ``static_json`` (the pre-encoded constant enrichment), ``timestamp``
    and ``span_id`` are for JSON writers; everything is also in the dict itself."""

    __slots__ = ("fields", "span_id", "static_json", "timestamp")

    fields: dict[str, Any] | None
    span_id: int | None
    static_json: str
    timestamp: str


def json_line(level: str, message: str, metadata: dict[str, Any]) -> str:
    """One JSON object: ``timestamp``, ``level``, ``message`` first, then the metadata."""
    if type(metadata) is Record:
        fields = metadata.fields
        if fields is not None:
            line = (
                f'{{"timestamp":"{metadata.timestamp}","level":"{level}",'
                f'"message":{encode_basestring(message)},{metadata.static_json}'
            )
            if metadata.span_id is not None:
                line += f',"span_id":{metadata.span_id}'
            if fields:
                return f"{line},{dumps(fields)[1:]}"
            return line + "}"
    return dumps(record_dict(level, message, metadata))
