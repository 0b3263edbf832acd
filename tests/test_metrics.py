"""Metric definitions: names, options, validation at definition time, value and tag reading."""

from __future__ import annotations

import dataclasses
import math
import operator
from fractions import Fraction
from typing import Any

import pytest

from radiosonde import metrics as m

KINDS = [m.counter, m.sum, m.last_value, m.summary, m.distribution]


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("define", KINDS)
def test_the_name_is_the_event_then_the_measurement(define: Any) -> None:
    metric = define("http.request.stop.duration")
    assert metric.kind == define.__name__
    assert metric.name == "http.request.stop.duration"
    assert metric.name_parts == ("http", "request", "stop", "duration")
    assert metric.event_name == ("http", "request", "stop")
    assert metric.measurement == "duration"


def test_a_name_may_be_given_as_a_list_of_parts() -> None:
    metric = m.sum(["db", "query", "rows"])
    assert metric.name == "db.query.rows"
    assert metric.event_name == ("db", "query")


def test_event_name_and_measurement_override_either_half() -> None:
    metric = m.counter("http.requests", event_name="http.request.stop", measurement="duration")
    assert metric.event_name == ("http", "request", "stop")
    assert metric.measurement == "duration"
    assert m.sum("total.bytes", event_name=("net", "send")).event_name == ("net", "send")


def test_a_one_part_name_needs_an_event_name() -> None:
    with pytest.raises(ValueError, match="at least two parts"):
        m.counter("requests")
    assert m.counter("requests", event_name="http.request.stop").name == "requests"


@pytest.mark.parametrize(
    "name", ["http..stop", "http.1request", "http.re quest", "http.stop.", "", "é.x"]
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        m.counter(name)


def test_a_name_of_another_type_is_refused() -> None:
    with pytest.raises(ValueError, match="dotted string or a list"):
        m.counter(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid metric name"):
        m.counter(["http", 3])  # type: ignore[list-item]


def test_an_invalid_event_name_is_refused_with_the_metric_named() -> None:
    with pytest.raises(ValueError, match=r"'x\.y'.*invalid event name"):
        m.counter("x.y", event_name="a..b")


def test_a_prefix_subscription_is_not_an_event_name() -> None:
    with pytest.raises(ValueError, match="prefix subscription"):
        m.counter("x.y", event_name="http.*")


# -- measurements ----------------------------------------------------------------------------


def test_an_invalid_measurement_key_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid measurement key"):
        m.sum("a.b", measurement="not a key")


def test_a_measurement_that_is_neither_key_nor_function_is_refused() -> None:
    with pytest.raises(ValueError, match="a key or a function"):
        m.sum("a.b", measurement=3)  # type: ignore[arg-type]


def test_a_one_argument_measurement_function_gets_the_measurements() -> None:
    metric = m.sum("a.b", measurement=lambda ms: ms["x"] * 2)
    assert metric.value({"x": 4}, {"ignored": True}) == 8.0


def test_a_two_argument_measurement_function_gets_the_metadata_too() -> None:
    metric = m.sum("a.b", measurement=lambda ms, md: ms["x"] * md["factor"])
    assert metric.value({"x": 4}, {"factor": 3}) == 12.0


def test_a_varargs_measurement_function_gets_both() -> None:
    def both(*args: Any) -> float:
        return float(len(args))

    assert m.sum("a.b", measurement=both).value({}, {}) == 2.0


def test_a_measurement_function_without_signature_gets_the_measurements() -> None:
    metric = m.sum("a.b", measurement=operator.itemgetter("x"))
    assert metric.value({"x": 5}, {}) == 5.0


def test_counters_count_events_whatever_the_measurement() -> None:
    metric = m.counter("a.b")
    assert metric.value({}, {}) == 1.0
    assert metric.value({"b": "not a number"}, {}) == 1.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, 3.0),
        (2.5, 2.5),
        (-1, -1.0),
        (Fraction(1, 2), 0.5),
        (math.inf, math.inf),
    ],
)
def test_numbers_are_read_as_floats(raw: object, expected: float) -> None:
    value = m.sum("a.b").value({"b": raw}, {})
    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize("raw", [True, False, "3", None, math.nan, [1], 10**400, b"1"])
def test_values_that_are_not_usable_numbers_skip_the_update(raw: object) -> None:
    assert m.sum("a.b").value({"b": raw}, {}) is None


def test_a_missing_measurement_skips_the_update() -> None:
    assert m.summary("a.b").value({"c": 1}, {}) is None


def test_a_measurement_function_that_raises_skips_the_update() -> None:
    metric = m.sum("a.b", measurement=lambda ms: 1 / 0)
    assert metric.value({}, {}) is None


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "reported", "scale"),
    [
        (None, None, 1.0),
        ("millisecond", "millisecond", 1.0),
        ("request", "request", 1.0),
        ("native", "nanosecond", 1.0),
        (("nanosecond", "millisecond"), "millisecond", 1e-6),
        (("native", "millisecond"), "millisecond", 1e-6),
        (("native", "second"), "second", 1e-9),
        (("microsecond", "millisecond"), "millisecond", 1e-3),
        (("second", "millisecond"), "millisecond", 1000.0),
        (("millisecond", "native"), "nanosecond", 1e6),
        (("minute", "second"), "second", 60.0),
        (("byte", "kilobyte"), "kilobyte", 1e-3),
        (("byte", "kibibyte"), "kibibyte", 1 / 1024),
        (("kibibyte", "byte"), "byte", 1024.0),
        (("mebibyte", "kibibyte"), "kibibyte", 1024.0),
        (("gigabyte", "megabyte"), "megabyte", 1000.0),
    ],
)
def test_units_and_conversions(unit: Any, reported: str | None, scale: float) -> None:
    metric = m.distribution("a.b", unit=unit)
    assert metric.unit == reported
    assert metric.scale == pytest.approx(scale)


def test_the_conversion_applies_to_values() -> None:
    metric = m.distribution("a.b", unit=("nanosecond", "millisecond"))
    assert metric.value({"b": 1_500_000}, {}) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        (("second", "byte"), "cannot convert 'second' to 'byte'"),
        (("parsec", "second"), "cannot convert"),
        ("Milli Second", "invalid unit"),
        (5, "unit= must be"),
        (("a", "b", "c"), "unit= must be"),
    ],
)
def test_invalid_units_are_refused(unit: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        m.sum("a.b", unit=unit)


# -- tags ------------------------------------------------------------------------------------


def test_tags_are_read_from_the_metadata_as_strings_in_order() -> None:
    metric = m.counter("a.b", tags=["route", "status", "user"])
    assert metric.tags == ("route", "status", "user")
    assert metric.tags_for({"status": 200, "route": "/x", "user": None, "other": 1}) == (
        "/x",
        "200",
        "",
    )


def test_bytes_tag_values_are_decoded() -> None:
    metric = m.counter("a.b", tags=["k"])
    assert metric.tags_for({"k": b"caf\xc3\xa9"}) == ("café",)
    assert metric.tags_for({"k": b"\xff"}) == ("\ufffd",)


def test_tag_text_is_how_every_tag_value_becomes_text() -> None:
    assert m.tag_text("x") == "x"
    assert m.tag_text(None) == ""
    assert m.tag_text(b"caf\xc3\xa9") == "café"
    assert m.tag_text(b"\xff") == "\ufffd"
    assert m.tag_text(200) == "200"
    assert m.tag_text(True) == "True"


def test_a_missing_tag_skips_the_update() -> None:
    assert m.counter("a.b", tags=["route"]).tags_for({"path": "/x"}) is None


def test_a_tag_whose_str_raises_skips_the_update() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert m.counter("a.b", tags=["k"]).tags_for({"k": Bad()}) is None


def test_tag_values_computes_the_tags_from_the_metadata() -> None:
    metric = m.counter(
        "a.b", tags=["table"], tag_values=lambda md: {"table": md["query"].split()[-1]}
    )
    assert metric.tags_for({"query": "select from users"}) == ("users",)
    assert metric.tags_for({}) is None  # tag_values raised KeyError


def test_keep_and_drop_filter_events() -> None:
    kept = m.counter("a.b", keep=lambda md: md.get("ok") is True)
    dropped = m.counter("a.b", drop=lambda md: md.get("ok") is True)
    assert kept.tags_for({"ok": True}) == ()
    assert kept.tags_for({"ok": False}) is None
    assert dropped.tags_for({"ok": True}) is None
    assert dropped.tags_for({"ok": False}) == ()


def test_a_predicate_that_raises_skips_the_update() -> None:
    assert m.counter("a.b", keep=lambda md: md["missing"]).tags_for({}) is None


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("route", "takes a list of tag names"),
        (["1route"], "invalid tag"),
        (["a-b"], "invalid tag"),
        (["__name"], "invalid tag"),
        ([3], "invalid tag"),
        (["overflow"], "reserved for the overflow series"),
        (["route", "route"], "listed twice"),
    ],
)
def test_invalid_tags_are_refused(tags: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        m.counter("a.b", tags=tags)


def test_keep_and_drop_are_mutually_exclusive() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        m.counter("a.b", keep=lambda md: True, drop=lambda md: False)


@pytest.mark.parametrize("option", ["keep", "drop", "tag_values"])
def test_predicates_must_be_functions(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option}= must be a function"):
        m.counter("a.b", **{option: True})


def test_the_description_must_be_a_string() -> None:
    assert m.counter("a.b", description="Requests served.").description == "Requests served."
    with pytest.raises(ValueError, match="description must be a string"):
        m.counter("a.b", description=3)  # type: ignore[arg-type]


# -- reporter options and limits ---------------------------------------------------------------


def test_buckets_become_a_tuple_of_floats() -> None:
    metric = m.distribution("a.b", reporter_options={"buckets": [1, 2.5, 10]})
    assert metric.reporter_options["buckets"] == (1.0, 2.5, 10.0)


def test_reporter_options_are_read_only_and_kept() -> None:
    metric = m.counter("a.b", reporter_options={"sampling_rate": 0.5, "custom": "x"})
    assert metric.reporter_options == {"sampling_rate": 0.5, "custom": "x"}
    with pytest.raises(TypeError):
        metric.reporter_options["custom"] = "y"  # type: ignore[index]
    assert m.counter("a.b").reporter_options == {}


@pytest.mark.parametrize(
    ("define", "options", "message"),
    [
        (m.distribution, [("buckets", [1])], "must be a mapping"),
        (m.summary, {"buckets": [1, 2]}, "only apply to distribution"),
        (m.distribution, {"buckets": ["a"]}, "list of numbers"),
        (m.distribution, {"buckets": 5}, "list of numbers"),
        (m.distribution, {"buckets": []}, "finite numbers"),
        (m.distribution, {"buckets": [1, math.inf]}, "finite numbers"),
        (m.distribution, {"buckets": [1, math.nan]}, "finite numbers"),
        (m.distribution, {"buckets": [1, 5, 5]}, "strictly increasing"),
        (m.distribution, {"buckets": [5, 1]}, "strictly increasing"),
        (m.counter, {"sampling_rate": 0}, "sampling_rate"),
        (m.counter, {"sampling_rate": 1.5}, "sampling_rate"),
        (m.counter, {"sampling_rate": True}, "sampling_rate"),
        (m.counter, {"sampling_rate": "0.5"}, "sampling_rate"),
        (m.last_value, {"prometheus_type": "histogram"}, "prometheus_type"),
    ],
)
def test_invalid_reporter_options_are_refused(define: Any, options: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        define("a.b", reporter_options=options)


def test_valid_sampling_rate_and_prometheus_type() -> None:
    assert m.counter("a.b", reporter_options={"sampling_rate": 1}).reporter_options
    metric = m.last_value("a.b", reporter_options={"prometheus_type": "counter"})
    assert metric.reporter_options["prometheus_type"] == "counter"


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_max_series_must_be_a_positive_integer(limit: Any) -> None:
    with pytest.raises(ValueError, match="max_series"):
        m.counter("a.b", max_series=limit)


def test_max_series_is_kept() -> None:
    assert m.counter("a.b", max_series=10).max_series == 10
    assert m.counter("a.b").max_series is None


# -- the definition object -------------------------------------------------------------------


def test_definitions_are_immutable() -> None:
    metric = m.counter("a.b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        metric.name = "c.d"  # type: ignore[misc]


def test_repr_names_kind_name_event_and_tags() -> None:
    assert repr(m.counter("a.b", tags=["t"])) == ("counter('a.b', event_name=('a',), tags=('t',))")


def test_overflow_tag_constant() -> None:
    assert m.OVERFLOW_TAG == "overflow"
