"""The StatsD / DogStatsD wire format: names, tags, numbers, multi-value lines, datagram packing.

Lines are checked with :func:`parse_line`, a strict parser written here from the protocol
descriptions (Etsy ``metric_types.md``, DogStatsD datagram format), independent of the code
under test.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiosonde.reporters import _statsd_format as fmt

_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\Z")
_RATE = re.compile(r"@(\d+(\.\d+)?)\Z")
_TYPES = {"c", "g", "ms", "h", "d", "s"}


@dataclass
class Line:
    name: str
    values: list[str]
    type: str
    rate: float = 1.0
    tags: dict[str, str] = field(default_factory=dict)


def parse_line(line: str) -> Line:
    """Parse one DogStatsD line ``name:v[:v...]|type[|@rate][|#k:v,...]``; raise on anything
    malformed (a second line, an unknown type, a bad number, an empty tag...)."""
    assert "\n" not in line and "\r" not in line, f"line break inside {line!r}"
    head, _, rest = line.partition("|")
    name, colon, values = head.partition(":")
    assert colon and _NAME.match(name), f"bad name in {line!r}"
    numbers = values.split(":")
    assert all(_NUMBER.match(n) for n in numbers), f"bad value in {line!r}"
    fields = rest.split("|")
    assert fields[0] in _TYPES, f"bad type in {line!r}"
    parsed = Line(name, numbers, fields[0])
    for extra in fields[1:]:
        if extra.startswith("@"):
            match = _RATE.match(extra)
            assert match, f"bad rate in {line!r}"
            parsed.rate = float(match.group(1))
        elif extra.startswith("#"):
            for tag in extra[1:].split(","):
                key, sep, value = tag.partition(":")
                assert key and sep, f"bad tag {tag!r} in {line!r}"
                assert key not in parsed.tags, f"tag {key!r} twice in {line!r}"
                parsed.tags[key] = value
        else:
            raise AssertionError(f"unknown field {extra!r} in {line!r}")
    return parsed


def parse_standard_multi(line: str) -> tuple[str, list[tuple[str, str]]]:
    """The Etsy daemon's multi-value form ``name:v1|ms:v2|ms``: name and (value, type) pairs."""
    name, _, rest = line.partition(":")
    return name, [tuple(bit.split("|")[:2]) for bit in rest.split(":")]  # type: ignore[misc]


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-3.0, "-3"),
        (0.0, "0"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (0.1 + 0.2, "0.3"),
        (123456789012345.0, "123456789012345"),
        (1e20, "1e+20"),
        (1.5e-7, "1.5e-07"),
    ],
)
def test_numbers_are_short_and_parseable(value: float, text: str) -> None:
    assert fmt.number(value) == text
    assert _NUMBER.match(fmt.number(value))


@pytest.mark.parametrize(
    ("rate", "field"),
    [(1.0, ""), (0.5, "|@0.5"), (0.1, "|@0.1"), (1e-05, "|@0.00001"), (0.25, "|@0.25")],
)
def test_sample_rate_is_written_in_plain_decimals(rate: float, field: str) -> None:
    # The Etsy daemon reads /^@([\d.]+)/: "@1e-05" would mean a rate of 1.
    assert fmt.rate_field(rate) == field


# -- names and tags ----------------------------------------------------------------------------


def test_standard_formatter_appends_tag_values_to_the_name() -> None:
    namer = fmt.SeriesNamer("standard", None, {})
    assert namer.series("db.query.count", ("table", "op"), ("users", "select")) == (
        "db.query.count.users.select",
        "",
    )
    assert namer.series("vm.memory.total", (), ()) == ("vm.memory.total", "")


def test_standard_formatter_makes_tag_values_safe_name_segments() -> None:
    namer = fmt.SeriesNamer("standard", "app", {})
    name, tags = namer.series("http.request.count", ("route", "v"), ("/api/v1.2 x", ""))
    # Dots would add levels; "/", spaces and the rest are not name characters; empty -> "_".
    assert name == "app.http.request.count._api_v1_2_x._"
    assert tags == ""


def test_datadog_formatter_lists_tags_then_global_tags() -> None:
    namer = fmt.SeriesNamer("datadog", "app", {"env": "prod", "route": "default"})
    name, tags = namer.series("http.request.count", ("route", "status"), ("/a", "200"))
    assert name == "app.http.request.count"
    # A global tag the metric has itself is not repeated.
    assert tags == "|#route:/a,status:200,env:prod"
    assert namer.series("vm.memory", (), ()) == ("app.vm.memory", "|#env:prod,route:default")
    assert fmt.SeriesNamer("datadog", None, {}).series("a.b", (), ()) == ("a.b", "")


def test_datadog_tag_values_lose_delimiters_and_line_breaks() -> None:
    assert fmt.tag_value("a|b,c#d\ne\r\u2028f g\x00h") == "a_b_c_d_e__f_g_h"
    assert fmt.tag_value("k:v/with.dots-é") == "k:v/with.dots-é"


@pytest.mark.parametrize("prefix", ["", None])
def test_empty_prefix_means_none(prefix: str | None) -> None:
    assert fmt.check_prefix(prefix) is None


@pytest.mark.parametrize("prefix", ["my app", "a..b", ".a", "a:b", "a|b", "a.", 3])
def test_bad_prefix_is_rejected(prefix: object) -> None:
    with pytest.raises(ValueError, match="prefix"):
        fmt.check_prefix(prefix)  # type: ignore[arg-type]


def test_global_tags_are_checked() -> None:
    assert fmt.check_global_tags({"env": "prod", "port": 80}) == {"env": "prod", "port": "80"}
    with pytest.raises(ValueError, match="global tag name"):
        fmt.check_global_tags({"bad key": "x"})
    with pytest.raises(ValueError, match="mapping"):
        fmt.check_global_tags(["env:prod"])  # type: ignore[arg-type]


# -- lines -----------------------------------------------------------------------------------


def test_counter_and_gauge_lines() -> None:
    assert fmt.counter_line("a.b", 3, "", "") == "a.b:3|c"
    assert fmt.counter_line("a.b", 2.5, "|@0.1", "|#k:v") == "a.b:2.5|c|@0.1|#k:v"
    assert fmt.gauge_line("g", 7, "", "standard") == "g:7|g"
    assert fmt.gauge_delta_line("g", 5, "") == "g:+5|g"
    assert fmt.gauge_delta_line("g", -1.5, "") == "g:-1.5|g"


def test_negative_gauge_is_reset_first_for_the_etsy_daemon() -> None:
    # "-5" alone would be read as a decrement of the current value.
    assert fmt.gauge_line("g", -5, "", "standard") == "g:0|g\ng:-5|g"
    # DogStatsD has no relative gauges: a negative value is just a value.
    assert fmt.gauge_line("g", -5, "|#k:v", "datadog") == "g:-5|g|#k:v"


def test_sample_lines_one_per_value() -> None:
    lines = fmt.sample_lines(
        "t", [1, 2.5], kind="ms", rate="", tags="", style="standard", multi_value=False, limit=99
    )
    assert lines == ["t:1|ms", "t:2.5|ms"]


def test_multi_value_lines_fit_the_limit_and_keep_every_value() -> None:
    values = [float(i) for i in range(200)]
    dd = fmt.sample_lines(
        "t.x",
        values,
        kind="d",
        rate="|@0.5",
        tags="|#a:b",
        style="datadog",
        multi_value=True,
        limit=100,
    )
    assert len(dd) > 1
    seen: list[str] = []
    for line in dd:
        assert len(line.encode()) <= 100
        parsed = parse_line(line)
        assert (parsed.name, parsed.type, parsed.rate, parsed.tags) == ("t.x", "d", 0.5, {"a": "b"})
        seen += parsed.values
    assert seen == [fmt.number(v) for v in values]

    std = fmt.sample_lines(
        "t.x", values, kind="ms", rate="", tags="", style="standard", multi_value=True, limit=100
    )
    seen = []
    for line in std:
        assert len(line.encode()) <= 100
        name, pairs = parse_standard_multi(line)
        assert name == "t.x"
        assert {kind for _value, kind in pairs} == {"ms"}
        seen += [value for value, _kind in pairs]
    assert seen == [fmt.number(v) for v in values]


# -- packing ---------------------------------------------------------------------------------


def test_pack_fills_datagrams_up_to_the_mtu_in_order() -> None:
    lines = [f"metric.{i}:1|c" for i in range(100)]
    datagrams, oversize = fmt.pack(lines, 64)
    assert oversize == 0
    assert all(len(d) <= 64 for d in datagrams)
    assert b"\n".join(datagrams).decode().split("\n") == lines
    # Greedy: each datagram but the last could not take the next line.
    for datagram, following in itertools.pairwise(datagrams):
        first_next = following.split(b"\n")[0]
        assert len(datagram) + 1 + len(first_next) > 64


def test_pack_exact_fit() -> None:
    line = "x" * 10 + ":1|c"  # 14 bytes
    datagrams, oversize = fmt.pack([line, line], 29)  # 14 + 1 + 14
    assert (len(datagrams), oversize) == (1, 0)
    datagrams, _ = fmt.pack([line, line], 28)
    assert len(datagrams) == 2


def test_pack_drops_and_counts_oversize_lines() -> None:
    long = "a" * 80 + ":1|c"
    datagrams, oversize = fmt.pack(["x:1|c", long, "y:1|c"], 64)
    assert oversize == 1
    assert datagrams == [b"x:1|c\ny:1|c"]


def test_pack_measures_bytes_not_characters() -> None:
    line = "m:1|c|#k:" + "é" * 30  # 39 characters, 69 bytes
    datagrams, oversize = fmt.pack([line], 64)
    assert (datagrams, oversize) == ([], 1)


def test_negative_gauge_pair_stays_in_one_datagram() -> None:
    pair = fmt.gauge_line("g", -5, "", "standard")
    datagrams, _ = fmt.pack(["a" * 40 + ":1|c", pair], 50)
    assert datagrams[-1] == b"g:0|g\ng:-5|g"


# -- any tag value yields one valid line (property) ---------------------------------------------

any_text = st.text(
    st.characters(codec=None, exclude_categories=()),  # every code point, surrogates included
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(any_text, min_size=1, max_size=3), global_value=any_text)
def test_any_tag_value_gives_one_valid_datadog_line(values: list[str], global_value: str) -> None:
    tags = tuple(f"t{i}" for i in range(len(values)))
    namer = fmt.SeriesNamer("datadog", "app", {"env": global_value})
    name, tag_field = namer.series("x.y", tags, values)
    line = fmt.counter_line(name, 1, "|@0.5", tag_field)
    line.encode("utf-8")  # strict: no lone surrogate got through
    parsed = parse_line(line)
    assert parsed.name == "app.x.y"
    assert parsed.values == ["1"] and parsed.rate == 0.5
    assert list(parsed.tags) == [*tags, "env"]
    for tag, value in zip(tags, values, strict=True):
        assert parsed.tags[tag] == fmt.tag_value(value)
    datagrams, oversize = fmt.pack([line, line], 65_507)
    assert oversize == 0 and datagrams[0].decode().split("\n") == [line, line]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(any_text, min_size=1, max_size=3))
def test_any_tag_value_gives_one_valid_standard_line(values: list[str]) -> None:
    tags = tuple(f"t{i}" for i in range(len(values)))
    name, tag_field = fmt.SeriesNamer("standard", None, {}).series("x.y", tags, values)
    assert tag_field == ""
    line = fmt.counter_line(name, 2, "", tag_field)
    parsed = parse_line(line)
    # Exactly one name segment per tag value, each made of name characters only.
    assert parsed.name.split(".")[2:] == [fmt.name_segment(v) for v in values]
    assert len(parsed.name.split(".")) == 2 + len(values)
