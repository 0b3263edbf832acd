"""The StatsD / DogStatsD wire format: names, tags, numbers, lines and datagrams (no I/O).

A line is ``name:value|type[|@rate][|#tag:value,...]``; a datagram is lines joined by ``"\\n"``.
Everything that comes from the application (tag values, global tags) is sanitised here so that
no input can add a line, a field or a tag: the characters that delimit them (newlines,
``|``, ``,``, ``#``, ``:`` in names) never get through. Unless turned off, tag values are also
redacted here (:mod:`radiosonde.redact`): the reporter calls :class:`SeriesNamer` only when it
first formats a series, and caches the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from radiosonde.metrics import tag_text
from radiosonde.redact import Redactor, default_redactor

Style: TypeAlias = Literal["standard", "datadog"]

# Standard StatsD has no tags: tag values become name segments, so they may hold only what
# Graphite-style names allow (the Etsy daemon would silently strip anything else).
_SEGMENT_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
# DogStatsD tag values: anything printable except the delimiters of the line and the tag list.
# \s covers every Unicode line break; surrogates cannot be encoded as UTF-8 at all.
_TAG_UNSAFE = re.compile(r"[\s|,#\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TAG_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]*\Z")
_PREFIX = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\Z")

# Integers print exactly up to here; beyond, "%.15g" keeps the line short.
_EXACT_INT = 1e15


def name_segment(value: str) -> str:
    """A tag value made safe as one segment of a standard StatsD name (``"/a b"`` -> ``"_a_b"``).

    Dots are replaced too: a value must not add levels to the metric's hierarchy.
    """
    return _SEGMENT_UNSAFE.sub("_", value) or "_"


def tag_value(value: str) -> str:
    """A tag value made safe inside a DogStatsD tag list (delimiters and controls -> ``_``)."""
    return _TAG_UNSAFE.sub("_", value)


def check_prefix(prefix: str | None) -> str | None:
    """Validate the reporter's name prefix (dotted segments of ``[A-Za-z0-9_-]``)."""
    if prefix is None or prefix == "":
        return None
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(
            f"invalid StatsD prefix {prefix!r}: use dot-separated words of letters, digits, '_'"
            " or '-' (e.g. 'myapp' or 'myapp.web')"
        )
    return prefix


def check_global_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Validate global tags (a mapping of tag name to value); values are made text."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ValueError(
            f"global_tags must be a mapping of tag name to value (e.g. {{'env': 'prod'}}),"
            f" got {tags!r}"
        )
    checked: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.match(key):
            raise ValueError(
                f"invalid global tag name {key!r}: start with a letter, then letters, digits,"
                " '_', '.', '-' or '/'"
            )
        checked[key] = tag_text(value)
    return checked


def number(value: float) -> str:
    """A value as StatsD daemons parse it: integers without a decimal point, floats short."""
    value = float(value)
    if value.is_integer() and -_EXACT_INT < value < _EXACT_INT:
        return str(int(value))
    return format(value, ".15g")


def rate_field(rate: float) -> str:
    """The ``|@rate`` field, or ``""`` for a rate of 1.

    Written in plain decimal notation: the Etsy daemon reads the rate with ``/^@([\\d.]+)/``, so
    ``1e-05`` would be taken for a rate of 1.
    """
    if rate >= 1.0:
        return ""
    digits = format(Decimal(repr(rate)), "f")
    return f"|@{digits}"


class SeriesNamer:
    """Turns (metric name, tag names, tag values) into the line's name and tag fields.

    With ``redact`` (the default), tag values go through
    :data:`radiosonde.redact.default_redactor` first: the value of a tag whose name is
    sensitive (``session``, ``token``...) becomes ``[REDACTED]``, secrets inside values (bearer
    tokens, JWTs, card numbers...) are replaced. Global tags are redacted once, here.
    """

    def __init__(
        self,
        style: Style,
        prefix: str | None,
        global_tags: Mapping[str, str],
        *,
        redact: bool = True,
    ) -> None:
        self.style: Style = style
        self.prefix = prefix
        self.redactor: Redactor | None = default_redactor if redact else None
        names = tuple(global_tags)
        self.global_tags = dict(
            zip(names, self.redacted(names, tuple(global_tags.values())), strict=True)
        )

    def redacted(self, tags: Sequence[str], values: Sequence[str]) -> Sequence[str]:
        """``values`` as they may leave the process (``values`` itself without redaction)."""
        redactor = self.redactor
        if redactor is None:
            return values
        marker = redactor.marker
        return [
            marker if redactor.is_sensitive_key(tag) else redactor.redact_string(value)
            for tag, value in zip(tags, values, strict=True)
        ]

    def base(self, name: str) -> str:
        """The metric's name on the wire, with the prefix."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def series(self, name: str, tags: Sequence[str], values: Sequence[str]) -> tuple[str, str]:
        """``(name, tag_field)`` of one series: standard StatsD appends the sanitised values to
        the name (``db.query.count.users.select``) and has no tag field; DogStatsD keeps the
        name and lists the tags (``|#table:users,operation:select``) followed by the global
        tags the metric does not have itself."""
        base = self.base(name)
        if self.redactor is not None:
            values = self.redacted(tags, values)
        if self.style == "standard":
            if not values:
                return base, ""
            return base + "." + ".".join(name_segment(v) for v in values), ""
        pairs = [f"{key}:{tag_value(value)}" for key, value in zip(tags, values, strict=True)]
        pairs.extend(
            f"{key}:{tag_value(value)}"
            for key, value in self.global_tags.items()
            if key not in tags
        )
        return base, ("|#" + ",".join(pairs)) if pairs else ""


def counter_line(name: str, value: float, rate: str, tags: str) -> str:
    """``name:value|c``: a count (or a sum reported as a counter) over one interval."""
    return f"{name}:{number(value)}|c{rate}{tags}"


def gauge_line(name: str, value: float, tags: str, style: Style) -> str:
    """``name:value|g``. The Etsy daemon reads a leading ``-`` as a decrement of the current
    value, so a negative gauge is sent as ``name:0|g`` then ``name:-v|g`` in one line unit
    (packed into the same datagram, in that order). DogStatsD has no relative gauges."""
    if value < 0 and style == "standard":
        return f"{name}:0|g\n{name}:{number(value)}|g"
    return f"{name}:{number(value)}|g{tags}"


def gauge_delta_line(name: str, delta: float, tags: str) -> str:
    """``name:+v|g`` / ``name:-v|g``: a relative change of a gauge (standard StatsD only)."""
    sign = "-" if delta < 0 else "+"
    return f"{name}:{sign}{number(abs(delta))}|g{tags}"


def sample_lines(
    name: str,
    values: Sequence[float],
    *,
    kind: str,
    rate: str,
    tags: str,
    style: Style,
    multi_value: bool,
    limit: int,
) -> list[str]:
    """Lines for the values of a timer (``ms``), histogram (``h``) or distribution (``d``).

    One line per value, or with ``multi_value`` as few lines as fit in ``limit`` bytes each:
    ``name:1|ms:2|ms`` for the Etsy daemon, ``name:1:2|d|#tags`` for DogStatsD (protocol 1.1).
    A line that cannot fit even one value is left for the packer to drop and count.
    """
    numbers = [number(v) for v in values]
    if not multi_value:
        return [f"{name}:{n}|{kind}{rate}{tags}" for n in numbers]
    lines: list[str] = []
    if style == "standard":
        # Each value repeats its own type and rate: name:v1|ms|@r:v2|ms|@r
        head, joiner, tail = f"{name}:", ":", ""
        fields = [f"{n}|{kind}{rate}" for n in numbers]
    else:
        head, joiner, tail = f"{name}:", ":", f"|{kind}{rate}{tags}"
        fields = numbers
    fixed = len(head.encode()) + len(tail.encode())
    current: list[str] = []
    size = fixed
    for field in fields:
        extra = len(field) + (len(joiner) if current else 0)
        if current and size + extra > limit:
            lines.append(head + joiner.join(current) + tail)
            current, size = [], fixed
            extra = len(field)
        current.append(field)
        size += extra
    if current:
        lines.append(head + joiner.join(current) + tail)
    return lines


def pack(lines: Iterable[str], mtu: int) -> tuple[list[bytes], int]:
    """Pack lines into datagrams of at most ``mtu`` bytes, in order.

    Returns ``(datagrams, oversize)``: a line longer than ``mtu`` on its own cannot be sent
    whole (a daemon would read a cut line as a different metric), so it is dropped and counted.
    """
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    oversize = 0
    for line in lines:
        data = line.encode("utf-8", "replace")
        length = len(data)
        if length > mtu:
            oversize += 1
            continue
        if current and size + 1 + length > mtu:
            datagrams.append(b"\n".join(current))
            current, size = [], 0
        if current:
            size += 1
        current.append(data)
        size += length
    if current:
        datagrams.append(b"\n".join(current))
    return datagrams, oversize


def finite(value: float) -> bool:
    """Whether a value can be written (daemons reject ``inf`` and ``nan``)."""
    return math.isfinite(value)
