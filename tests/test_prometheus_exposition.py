"""The Prometheus exposition: exact text, names, escaping, numbers, negotiation.

Golden checks pin the precise output for a small set of metrics in both formats; every
exposition is also read back by prometheus_client's parsers (an independent implementation of
both formats) and compared value for value. promtool and a real Prometheus are exercised in
test_prometheus_server.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import parser as prometheus_parser
from prometheus_client.openmetrics import parser as openmetrics_parser

from radiosonde import metrics as m
from radiosonde.aggregation import MetricSnapshot, ScalarRows, SeriesSnapshot
from radiosonde.reporters._exposition import (
    Exposition,
    PrometheusNameError,
    accepts_gzip,
    canonical_float,
    escape_label_value,
    family_name,
    format_value,
    negotiate,
    sanitize_label_name,
    sanitize_metric_name,
    unit_suffix,
)

# -- a small, fixed set of metrics and snapshots ----------------------------------------------

REQUESTS = m.counter(
    "http.request.stop.duration",
    tags=["route", "status"],
    description='Requests "served"\nin C:\\ land',
)
SENT = m.sum("http.response.sent.size", unit="byte", tags=["route"])
TEMPERATURE = m.last_value("room.temperature.value", unit="celsius", tags=["room"])
LATENCY = m.distribution(
    "http.request.stop.duration",
    unit=("nanosecond", "second"),
    tags=["route"],
    reporter_options={"buckets": [0.1, 1]},
)
ROWS = m.summary("db.query.stop.rows", tags=["table"])
GOLDEN_METRICS = [REQUESTS, SENT, TEMPERATURE, LATENCY, ROWS]

TRICKY = '/a"b\\c\nd'


def golden_snapshots() -> list[MetricSnapshot]:
    return [
        MetricSnapshot(
            REQUESTS,
            [
                SeriesSnapshot({"route": TRICKY, "status": "200"}, value=3.0),
                SeriesSnapshot({"overflow": "true"}, value=1.0),
            ],
        ),
        MetricSnapshot(SENT, [SeriesSnapshot({"route": "/a"}, value=1536.5)]),
        MetricSnapshot(
            TEMPERATURE,
            [
                SeriesSnapshot({"room": "lab"}, value=-3.5),
                SeriesSnapshot({"room": "attic"}, value=math.inf),
            ],
        ),
        MetricSnapshot(
            LATENCY,
            [
                SeriesSnapshot(
                    {"route": "/a"},
                    count=3,
                    sum=1.75,
                    min=0.05,
                    max=1.2,
                    bucket_bounds=(0.1, 1.0),
                    bucket_counts=(1, 2, 3),
                    quantiles={0.5: 0.5},
                )
            ],
        ),
        MetricSnapshot(
            ROWS,
            [
                SeriesSnapshot(
                    {"table": "users"}, count=2, sum=30.0, quantiles={0.5: 10.0, 0.99: 20.0}
                )
            ],
        ),
    ]


GOLDEN_TEXT = r"""# HELP http_request_stop_duration_total Requests "served"\nin C:\\ land
# TYPE http_request_stop_duration_total counter
http_request_stop_duration_total{route="/a\"b\\c\nd",status="200"} 3.0
http_request_stop_duration_total{overflow="true"} 1.0
# HELP http_response_sent_size_bytes_total Sum of http.response.sent.size (byte)
# TYPE http_response_sent_size_bytes_total counter
http_response_sent_size_bytes_total{route="/a"} 1536.5
# HELP room_temperature_value_celsius Last value of room.temperature.value (celsius)
# TYPE room_temperature_value_celsius gauge
room_temperature_value_celsius{room="lab"} -3.5
room_temperature_value_celsius{room="attic"} +Inf
# HELP http_request_stop_duration_seconds Distribution of http.request.stop.duration (second)
# TYPE http_request_stop_duration_seconds histogram
http_request_stop_duration_seconds_bucket{route="/a",le="0.1"} 1
http_request_stop_duration_seconds_bucket{route="/a",le="1.0"} 2
http_request_stop_duration_seconds_bucket{route="/a",le="+Inf"} 3
http_request_stop_duration_seconds_sum{route="/a"} 1.75
http_request_stop_duration_seconds_count{route="/a"} 3
# HELP db_query_stop_rows Summary of db.query.stop.rows
# TYPE db_query_stop_rows summary
db_query_stop_rows{table="users",quantile="0.5"} 10.0
db_query_stop_rows{table="users",quantile="0.99"} 20.0
db_query_stop_rows_sum{table="users"} 30.0
db_query_stop_rows_count{table="users"} 2
"""

GOLDEN_OPENMETRICS = r"""# TYPE http_request_stop_duration counter
# HELP http_request_stop_duration Requests \"served\"\nin C:\\ land
http_request_stop_duration_total{route="/a\"b\\c\nd",status="200"} 3.0
http_request_stop_duration_total{overflow="true"} 1.0
# TYPE http_response_sent_size_bytes counter
# UNIT http_response_sent_size_bytes bytes
# HELP http_response_sent_size_bytes Sum of http.response.sent.size (byte)
http_response_sent_size_bytes_total{route="/a"} 1536.5
# TYPE room_temperature_value_celsius gauge
# UNIT room_temperature_value_celsius celsius
# HELP room_temperature_value_celsius Last value of room.temperature.value (celsius)
room_temperature_value_celsius{room="lab"} -3.5
room_temperature_value_celsius{room="attic"} +Inf
# TYPE http_request_stop_duration_seconds histogram
# UNIT http_request_stop_duration_seconds seconds
# HELP http_request_stop_duration_seconds Distribution of http.request.stop.duration (second)
http_request_stop_duration_seconds_bucket{route="/a",le="0.1"} 1
http_request_stop_duration_seconds_bucket{route="/a",le="1.0"} 2
http_request_stop_duration_seconds_bucket{route="/a",le="+Inf"} 3
http_request_stop_duration_seconds_sum{route="/a"} 1.75
http_request_stop_duration_seconds_count{route="/a"} 3
# TYPE db_query_stop_rows summary
# HELP db_query_stop_rows Summary of db.query.stop.rows
db_query_stop_rows{table="users",quantile="0.5"} 10.0
db_query_stop_rows{table="users",quantile="0.99"} 20.0
db_query_stop_rows_sum{table="users"} 30.0
db_query_stop_rows_count{table="users"} 2
# EOF
"""


def parse(text: bytes, openmetrics: bool) -> dict[str, Any]:
    """Both formats through prometheus_client: {family: (type, help, unit, {(sample, labels):
    value})}. Raises if the parser rejects the exposition."""
    parser = openmetrics_parser if openmetrics else prometheus_parser
    families: dict[str, Any] = {}
    for family in parser.text_string_to_metric_families(text.decode("utf-8")):
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value) for s in family.samples
        }
        families[family.name] = (family.type, family.documentation, family.unit, samples)
    return families


def render(
    metrics: Iterable[m.Metric], snapshots: list[MetricSnapshot], openmetrics: bool = False
) -> bytes:
    # These tests are about the text format; redaction of exported tags has its own tests.
    return Exposition(metrics, redact=False).render(snapshots, openmetrics=openmetrics)


# -- golden ----------------------------------------------------------------------------------


def test_text_format_is_exactly_as_specified() -> None:
    assert render(GOLDEN_METRICS, golden_snapshots()).decode() == GOLDEN_TEXT


def test_openmetrics_format_is_exactly_as_specified() -> None:
    text = render(GOLDEN_METRICS, golden_snapshots(), openmetrics=True).decode()
    assert text == GOLDEN_OPENMETRICS


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_a_second_parser_reads_back_the_same_values(openmetrics: bool) -> None:
    families = parse(render(GOLDEN_METRICS, golden_snapshots(), openmetrics), openmetrics)

    kind, help_text, _, samples = families["http_request_stop_duration"]
    assert kind == "counter"
    assert help_text == 'Requests "served"\nin C:\\ land'
    assert samples == {
        ("http_request_stop_duration_total", (("route", TRICKY), ("status", "200"))): 3.0,
        ("http_request_stop_duration_total", (("overflow", "true"),)): 1.0,
    }
    assert families["http_response_sent_size_bytes"][3] == {
        ("http_response_sent_size_bytes_total", (("route", "/a"),)): 1536.5
    }
    kind, _, _, samples = families["room_temperature_value_celsius"]
    assert kind == "gauge"
    assert samples[("room_temperature_value_celsius", (("room", "lab"),))] == -3.5
    assert samples[("room_temperature_value_celsius", (("room", "attic"),))] == math.inf
    kind, _, _, samples = families["http_request_stop_duration_seconds"]
    assert kind == "histogram"
    name = "http_request_stop_duration_seconds"
    assert samples == {
        (f"{name}_bucket", (("le", "0.1"), ("route", "/a"))): 1.0,
        (f"{name}_bucket", (("le", "1.0"), ("route", "/a"))): 2.0,
        (f"{name}_bucket", (("le", "+Inf"), ("route", "/a"))): 3.0,
        (f"{name}_sum", (("route", "/a"),)): 1.75,
        (f"{name}_count", (("route", "/a"),)): 3.0,
    }
    kind, _, _, samples = families["db_query_stop_rows"]
    assert kind == "summary"
    assert samples[("db_query_stop_rows", (("quantile", "0.99"), ("table", "users")))] == 20.0
    assert samples[("db_query_stop_rows_count", (("table", "users"),))] == 2.0
    if openmetrics:
        assert families["http_request_stop_duration_seconds"][2] == "seconds"
        assert families["http_response_sent_size_bytes"][2] == "bytes"


def test_metrics_without_series_still_show_help_and_type() -> None:
    text = render([REQUESTS], [MetricSnapshot(REQUESTS, [])]).decode()
    assert text == (
        '# HELP http_request_stop_duration_total Requests "served"\\nin C:\\\\ land\n'
        "# TYPE http_request_stop_duration_total counter\n"
    )


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (m.counter("http.request.stop.duration"), "http_request_stop_duration"),
        (m.counter("jobs.done.total"), "jobs_done"),  # no jobs_done_total_total
        (m.counter("web-app.hit.count", unit="request"), "web_app_hit_count"),  # unit unused
        (m.sum("io.read.size", unit="byte"), "io_read_size_bytes"),
        (m.sum("io.read.bytes", unit="byte"), "io_read_bytes"),  # unit already there
        (m.last_value("vm.memory.total", unit="kibibyte"), "vm_memory_total_kibibytes"),
        (m.last_value("cpu.load.ratio", unit="ratio"), "cpu_load_ratio"),
        (m.last_value("disk.used.pct", unit="percent"), "disk_used_pct_percent"),
        (m.last_value("net.rx.rate", unit="byte_per_second"), "net_rx_rate_bytes_per_second"),
        (
            m.distribution("http.request.stop.duration", unit=("nanosecond", "millisecond")),
            "http_request_stop_duration_milliseconds",
        ),
        (m.summary("q.stop.duration", unit="native"), "q_stop_duration_nanoseconds"),
        (m.counter("_9lives.x.y"), "_9lives_x_y"),
        (
            m.last_value("a.b", reporter_options={"prometheus_name": "custom_name"}),
            "custom_name",
        ),
    ],
)
def test_family_names(metric: m.Metric, expected: str) -> None:
    assert family_name(metric)[0] == expected


def test_namespace_prefixes_every_family_but_radiosondes_own() -> None:
    mine = m.counter("app.request.stop.x")
    own = m.last_value("radiosonde.metrics.series", measurement="series")
    exposition = Exposition([mine, own], namespace="my-shop")
    assert exposition.families[mine] == ("my_shop_app_request_stop_x", "counter")
    assert exposition.families[own] == ("radiosonde_metrics_series", "gauge")


@pytest.mark.parametrize(
    ("name", "sanitised"),
    [
        ("2xx", "_2xx"),
        ("a:b", "a_b"),
        ("a.b-c", "a_b_c"),
        ("température", "temp_rature"),
        ("", "_"),
    ],
)
def test_names_are_sanitised(name: str, sanitised: str) -> None:
    assert sanitize_metric_name(name) == sanitised


@pytest.mark.parametrize(
    ("name", "sanitised"), [("__meta", "_meta"), ("9k", "_9k"), ("a-b", "a_b"), ("ok", "ok")]
)
def test_label_names_are_sanitised(name: str, sanitised: str) -> None:
    assert sanitize_label_name(name) == sanitised


@pytest.mark.parametrize(
    ("unit", "suffix"),
    [
        ("second", "seconds"),
        ("millisecond", "milliseconds"),
        ("byte", "bytes"),
        ("bytes", "bytes"),
        ("celsius", "celsius"),
        ("hertz", "hertz"),
        ("ratio", "ratio"),
        ("request", "requests"),
    ],
)
def test_unit_suffixes_are_plural_where_the_convention_says_so(unit: str, suffix: str) -> None:
    assert unit_suffix(unit) == suffix


@pytest.mark.parametrize(
    ("metric", "kind"),
    [
        (m.counter("a.b"), "counter"),
        (m.sum("a.b"), "counter"),
        (m.sum("a.b", reporter_options={"prometheus_type": "gauge"}), "gauge"),
        (m.last_value("a.b"), "gauge"),
        (m.last_value("a.b", reporter_options={"prometheus_type": "counter"}), "counter"),
        (m.distribution("a.b"), "histogram"),
        (m.summary("a.b"), "summary"),
    ],
)
def test_types(metric: m.Metric, kind: str) -> None:
    assert Exposition([metric]).families[metric][1] == kind


def test_prometheus_type_cannot_change_a_histogram_or_summary() -> None:
    metric = m.summary("a.b", reporter_options={"prometheus_type": "gauge"})
    with pytest.raises(ValueError, match="prometheus_type applies to counter, sum and last_value"):
        Exposition([metric])


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        # Same name, no unit to tell them apart.
        (m.counter("http.req.stop.duration"), m.distribution("http.req.stop.duration"), None),
        # A gauge named like a counter's sample.
        (m.counter("jobs.done"), m.last_value("jobs.done.total"), "jobs_done"),
        # A gauge named like a histogram's _count.
        (m.distribution("rpc.stop.duration"), m.last_value("rpc.stop.duration.count"), None),
        # Sanitising maps both to a_b_c.
        (
            m.last_value("a-b.c"),
            m.sum("a_b.c", reporter_options={"prometheus_type": "gauge"}),
            None,
        ),
    ],
)
def test_two_metrics_that_map_to_one_prometheus_name_are_refused(
    first: m.Metric, second: m.Metric, clash: str | None
) -> None:
    with pytest.raises(PrometheusNameError) as info:
        Exposition([first, second])
    message = str(info.value)
    assert repr(first.name) in message
    assert repr(second.name) in message
    assert "prometheus_name" in message  # says how to fix it
    if clash:
        assert clash in message


def test_a_unit_tells_same_named_metrics_apart() -> None:
    count = m.counter("http.request.stop.duration")
    latency = m.distribution("http.request.stop.duration", unit=("nanosecond", "millisecond"))
    names = Exposition([count, latency]).families
    assert names[count] == ("http_request_stop_duration", "counter")
    assert names[latency] == ("http_request_stop_duration_milliseconds", "histogram")


@pytest.mark.parametrize(
    ("metric", "label"),
    [
        (m.distribution("a.b", tags=["le"]), "le"),
        (m.summary("a.b", tags=["quantile"]), "quantile"),
    ],
)
def test_tags_that_prometheus_reserves_are_refused(metric: m.Metric, label: str) -> None:
    with pytest.raises(PrometheusNameError, match=f"label {label!r}"):
        Exposition([metric])


def test_an_invalid_prometheus_name_option_is_refused() -> None:
    metric = m.counter("a.b", reporter_options={"prometheus_name": "not valid"})
    with pytest.raises(PrometheusNameError, match="prometheus_name must match"):
        Exposition([metric])


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1.0"),
        (0, "0.0"),
        (0.005, "0.005"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (2.5, "2.5"),
        (100000, "100000.0"),
        (1e6, "1e+06"),
        (1234567, "1.234567e+06"),
        (1.5e7, "1.5e+07"),
        (1e16, "1e+16"),
        (-1e6, "-1e+06"),
        (-0.5, "-0.5"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_le_and_quantile_values_use_openmetrics_canonical_numbers(value: float, text: str) -> None:
    assert canonical_float(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (3.0, "3.0"),
        (-0.25, "-0.25"),
        (1e300, "1e+300"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_sample_values(value: float, text: str) -> None:
    assert format_value(value) == text


def test_histogram_bounds_render_canonically_in_both_formats() -> None:
    metric = m.distribution("a.b", reporter_options={"buckets": [1, 1e6, 2.5e7]})
    series = SeriesSnapshot(
        {}, count=1, sum=5.0, bucket_bounds=(1.0, 1e6, 2.5e7), bucket_counts=(0, 1, 1, 1)
    )
    for openmetrics in (False, True):
        text = render([metric], [MetricSnapshot(metric, [series])], openmetrics).decode()
        assert 'a_b_bucket{le="1.0"} 0\n' in text
        assert 'a_b_bucket{le="1e+06"} 1\n' in text
        assert 'a_b_bucket{le="2.5e+07"} 1\n' in text
        parse(text.encode(), openmetrics)


def test_default_bucket_bounds_come_from_the_snapshot() -> None:
    metric = m.distribution("a.b", unit="second")  # no explicit buckets
    series = [
        SeriesSnapshot({}, count=2, sum=0.3, bucket_bounds=(0.1, 1.0), bucket_counts=(0, 2, 2))
    ]
    text = render([metric], [MetricSnapshot(metric, series)]).decode()
    assert 'a_b_seconds_bucket{le="0.1"} 0\na_b_seconds_bucket{le="1.0"} 2\n' in text


# -- what each format can and cannot carry ---------------------------------------------------


def test_openmetrics_leaves_out_what_it_forbids_and_text_shows_it() -> None:
    total = m.sum("ledger.entry.amount", tags=["account"])
    spread = m.distribution("probe.stop.offset", reporter_options={"buckets": [-1, 0, 1]})
    signed = m.summary("probe.stop.delta")
    snapshots = [
        MetricSnapshot(
            total,
            [
                SeriesSnapshot({"account": "a"}, value=-5.0),
                SeriesSnapshot({"account": "b"}, value=7.0),
            ],
        ),
        MetricSnapshot(
            spread,
            [
                SeriesSnapshot(
                    {},
                    count=2,
                    sum=-1.5,
                    bucket_bounds=(-1.0, 0.0, 1.0),
                    bucket_counts=(1, 2, 2, 2),
                )
            ],
        ),
        MetricSnapshot(
            signed, [SeriesSnapshot({}, count=2, sum=-4.0, quantiles={0.5: -2.0, 0.9: 1.0})]
        ),
    ]
    exposition = Exposition([total, spread, signed])

    text = exposition.render(snapshots)
    parsed = parse(text, openmetrics=False)
    assert (
        parsed["ledger_entry_amount"][3][("ledger_entry_amount_total", (("account", "a"),))] == -5
    )
    assert ("probe_stop_offset_sum", ()) in parsed["probe_stop_offset"][3]
    assert exposition.skipped_samples == 0

    om = exposition.render(snapshots, openmetrics=True)
    parsed = parse(om, openmetrics=True)  # the strict parser accepts it
    assert parsed["ledger_entry_amount"][3] == {
        ("ledger_entry_amount_total", (("account", "b"),)): 7.0
    }
    assert set(parsed["probe_stop_offset"][3]) == {
        ("probe_stop_offset_bucket", (("le", le),)) for le in ("-1.0", "0.0", "1.0", "+Inf")
    }
    assert parsed["probe_stop_delta"][3] == {("probe_stop_delta", (("quantile", "0.9"),)): 1.0}
    # The negative total, the histogram's _sum/_count, the negative quantile, the summary's
    # _sum/_count.
    assert exposition.skipped_samples == 4


def test_a_nan_or_negative_counter_in_openmetrics_is_skipped_not_fatal() -> None:
    metric = m.sum("a.b", tags=["k"])
    series = [
        SeriesSnapshot({"k": "nan"}, value=math.nan),
        SeriesSnapshot({"k": "minus-inf"}, value=-math.inf),
        SeriesSnapshot({"k": "inf"}, value=math.inf),
    ]
    om = render([metric], [MetricSnapshot(metric, series)], openmetrics=True)
    assert parse(om, openmetrics=True)["a_b"][3] == {("a_b_total", (("k", "inf"),)): math.inf}


# -- labels ----------------------------------------------------------------------------------


def test_label_values_are_escaped_once_and_cached_per_series() -> None:
    metric = m.last_value("a.b", tags=["k"])
    exposition = Exposition([metric])
    snapshot = [MetricSnapshot(metric, [SeriesSnapshot({"k": TRICKY}, value=1.0)])]
    first = exposition.render(snapshot)
    assert exposition.render(snapshot) == first
    assert b'a_b{k="/a\\"b\\\\c\\nd"} 1.0\n' in first


def test_the_overflow_series_never_borrows_a_regular_series_labels() -> None:
    metric = m.counter("flag.set.stop.x", tags=["enabled"])
    exposition = Exposition([metric])
    series = [
        SeriesSnapshot({"enabled": "true"}, value=1.0),
        SeriesSnapshot({"overflow": "true"}, value=2.0),  # the same value, another label
    ]
    for _ in range(2):  # the second time from the cache
        samples = parse(exposition.render([MetricSnapshot(metric, series)]), False)
        assert samples["flag_set_stop_x"][3] == {
            ("flag_set_stop_x_total", (("enabled", "true"),)): 1.0,
            ("flag_set_stop_x_total", (("overflow", "true"),)): 2.0,
        }


def test_more_series_than_the_label_cache_holds_still_render_correctly() -> None:
    metric = m.last_value("a.b", tags=["k"], max_series=10)
    exposition = Exposition([metric])
    series = [SeriesSnapshot({"k": str(i)}, value=float(i)) for i in range(1000)]
    for _ in range(2):
        samples = parse(exposition.render([MetricSnapshot(metric, series)]), False)["a_b"][3]
        assert samples == {("a_b", (("k", str(i)),)): float(i) for i in range(1000)}


def test_text_that_utf8_cannot_encode_becomes_the_replacement_character() -> None:
    assert escape_label_value("a\ud800b") == "a\ufffdb"
    metric = m.last_value("a.b", tags=["k"], description="lone \udcff surrogate")
    for openmetrics in (False, True):
        out = render(
            [metric],
            [MetricSnapshot(metric, [SeriesSnapshot({"k": "x\udc80"}, value=1.0)])],
            openmetrics,
        )
        samples = parse(out, openmetrics)["a_b"][3]
        assert samples == {("a_b", (("k", "x\ufffd"),)): 1.0}


# Any text a tag value can hold (surrogates aside: they are not text, see above).
label_text = st.text(
    st.one_of(
        st.sampled_from('"\\\n\r\t{}=,# \x00\x7f\u2028\ufeff'),  # what escaping is about
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(label_text, min_size=1, max_size=8, unique=True))
def test_any_label_value_round_trips_through_both_formats(values: list[str]) -> None:
    metric = m.last_value("any.label.value", tags=["v"])
    series = [SeriesSnapshot({"v": v}, value=float(i)) for i, v in enumerate(values)]
    for openmetrics in (False, True):
        out = render([metric], [MetricSnapshot(metric, series)], openmetrics)
        samples = parse(out, openmetrics)["any_label_value"][3]
        assert samples == {("any_label_value", (("v", v),)): float(i) for i, v in enumerate(values)}


name_part = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,15}", fullmatch=True)
tag_name = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
    lambda t: t != "overflow"
)
kinds = st.sampled_from(["counter", "sum", "last_value", "summary", "distribution"])
units = st.sampled_from([None, "second", "millisecond", "byte", "kibibyte", "request", "percent"])


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(name_part, min_size=2, max_size=5),
    tags=st.lists(tag_name, max_size=4, unique=True),
    kind=kinds,
    unit=units,
    value=label_text,
)
def test_any_metric_and_tag_name_gives_an_exposition_both_formats_accept(
    parts: list[str], tags: list[str], kind: str, unit: str | None, value: str
) -> None:
    if kind == "distribution":
        tags = [t for t in tags if t != "le"]
    if kind == "summary":
        tags = [t for t in tags if t != "quantile"]
    metric = getattr(m, kind)(parts, tags=tags, unit=unit)
    labels = dict.fromkeys(tags, value)
    if kind in ("counter", "sum", "last_value"):
        series = SeriesSnapshot(labels, value=2.0)
    else:
        series = SeriesSnapshot(
            labels,
            count=2,
            sum=3.0,
            bucket_bounds=(1.0, 5.0) if kind == "distribution" else (),
            bucket_counts=(1, 2, 2) if kind == "distribution" else (),
            quantiles={0.5: 1.0, 0.99: 2.0},
        )
    exposition = Exposition([metric], redact=False)  # generated tags may be deny-listed keys
    name, _ = exposition.families[metric]
    for openmetrics in (False, True):
        out = exposition.render([MetricSnapshot(metric, [series])], openmetrics=openmetrics)
        parsed = parse(out, openmetrics)
        assert list(parsed) == [name]
        for _sample, sample_labels in parsed[name][3]:
            assert {k: v for k, v in sample_labels if k not in ("le", "quantile")} == labels


# -- negotiation -----------------------------------------------------------------------------

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("text/plain;version=0.0.4", False),
        (PROMETHEUS_ACCEPT, True),
        (  # Prometheus 3
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,"
            "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            True,
        ),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        ("application/openmetrics-text;version=0.0.1", False),  # a version we do not speak
        ("application/openmetrics-text;q=0", False),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.5", False),
        ("text/plain;q=0.5, application/openmetrics-text;q=0.9", True),
        ("application/*", True),
        ("application/json", False),
        ("application/openmetrics-text;q=abc", False),
        (";;;,,,==", False),
        ("application/openmetrics-text;q=nan", False),
        ("\x00\xff garbage, \t", False),
    ],
)
def test_content_negotiation(accept: str | None, openmetrics: bool) -> None:
    assert negotiate(accept) is openmetrics


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate", False),
        ("gzip;q=0", False),
        ("*", True),
        ("*;q=0", False),
        ("identity, *;q=0.5", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("gzip;q=x", False),
    ],
)
def test_gzip_negotiation(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


@given(st.text(max_size=200))
def test_negotiation_never_raises(header: str) -> None:
    assert negotiate(header) in (True, False)
    assert accepts_gzip(header) in (True, False)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_scalar_rows_render_as_their_series_do_including_redaction_merges(
    openmetrics: bool,
) -> None:
    logins = m.counter("shop.login.count", tags=["route", "session"], max_series=3)
    rows = [(("/a", "s-1"), 2.0), (("/a", "s-2"), 3.0), (("/b", "s-3"), -1.0)]
    scalar = ScalarRows(logins, rows, overflow=4.0)
    as_series = MetricSnapshot(logins, scalar.series)
    # Fresh expositions: each one learns on its first render that redaction merges series.
    fast = Exposition([logins]).render([scalar], openmetrics=openmetrics)
    slow = Exposition([logins]).render([as_series], openmetrics=openmetrics)
    assert fast == slow
    samples = parse(fast, openmetrics)["shop_login_count"][3]
    total = "shop_login_count_total"
    redacted = ("session", "[REDACTED]")
    expected = {
        (total, (("route", "/a"), redacted)): 5.0,  # two sessions of /a, made one, added up
        (total, (("overflow", "true"),)): 4.0,
    }
    if not openmetrics:
        expected[(total, (("route", "/b"), redacted))] = -1.0  # OpenMetrics leaves it out
    assert samples == expected
    # Without redaction, every row is its own series.
    plain = Exposition([logins], redact=False).render([scalar], openmetrics=False)
    assert plain.count(b"shop_login_count_total{") == 4
