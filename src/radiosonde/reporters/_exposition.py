"""Render metric snapshots as Prometheus text (format 0.0.4) or OpenMetrics 1.0.

The private mechanics of :mod:`radiosonde.reporters.prometheus`: naming, escaping, content
negotiation and the renderer. Standard library only.

Naming (what a dotted metric name becomes):

* ``"http.request.stop.duration"`` -> ``http_request_stop_duration``: dots and any character
  outside ``[a-zA-Z0-9_]`` become ``_``; a leading digit gets a ``_`` in front; the reporter's
  ``namespace`` is prepended with ``_`` (except to radiosonde's own ``radiosonde.*`` metrics).
* The unit, plural, is appended unless the name already ends with it:
  ``unit="millisecond"`` -> ``..._milliseconds``, ``"byte"`` -> ``..._bytes``. Counters count
  events, so their unit (if any) is not used.
* Counters (and sums, and anything with ``prometheus_type="counter"``) expose their sample as
  ``<family>_total``; a name already ending in ``_total`` does not get a second one.
* ``reporter_options={"prometheus_name": "..."}`` replaces the derived name (the namespace is
  still prepended, no unit is appended).

Two definitions whose Prometheus names would clash (equal names, or one family's
``_total``/``_bucket``/``_sum``/``_count``/``_created`` being another's name) are refused when the
renderer is built: Prometheus would otherwise mix or drop their samples silently.

Redaction (on by default, ``redact=False`` turns it off): tag values are exported, so they go
through :mod:`radiosonde.redact` when a series' label block is built. A tag whose *name* is
sensitive (``session``, ``token``, ``api_key``...) is exposed as ``[REDACTED]``; a value holding
a secret (a bearer token, a JWT, a card number...) has it replaced. Series whose labels become
equal that way are merged into one, as Prometheus rejects a scrape with a repeated series:
counters and sums add up, a last value keeps one of the values, histograms add their buckets,
summaries their sum and count (their quantiles cannot be combined and are left out).

Performance: the static text of each family (HELP/TYPE lines, sample names, ``le`` labels) is
built once; each series' label block is escaped (and redacted) once and cached by its tag
values; a histogram series is written with a single ``str.format`` call of a per-family
template. Merging runs only for a family where redaction changed some label.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from radiosonde.redact import Redactor, default_redactor

if TYPE_CHECKING:
    from radiosonde.metrics import Metric

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "Exposition",
    "PrometheusNameError",
    "accepts_gzip",
    "canonical_float",
    "escape_help",
    "escape_label_value",
    "format_value",
    "negotiate",
    "prometheus_type",
    "sanitize_label_name",
    "sanitize_metric_name",
    "unit_suffix",
]

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

PrometheusType: TypeAlias = Literal["counter", "gauge", "histogram", "summary"]

_logger = logging.getLogger("radiosonde.reporters.prometheus")

_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_VALID_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Lone surrogates (from os.fsdecode, say) are not text and cannot be encoded as UTF-8.
_SURROGATES = re.compile("[\ud800-\udfff]")
# Units that read the same in the plural, or whose Prometheus convention has no plural.
_NO_PLURAL = frozenset(
    {"percent", "ratio", "celsius", "fahrenheit", "kelvin", "hertz", "lux", "info", "total"}
)
# Sample-name suffixes each Prometheus type claims besides the family name itself.
_CLAIMED_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": (),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}
# Label names Prometheus gives a meaning to, per type.
_RESERVED_LABELS: dict[str, str] = {"histogram": "le", "summary": "quantile"}
# The one tag of the overflow series (radiosonde.metrics.OVERFLOW_TAG; a tag no metric may use).
_OVERFLOW = "overflow"
_OVERFLOW_TAGS: Mapping[str, str] = {_OVERFLOW: "true"}


class PrometheusNameError(ValueError):
    """A metric definition cannot be exposed under a unique, valid Prometheus name."""


# -- the shape of the data we render (structural: radiosonde.aggregation's snapshots fit) --------


class SeriesLike(Protocol):
    """One series of a metric: what :class:`radiosonde.aggregation.SeriesSnapshot` provides.

    ``tags`` holds the metric's tags in their declared order (``{"overflow": "true"}`` for the
    overflow series): the renderer caches label blocks by the tag values alone.
    """

    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def value(self) -> float | None: ...
    @property
    def count(self) -> int: ...
    @property
    def sum(self) -> float: ...
    @property
    def bucket_bounds(self) -> tuple[float, ...]: ...
    @property
    def bucket_counts(self) -> tuple[int, ...]: ...
    @property
    def quantiles(self) -> Mapping[float, float]: ...


class MetricSnapshotLike(Protocol):
    """A metric and its series: what :class:`radiosonde.aggregation.MetricSnapshot` provides.

    A snapshot may also carry ``rows`` and ``overflow``, as
    :class:`radiosonde.aggregation.ScalarRows` does: the series of a counter, sum or last value
    as ``(tag values, value)`` pairs, rendered without a series object per line.
    """

    @property
    def metric(self) -> Metric: ...
    @property
    def series(self) -> Sequence[SeriesLike]: ...


ScalarRow: TypeAlias = "tuple[tuple[str, ...] | None, float | None]"
"""Tag values (``None``: the overflow series) and value of one scalar series."""


# -- names, escaping, numbers --------------------------------------------------------------------


def sanitize_metric_name(name: str) -> str:
    """``name`` as a valid Prometheus metric name: invalid characters become ``_``, and a name
    that would start with a digit (or be empty) gets a leading ``_``. Colons are replaced too:
    Prometheus reserves them for recording rules."""
    name = _NAME_BAD_CHARS.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def sanitize_label_name(name: str) -> str:
    """``name`` as a valid Prometheus label name (as for metric names; a leading ``__``,
    reserved for Prometheus' own labels, is cut to a single ``_``)."""
    name = sanitize_metric_name(name)
    while name.startswith("__"):
        name = name[1:]
    return name


def unit_suffix(unit: str) -> str:
    """The plural name suffix for a unit: ``millisecond`` -> ``milliseconds``, ``byte`` ->
    ``bytes``, ``byte_per_second`` -> ``bytes_per_second``; ``percent``, ``ratio``... unchanged."""
    unit = sanitize_metric_name(unit.lower()).strip("_") or "unit"
    head, sep, tail = unit.partition("_per_")
    if not (head.endswith("s") or head in _NO_PLURAL):
        head += "s"
    return head + sep + tail


def escape_label_value(value: str) -> str:
    """A label value escaped for both formats: backslash, double quote and line feed. Text that
    cannot be encoded as UTF-8 (lone surrogates) is replaced by U+FFFD."""
    if not value.isascii():
        value = _SURROGATES.sub("\ufffd", value)
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str, *, openmetrics: bool) -> str:
    """HELP text escaped: backslash and line feed in text 0.0.4 (the only escapes it knows),
    plus the double quote in OpenMetrics (as in label values)."""
    if openmetrics:
        return escape_label_value(text)
    text = _SURROGATES.sub("\ufffd", text)
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: the shortest round-tripping repr, with ``+Inf``, ``-Inf`` and ``NaN``
    spelt as both formats require. Integers (bucket counts) print without a decimal point."""
    if value - value == 0:
        return repr(value)
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def canonical_float(value: float) -> str:
    """A number in OpenMetrics' canonical form, for ``le`` and ``quantile`` label values: as Go
    prints ``%g`` (exponent from 1e+06 up and below 1e-04), with ``.0`` added to a number that
    has neither a point nor an exponent; ``+Inf``/``-Inf``/``NaN``. Both formats use it, so a
    series keeps the same labels whichever format Prometheus negotiates."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if value - value != 0:
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if value < 0 else ""
    text = repr(abs(value))
    # Python's repr already matches Go below 1e-04 (both use an exponent) and from 1e+16 up;
    # in between, Go switches to an exponent from 1e+06.
    if "e" in text:
        return sign + text
    whole, _, fraction = text.partition(".")
    if len(whole) < 7:
        return sign + text
    digits = (whole + fraction).rstrip("0")
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e+{len(whole) - 1:02d}"


def prometheus_type(metric: Metric) -> PrometheusType:
    """The Prometheus type a definition is exposed as: counter -> counter, sum -> counter,
    last_value -> gauge (``reporter_options["prometheus_type"]`` overrides these three),
    distribution -> histogram, summary -> summary."""
    override = metric.reporter_options.get("prometheus_type")
    if metric.kind == "distribution":
        default: PrometheusType = "histogram"
    elif metric.kind == "summary":
        default = "summary"
    elif metric.kind == "last_value":
        default = "gauge"
    else:
        default = "counter"
    if override is None:
        return default
    if default in ("histogram", "summary"):
        raise PrometheusNameError(
            f"metric {metric.name!r}: prometheus_type applies to counter, sum and last_value"
            f" metrics only; a {metric.kind} is always exposed as a {default}"
        )
    if override not in ("counter", "gauge"):
        raise PrometheusNameError(
            f"metric {metric.name!r}: prometheus_type must be 'counter' or 'gauge',"
            f" got {override!r}"
        )
    return "counter" if override == "counter" else "gauge"


# -- content negotiation --------------------------------------------------------------------------


def _media_ranges(header: str) -> list[tuple[str, dict[str, str], float]]:
    ranges: list[tuple[str, dict[str, str], float]] = []
    for item in header.split(","):
        kind, *raw_params = item.split(";")
        kind = kind.strip().lower()
        if not kind:
            continue
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, val = raw.partition("=")
            params[key.strip().lower()] = val.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if not 0.0 <= q <= 1.0:  # NaN fails this too
            q = 0.0
        ranges.append((kind, params, q))
    return ranges


def _quality(
    ranges: list[tuple[str, dict[str, str], float]], media: str, versions: tuple[str, ...]
) -> tuple[float, int]:
    """The q an Accept header gives ``media`` (that of the most specific matching range), and
    how specific that range was (-1: none matched, 0: */*, 1: type/*, 2: exact, 3: + version)."""
    best_specificity, best_q = -1, 0.0
    major = media.partition("/")[0]
    for kind, params, q in ranges:
        if kind == media:
            version = params.get("version")
            if version is not None and version not in versions:
                continue
            specificity = 3 if version is not None else 2
        elif kind == f"{major}/*":
            specificity = 1
        elif kind == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, best_q = specificity, q
    return best_q, best_specificity


def negotiate(accept: str | None) -> bool:
    """Whether to answer an ``Accept`` header with OpenMetrics (True) or text 0.0.4 (False).

    OpenMetrics (version 1.x, or no version given) is chosen when the client gives it a higher
    q than text 0.0.4, or the same q through a more specific media range (so a bare ``*/*``
    still gets text). No header, or a header that makes no sense, gets text. Never raises.
    """
    if not accept:
        return False
    try:
        ranges = _media_ranges(accept)
        om = _quality(ranges, "application/openmetrics-text", ("1.0.0", "1.0", "1"))
        text = _quality(ranges, "text/plain", ("0.0.4",))
    except Exception:
        return False
    return om[0] > 0.0 and om > text


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip`` or ``*`` with q > 0)."""
    if not accept_encoding:
        return False
    try:
        ranges = _media_ranges(accept_encoding)
    except Exception:
        return False
    explicit = {kind: q for kind, _, q in ranges}
    if "gzip" in explicit:
        return explicit["gzip"] > 0.0
    return explicit.get("*", 0.0) > 0.0


# -- families -------------------------------------------------------------------------------------


class _Family:
    """Everything static about one metric's exposition, and its label-block cache."""

    __slots__ = (
        "cache",
        "cache_limit",
        "collapsing",
        "histogram",
        "label_names",
        "metric",
        "name",
        "om_header",
        "redactor",
        "sample",
        "summary_templates",
        "text_header",
        "type",
        "unit",
        "warned",
    )

    def __init__(
        self,
        metric: Metric,
        name: str,
        type_: PrometheusType,
        unit: str | None,
        redactor: Redactor | None = None,
    ) -> None:
        self.metric = metric
        self.redactor = redactor
        # Set once redaction changed a label of this family (until the policy changes): series
        # whose labels became equal must be merged before they are written.
        self.collapsing = False
        self.name = name
        self.type: PrometheusType = type_
        self.unit = unit
        self.sample = name + "_total" if type_ == "counter" else name
        help_text = metric.description or _default_help(metric)
        text_name = self.sample
        self.text_header = (
            f"# HELP {text_name} {escape_help(help_text, openmetrics=False)}\n"
            f"# TYPE {text_name} {type_}\n"
        )
        om_unit = f"# UNIT {name} {unit}\n" if unit else ""
        self.om_header = (
            f"# TYPE {name} {type_}\n{om_unit}"
            f"# HELP {name} {escape_help(help_text, openmetrics=True)}\n"
        )
        labels: dict[str, str] = {}
        for tag in metric.tags:
            label = sanitize_label_name(tag)
            if label in labels.values():
                raise PrometheusNameError(
                    f"metric {metric.name!r}: tags {tag!r} and"
                    f" {next(k for k, v in labels.items() if v == label)!r} both become the"
                    f" Prometheus label {label!r}; rename one"
                )
            reserved = _RESERVED_LABELS.get(type_)
            if label == reserved:
                raise PrometheusNameError(
                    f"metric {metric.name!r}: the tag {tag!r} cannot be used: Prometheus"
                    f" {type_}s use the label {reserved!r} themselves; rename the tag (e.g. with"
                    " tag_values=)"
                )
            labels[tag] = label
        self.label_names = labels
        # tag values -> (closed label block, open label block): '{a="x"}' and '{a="x",'.
        # Keyed by the values alone: a series' tags are the metric's tags, in order.
        self.cache: dict[tuple[str, ...], tuple[str, str]] = {}
        self.cache_limit = 4096
        # (bounds, template, template without _sum/_count, negative bounds?), set at once so
        # that concurrent renders never see half of it.
        self.histogram: tuple[tuple[float, ...], str, str, bool] | None = None
        self.summary_templates: dict[tuple[tuple[float, ...], bool], str] = {}
        self.warned = False

    def set_cache_limit(self, max_series: int) -> None:
        # Room for every live series (plus the overflow one) twice over, so the cache survives
        # series coming and going; past it, it is emptied rather than grown.
        self.cache_limit = max(256, 2 * (max_series + 1))

    def labels(self, tags: Mapping[str, str], key: tuple[str, ...] | None) -> tuple[str, str]:
        """The label blocks for a series: the cache-miss path (``key``: the tag values, the
        cache key), or the overflow series (``key`` None: not cached, there is only one)."""
        names = self.label_names
        redactor = self.redactor
        if redactor is None:
            inner = ",".join(
                f'{names.get(k) or sanitize_label_name(k)}="{escape_label_value(str(v))}"'
                for k, v in tags.items()
            )
        else:
            parts = []
            for k, v in tags.items():
                text = str(v)
                if redactor.is_sensitive_key(k):
                    clean = redactor.marker
                    self.collapsing = True
                else:
                    clean = redactor.redact_string(text)
                    if clean != text:
                        self.collapsing = True
                parts.append(
                    f'{names.get(k) or sanitize_label_name(k)}="{escape_label_value(clean)}"'
                )
            inner = ",".join(parts)
        blocks = (f"{{{inner}}}", f"{{{inner},") if inner else ("", "{")
        if key is not None:
            cache = self.cache
            if len(cache) >= self.cache_limit:
                cache.clear()
            cache[key] = blocks
        return blocks

    def blocks(self, tags: Mapping[str, str]) -> tuple[str, str]:
        """The label blocks of a series, from the cache when they are there."""
        if _OVERFLOW in tags:
            return self.labels(tags, None)
        key = tuple(tags.values())
        cached = self.cache.get(key)
        return cached if cached is not None else self.labels(tags, key)

    def reset(self) -> None:
        """Forget the label blocks (the redaction policy changed)."""
        self.cache = {}
        self.collapsing = False

    def prepare_histogram(
        self, bounds: tuple[float, ...]
    ) -> tuple[tuple[float, ...], str, str, bool]:
        """The bucket templates for a histogram's bounds (built on first sight of them)."""
        # str.format templates: {0} is the open label block, {1} the closed one, {2}... the
        # cumulative counts (the last one for +Inf), then the sum and the count.
        bucket = self.name + "_bucket"
        les = [*(canonical_float(b) for b in bounds), "+Inf"]
        buckets = "".join(
            bucket + '{0}le="' + le + '"}} {' + str(i + 2) + "}\n" for i, le in enumerate(les)
        )
        n = len(les) + 2
        tail = (
            f"{self.name}_sum{{1}} {{{n}}}\n"  # e.g. x_sum{1} {17}
            f"{self.name}_count{{1}} {{{n + 1}}}\n"
        )
        prepared = (bounds, buckets + tail, buckets, bool(bounds) and bounds[0] < 0)
        self.histogram = prepared
        return prepared

    def summary_template(self, quantiles: tuple[float, ...], with_sum: bool) -> str:
        """The template of a summary series: {0}/{1} label blocks, {2} sum, {3} count, {4}...
        the quantile values."""
        key = (quantiles, with_sum)
        template = self.summary_templates.get(key)
        if template is None:
            name = self.name
            template = "".join(
                name + '{0}quantile="' + canonical_float(q) + '"}} {' + str(i + 4) + "}\n"
                for i, q in enumerate(quantiles)
            )
            if with_sum:
                template += f"{name}_sum{{1}} {{2}}\n{name}_count{{1}} {{3}}\n"
            if len(self.summary_templates) < 64:
                self.summary_templates[key] = template
        return template


def _default_help(metric: Metric) -> str:
    if metric.kind == "counter":
        return f"Count of {'.'.join(metric.event_name)} events"
    kind = metric.kind.replace("_", " ").capitalize()
    unit = f" ({metric.unit})" if metric.unit else ""
    return f"{kind} of {metric.name}{unit}"


def family_name(metric: Metric, namespace: str | None = None) -> tuple[str, str | None]:
    """The family name and the OpenMetrics unit of a definition (see the module docstring)."""
    type_ = prometheus_type(metric)
    override = metric.reporter_options.get("prometheus_name")
    # radiosonde's own metrics keep their radiosonde_ names whatever the namespace.
    own = metric.name_parts[0] == "radiosonde"
    prefix = sanitize_metric_name(namespace) + "_" if namespace and not own else ""
    unit = metric.unit if metric.kind != "counter" else None
    suffix = unit_suffix(unit) if unit else None
    if override is not None:
        if not isinstance(override, str) or not _VALID_NAME.match(override):
            raise PrometheusNameError(
                f"metric {metric.name!r}: prometheus_name must match [a-zA-Z_][a-zA-Z0-9_]*,"
                f" got {override!r}"
            )
        name = prefix + override
    else:
        name = sanitize_metric_name(prefix + "_".join(metric.name_parts))
        if suffix and not name.endswith("_" + suffix):
            name += "_" + suffix
    if type_ == "counter" and name.endswith("_total") and len(name) > len("_total"):
        name = name[: -len("_total")]
    om_unit = suffix if suffix and name.endswith("_" + suffix) else None
    return name, om_unit


def _claimed(name: str, type_: str) -> list[str]:
    return [name, *(name + s for s in _CLAIMED_SUFFIXES[type_])]


# -- the renderer ---------------------------------------------------------------------------------


class Exposition:
    """Renders snapshots of a fixed set of metric definitions.

    Built once per reporter: checks every name (raising :class:`PrometheusNameError`, a
    ``ValueError``, on a clash or an unusable definition) and precomputes the static text.

    ``redact`` (default True): label values go through :data:`radiosonde.redact.default_redactor`
    (see the module docstring); ``False`` exposes them as they are.

    :meth:`render` is thread-safe and never raises because of a value: the few values a format
    cannot carry are left out and counted in :attr:`skipped_samples` (see :meth:`render`).
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        *,
        namespace: str | None = None,
        max_series: int = 2000,
        redact: bool = True,
    ) -> None:
        if not isinstance(redact, bool):
            raise ValueError(f"redact must be True or False, got {redact!r}")
        self.namespace = namespace
        self.redact = redact
        self._redactor: Redactor | None = default_redactor if redact else None
        # The policy's generation the cached label blocks were redacted under.
        self._generation = default_redactor.generation
        self._families: dict[Metric, _Family] = {}
        owners: dict[str, str] = {}
        for metric in metrics:
            if metric in self._families:
                continue
            name, unit = family_name(metric, namespace)
            type_ = prometheus_type(metric)
            what = f"{metric.kind}({metric.name!r})"
            for claimed in _claimed(name, type_):
                other = owners.get(claimed)
                if other is not None:
                    raise PrometheusNameError(
                        f"{what} and {other} both need the Prometheus name {claimed!r}"
                        f" (exposed as the {type_} {name!r}). Give one a distinct name, a unit,"
                        ' or reporter_options={"prometheus_name": "..."}'
                    )
            for claimed in _claimed(name, type_):
                owners[claimed] = f"{what} (the {type_} {name!r})"
            family = _Family(metric, name, type_, unit, self._redactor)
            family.set_cache_limit(metric.max_series or max_series)
            buckets = metric.reporter_options.get("buckets")
            if type_ == "histogram" and buckets:
                family.prepare_histogram(tuple(float(b) for b in buckets))
            self._families[metric] = family
        self._lock = threading.Lock()
        self.skipped_samples = 0

    @property
    def families(self) -> dict[Metric, tuple[str, PrometheusType]]:
        """Each definition's family name and Prometheus type."""
        return {m: (f.name, f.type) for m, f in self._families.items()}

    def add(self, metric: Metric, *, max_series: int = 2000) -> None:
        """Render ``metric`` too from now on (a definition made at run time).

        Checked as at construction: :class:`PrometheusNameError` when it cannot be exposed or
        when one of its Prometheus names is already claimed by a metric rendered here; nothing
        changes then. Adding a definition already here does nothing. Safe to call while other
        threads render. ``max_series`` sizes the label cache when the metric sets no limit.
        """
        with self._lock:
            if metric in self._families:
                return
            name, unit = family_name(metric, self.namespace)
            type_ = prometheus_type(metric)
            claimed = _claimed(name, type_)
            for other_metric, other in self._families.items():
                clash = next((c for c in _claimed(other.name, other.type) if c in claimed), None)
                if clash is not None:
                    raise PrometheusNameError(
                        f"{metric.kind}({metric.name!r}) and {other_metric.kind}"
                        f"({other_metric.name!r}) (the {other.type} {other.name!r}) both need the"
                        f" Prometheus name {clash!r} (exposed as the {type_} {name!r}). Give one"
                        ' a distinct name, a unit, or reporter_options={"prometheus_name": "..."}'
                    )
            family = _Family(metric, name, type_, unit, self._redactor)
            family.set_cache_limit(metric.max_series or max_series)
            buckets = metric.reporter_options.get("buckets")
            if type_ == "histogram" and buckets:
                family.prepare_histogram(tuple(float(b) for b in buckets))
            # A new dict rather than an insertion: render() and families read it unlocked.
            self._families = {**self._families, metric: family}

    def render(
        self,
        snapshots: Iterable[MetricSnapshotLike],
        *,
        openmetrics: bool = False,
    ) -> bytes:
        """The exposition of ``snapshots`` as UTF-8 bytes.

        Text 0.0.4 shows every value. OpenMetrics leaves out what its spec forbids and counts
        it in :attr:`skipped_samples`: negative or NaN counter totals, and a histogram's or
        summary's ``_sum``/``_count`` when the sum is negative (or, for a histogram, when it has
        negative bucket bounds); negative quantile values.
        """
        out: list[str] = []
        skipped = 0
        families = self._families
        redactor = self._redactor
        if redactor is not None and redactor.generation != self._generation:
            self._policy_changed(redactor)
        for snapshot in snapshots:
            family = families.get(snapshot.metric)
            if family is None:
                continue
            out.append(family.om_header if openmetrics else family.text_header)
            rows: Iterable[ScalarRow] | None = getattr(snapshot, "rows", None)
            if rows is not None and not family.collapsing:
                overflow: float | None = getattr(snapshot, "overflow", None)
                if overflow is not None:
                    rows = [*rows, (None, overflow)]
                start = len(out)
                written = _render_scalar_rows(family, rows, out, openmetrics)
                if not family.collapsing:
                    skipped += written
                    continue
                del out[start:]  # redaction made series equal: merge them, below
            series = snapshot.series
            if family.collapsing:
                skipped += _render_family(family, _collapse(family, series), out, openmetrics)
                continue
            start = len(out)
            written = _render_family(family, series, out, openmetrics)
            if family.collapsing:
                # Redaction changed a label for the first time during this render: some
                # series may now be equal. Write the family again, merged (once per family).
                del out[start:]
                written = _render_family(family, _collapse(family, series), out, openmetrics)
            skipped += written
        if openmetrics:
            out.append("# EOF\n")
        if skipped:
            with self._lock:
                self.skipped_samples += skipped
        return "".join(out).encode("utf-8")

    def _policy_changed(self, redactor: Redactor) -> None:
        # Keys or patterns were added to the policy: labels must be redacted again.
        with self._lock:
            if redactor.generation == self._generation:
                return
            for family in self._families.values():
                family.reset()
            self._generation = redactor.generation


def _render_family(
    family: _Family, series: Sequence[SeriesLike], out: list[str], openmetrics: bool
) -> int:
    type_ = family.type
    if type_ == "histogram":
        return _render_histogram(family, series, out, openmetrics)
    if type_ == "summary":
        return _render_summary(family, series, out, openmetrics)
    return _render_scalar(family, series, out, openmetrics)


class _Merged:
    """Series whose labels redaction made equal, added up into one (see :func:`_collapse`)."""

    __slots__ = ("bucket_bounds", "bucket_counts", "count", "quantiles", "sum", "tags", "value")

    def __init__(self, tags: Mapping[str, str]) -> None:
        self.tags = tags
        self.value: float | None = None
        self.count = 0
        self.sum = 0.0
        self.bucket_bounds: tuple[float, ...] = ()
        self.bucket_counts: tuple[int, ...] = ()
        self.quantiles: Mapping[float, float] = {}


def _collapse(family: _Family, series: Sequence[SeriesLike]) -> Sequence[SeriesLike]:
    """``series`` with those whose label blocks are equal merged into one, in first-seen order.

    Counters and sums add up; a last value keeps the last one given; histograms add their
    buckets (series with other bounds than the first are left out), sum and count; summaries
    add sum and count and lose their quantiles, which cannot be combined.
    """
    groups: dict[str, list[SeriesLike]] = {}
    for s in series:
        groups.setdefault(family.blocks(s.tags)[0], []).append(s)
    if len(groups) == len(series):
        return series
    merged: list[SeriesLike] = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        into = _Merged(group[0].tags)
        if family.type == "histogram":
            bounds = group[0].bucket_bounds
            counts = [0] * len(group[0].bucket_counts)
            for s in group:
                if s.bucket_bounds == bounds and len(s.bucket_counts) == len(counts):
                    counts = [a + b for a, b in zip(counts, s.bucket_counts, strict=True)]
                    into.count += s.count
                    into.sum += s.sum
            into.bucket_bounds, into.bucket_counts = bounds, tuple(counts)
        elif family.type == "summary":
            into.count = sum(s.count for s in group)
            into.sum = sum(s.sum for s in group)
        else:
            values = [s.value for s in group if s.value is not None]
            if values:
                into.value = values[-1] if family.metric.kind == "last_value" else sum(values)
        merged.append(into)
    return merged


def _render_scalar(
    family: _Family, series: Sequence[SeriesLike], out: list[str], openmetrics: bool
) -> int:
    rows = ((None if _OVERFLOW in s.tags else tuple(s.tags.values()), s.value) for s in series)
    return _render_scalar_rows(family, rows, out, openmetrics)


def _render_scalar_rows(
    family: _Family, rows: Iterable[ScalarRow], out: list[str], openmetrics: bool
) -> int:
    cache = family.cache
    sample = family.sample
    tag_names = family.metric.tags
    check = openmetrics and family.type == "counter"
    skipped = 0
    for key, value in rows:
        if value is None:
            continue
        if key is None:
            blocks = family.labels(_OVERFLOW_TAGS, None)
        else:
            cached = cache.get(key)
            blocks = (
                cached
                if cached is not None
                else family.labels(dict(zip(tag_names, key, strict=True)), key)
            )
        if value - value == 0:
            if check and value < 0:
                skipped += 1
                _warn_negative(family)
                continue
            out.append(f"{sample}{blocks[0]} {value!r}\n")
        else:
            if check and not value > 0:  # NaN or -Inf
                skipped += 1
                continue
            out.append(f"{sample}{blocks[0]} {format_value(value)}\n")
    return skipped


def _render_histogram(
    family: _Family, series: Sequence[SeriesLike], out: list[str], openmetrics: bool
) -> int:
    skipped = 0
    prepared = family.histogram
    if prepared is None:
        prepared = ((float("nan"),), "", "", False)  # matches no bounds: built on first series
    known_bounds, template, template_nosum, negative = prepared
    for s in series:
        bounds = s.bucket_bounds
        if bounds is not known_bounds:
            if bounds == known_bounds:
                known_bounds = bounds  # series usually share one tuple: compare by identity
            elif len(bounds) + 1 != len(s.bucket_counts):
                skipped += 1
                continue
            else:
                known_bounds, template, template_nosum, negative = family.prepare_histogram(
                    tuple(bounds)
                )
        blocks = family.blocks(s.tags)
        total = s.sum
        if openmetrics and (negative or not total >= 0):
            skipped += 1
            out.append(template_nosum.format(blocks[1], blocks[0], *s.bucket_counts))
            continue
        total_text = repr(total) if total - total == 0 else format_value(total)
        out.append(template.format(blocks[1], blocks[0], *s.bucket_counts, total_text, s.count))
    return skipped


def _render_summary(
    family: _Family, series: Sequence[SeriesLike], out: list[str], openmetrics: bool
) -> int:
    skipped = 0
    for s in series:
        blocks = family.blocks(s.tags)
        items = list(s.quantiles.items())
        total = s.sum
        with_sum = True
        if openmetrics:
            kept = [(q, v) for q, v in items if not v < 0]
            skipped += len(items) - len(kept)
            items = kept
            if not total >= 0:
                with_sum = False  # OpenMetrics wants _sum and _count both or neither
                skipped += 1
        template = family.summary_template(tuple(q for q, _ in items), with_sum)
        values = [format_value(v) for _, v in items]
        out.append(template.format(blocks[1], blocks[0], format_value(total), s.count, *values))
    return skipped


def _warn_negative(family: _Family) -> None:
    if not family.warned:
        family.warned = True
        _logger.warning(
            "metric %r is exposed as a Prometheus counter but went negative; OpenMetrics cannot"
            " carry that, so those samples are left out. Declare it with reporter_options="
            '{"prometheus_type": "gauge"} if its values can be negative.',
            family.metric.name,
        )
