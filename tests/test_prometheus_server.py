"""The exposition against the real thing: promtool judges it, Prometheus scrapes it.

Needs the `prometheus` and `promtool` binaries (Debian's `prometheus` package, installed by
`bash scripts/bootstrap.sh --servers`): skipped when missing, failed when CI=true.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import radiosonde
from radiosonde import metrics as m
from radiosonde.aggregation import MetricSnapshot, SeriesSnapshot
from radiosonde.reporters._exposition import Exposition
from radiosonde.reporters.prometheus import PrometheusReporter
from tests._realserver import free_port
from tests.servers import PrometheusServer, promtool_check_metrics

pytestmark = pytest.mark.server


def lint_clean_metrics() -> list[m.Metric]:
    """Metrics named the way Prometheus' linter wants: base units, HELP on every family."""
    return [
        m.counter(
            "shop.checkout.stop.duration",
            tags=["status"],
            description="Checkouts finished, by status.",
        ),
        m.distribution(
            "shop.checkout.stop.duration",
            unit=("nanosecond", "second"),
            tags=["status"],
            reporter_options={"buckets": [0.01, 0.1, 1]},
            description="Checkout duration.",
        ),
        m.summary(
            "shop.checkout.stop.size",
            unit=("kilobyte", "byte"),
            tags=["status"],
            description="Size of the checked-out cart.",
        ),
        m.sum("shop.payment.stop.amount", tags=["currency"], description="Money taken.'\"\\"),
        m.last_value("shop.carts.open.current", tags=["status"], description="Open carts.\nNow."),
    ]


def checkout(duration_ms: float, status: str = "ok") -> None:
    radiosonde.execute(
        ("shop", "checkout", "stop"),
        {"duration": int(duration_ms * 1_000_000), "size": 1.5},
        {"status": status},
    )


def promtool_parse_error(output: str) -> bool:
    """promtool reports a parse error as `error while linting: text format parsing error...`;
    anything else in its output is a lint remark about naming style."""
    return "error while linting" in output or "parsing error" in output


# -- promtool --------------------------------------------------------------------------------


def test_promtool_accepts_the_exposition_without_a_single_lint_remark() -> None:
    with PrometheusReporter(lint_clean_metrics(), port=0) as reporter:
        for ms in (5, 50, 500):
            checkout(ms)
        checkout(2000, status='err"or\\\n')
        radiosonde.execute("shop.payment.stop", {"amount": 12.5}, {"currency": "EUR"})
        radiosonde.execute("shop.carts.open", {"current": 3}, {"status": "ok"})
        text = reporter.render()
    ok, output = promtool_check_metrics(text)
    assert ok, f"promtool: {output}\n{text.decode()}"


label_text = st.text(
    st.one_of(
        st.sampled_from('"\\\n\r\t{}=,# \x00\x7f\u2028\ufeff'),  # what escaping is about
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=30,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(label_text, min_size=1, max_size=30, unique=True))
def test_promtool_accepts_any_label_value(values: list[str]) -> None:
    metric = m.last_value("any.label.value", tags=["v"], description="Any label value.")
    series = [SeriesSnapshot({"v": v}, value=float(i)) for i, v in enumerate(values)]
    text = Exposition([metric]).render([MetricSnapshot(metric, series)])
    ok, output = promtool_check_metrics(text)
    assert ok, f"promtool: {output}\n{text.decode()}"


name_part = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,12}", fullmatch=True)
tag_name = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True).filter(
    lambda t: t not in ("overflow", "le", "quantile")
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.lists(name_part, min_size=2, max_size=4), min_size=1, max_size=8),
    tags=st.lists(tag_name, max_size=3, unique=True),
    kind=st.sampled_from(["counter", "sum", "last_value", "summary", "distribution"]),
    unit=st.sampled_from([None, "second", "millisecond", "byte", "percent"]),
)
def test_promtool_parses_any_metric_and_tag_name(
    names: list[list[str]], tags: list[str], kind: str, unit: str | None
) -> None:
    metrics: list[m.Metric] = []
    taken: set[str] = set()
    for parts in names:
        metric = getattr(m, kind)(parts, tags=tags, unit=unit)
        try:
            exposition = Exposition([*metrics, metric])
        except ValueError:
            continue  # two generated names that clash: refused, as they should be
        metrics.append(metric)
        taken.add(exposition.families[metric][0])
    labels = dict.fromkeys(tags, "x")
    snapshots = []
    for metric in metrics:
        if kind in ("counter", "sum", "last_value"):
            series = SeriesSnapshot(labels, value=1.0)
        else:
            distribution = kind == "distribution"
            series = SeriesSnapshot(
                labels,
                count=1,
                sum=0.5,
                bucket_bounds=(1.0,) if distribution else (),
                bucket_counts=(1, 1) if distribution else (),
                quantiles={0.5: 0.5},
            )
        snapshots.append(MetricSnapshot(metric, [series]))
    text = Exposition(metrics).render(snapshots)
    _, output = promtool_check_metrics(text)
    # Style remarks (camelCase, non-base units) are the user's naming; parse errors are ours.
    assert not promtool_parse_error(output), f"promtool: {output}\n{text.decode()}"


# -- a real Prometheus -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reporter_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prometheus(reporter_port: int) -> Iterator[PrometheusServer]:
    # One server for the module: its first scrape takes ~5 s. Each test starts its own
    # reporter on the port it scrapes, then waits for a scrape that began after that.
    with PrometheusServer([f"127.0.0.1:{reporter_port}"], scrape_interval="1s") as server:
        yield server


def test_prometheus_scrapes_counters_histograms_and_summaries(
    prometheus: PrometheusServer, reporter_port: int
) -> None:
    with PrometheusReporter(lint_clean_metrics(), port=reporter_port):
        for ms in (5, 5, 50, 50, 50, 50, 500):  # 2 in (0, 10ms], 4 in (10ms, 100ms], 1 above
            checkout(ms)
        radiosonde.execute("shop.payment.stop", {"amount": 12.5}, {"currency": "EUR"})
        radiosonde.execute("shop.payment.stop", {"amount": 0.25}, {"currency": "EUR"})
        prometheus.wait_for_scrape()

        assert prometheus.value('shop_checkout_stop_duration_total{status="ok"}') == 7
        assert prometheus.value('shop_payment_stop_amount_total{currency="EUR"}') == 12.75
        # Prometheus interpolates within the bucket holding the quantile's rank: the median
        # (rank 3.5 of 7) is in (0.01, 0.1], which holds ranks 3-6; the 0.9 one (rank 6.3) in
        # (0.1, 1].
        quantile = "histogram_quantile({}, shop_checkout_stop_duration_seconds_bucket)"
        p50 = prometheus.value(quantile.format(0.5))
        assert p50 == pytest.approx(0.01 + 0.09 * 1.5 / 4)
        p90 = prometheus.value(quantile.format(0.9))
        assert p90 is not None and 0.1 < p90 <= 1
        count = prometheus.value('shop_checkout_stop_duration_seconds_count{status="ok"}')
        assert count == 7
        total = prometheus.value('shop_checkout_stop_duration_seconds_sum{status="ok"}')
        assert total == pytest.approx(0.71)
        # 1.5 kilobyte = 1500 bytes, from the summary's sketch (within 1%).
        median = prometheus.value('shop_checkout_stop_size_bytes{quantile="0.5"}')
        assert median == pytest.approx(1500, rel=0.01)
        # Its own health, next to the application's metrics.
        series = prometheus.value(
            'radiosonde_metrics_series{metric="shop.checkout.stop.duration",kind="counter"}'
        )
        assert series == 1


def test_prometheus_ingests_help_type_and_unit(
    prometheus: PrometheusServer, reporter_port: int
) -> None:
    with PrometheusReporter(lint_clean_metrics(), port=reporter_port):
        checkout(5)
        prometheus.wait_for_scrape()
        metadata = prometheus.api("metadata")
    histogram = metadata["shop_checkout_stop_duration_seconds"][0]
    assert histogram == {"type": "histogram", "help": "Checkout duration.", "unit": "seconds"}
    counter = metadata["shop_checkout_stop_duration"][0]
    assert counter["type"] == "counter"
    assert counter["help"] == "Checkouts finished, by status."
    assert metadata["shop_carts_open_current"][0]["help"] == "Open carts.\nNow."


TRICKY_VALUES = [
    'double "quotes"',
    "back\\slash \\n not a newline",
    "real\nnewline",
    "tab\tand\rreturn",
    "unicode: d\u00e9j\u00e0 vu, \u65e5\u672c\u8a9e, \U0001f680",
    "line\u2028separator",
    "{braces}=,commas",
    "# not a comment",
    " leading and trailing ",
]


def test_label_values_reach_prometheus_exactly(
    prometheus: PrometheusServer, reporter_port: int
) -> None:
    metric = m.counter("odd.label.seen.x", tags=["v"], description="Odd labels.")
    with PrometheusReporter([metric], port=reporter_port):
        for value in TRICKY_VALUES:
            radiosonde.execute("odd.label.seen", {}, {"v": value})
        prometheus.wait_for_scrape()
        result = prometheus.query("odd_label_seen_x_total")
    assert sorted(r["metric"]["v"] for r in result) == sorted(TRICKY_VALUES)
    assert all(float(r["value"][1]) == 1 for r in result)


def test_special_values_reach_prometheus(prometheus: PrometheusServer, reporter_port: int) -> None:
    metric = m.last_value("odd.value.seen.x", tags=["k"], description="Odd values.")
    with PrometheusReporter([metric], port=reporter_port):
        for key, value in (("inf", math.inf), ("minus_inf", -math.inf), ("tiny", 5e-324)):
            radiosonde.execute("odd.value.seen", {"x": value}, {"k": key})
        radiosonde.execute("odd.value.seen", {"x": 1e300}, {"k": "huge"})
        prometheus.wait_for_scrape()
        assert prometheus.value('odd_value_seen_x{k="inf"}') == math.inf
        assert prometheus.value('odd_value_seen_x{k="minus_inf"}') == -math.inf
        assert prometheus.value('odd_value_seen_x{k="tiny"}') == 5e-324
        assert prometheus.value('odd_value_seen_x{k="huge"}') == 1e300
