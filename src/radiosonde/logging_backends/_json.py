"""JSON encoding of log records that never fails on odd metadata.

The fast path is one call to a pre-built C encoder. Metadata it cannot encode (non-string keys,
NaN, circular references, objects with a raising ``__str__``...) takes a slow path that turns it
into plain JSON values first, so a strange value costs time, never a lost record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "record_dict", "to_jsonable"]

_MAX_DEPTH = 32


def _default(value: object) -> object:
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
).encode


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def to_jsonable(value: object, depth: int = 0, seen: frozenset[int] = frozenset()) -> Any:
    """A copy of ``value`` made of JSON types only (dict keys as str, NaN as a string)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if value is None or isinstance(value, str | bool | int):
        result: Any = value
    elif isinstance(value, bytes):
        result = value.decode("utf-8", "replace")
    elif not isinstance(value, Mapping | list | tuple | set | frozenset):
        result = _safe_str(value)
    elif depth >= _MAX_DEPTH or id(value) in seen:
        result = f"<{type(value).__name__} not shown>"
    elif isinstance(value, Mapping):
        inner = seen | {id(value)}
        result = {_safe_str(k): to_jsonable(v, depth + 1, inner) for k, v in list(value.items())}
    else:
        inner = seen | {id(value)}
        result = [to_jsonable(v, depth + 1, inner) for v in list(value)]
    return result


def dumps(value: object) -> str:
    """Compact JSON (UTF-8 text, not ASCII-escaped) for any value; never raises."""
    try:
        return _encode(value)
    except Exception:
        return _encode(to_jsonable(value))


def record_dict(level: str, message: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON shape of one record: timestamp, level and message first, then the metadata."""
    record: dict[str, Any] = {
        "timestamp": metadata.get("timestamp"),
        "level": level,
        "message": message,
    }
    record.update(metadata)
    # A field named like the record's own keys must not overwrite them.
    record["level"] = level
    record["message"] = message
    return record
