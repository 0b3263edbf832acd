"""The metrics facade: calls travel through the event core to every backend."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from radiosonde import Metrics
from radiosonde.facade import BACKEND_FAILURE_EVENT, FACADE_EVENTS
from radiosonde.testing import capture_events


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def increment(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self.calls.append(("increment", name, value, dict(tags)))

    def gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self.calls.append(("gauge", name, value, dict(tags)))

    def histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self.calls.append(("histogram", name, value, dict(tags)))


class Broken(Recorder):
    def increment(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        raise RuntimeError("backend down")


def test_calls_reach_every_backend_with_string_tags() -> None:
    first, second = Recorder(), Recorder()
    with Metrics(backends=[first, second]) as metrics:
        assert first.started and second.started
        metrics.increment("comments.created", user_id=7)
        metrics.increment("comments.created", 2.5, user_id=None)
        metrics.gauge("users.online", 42, region="us-east")
        metrics.histogram("request.duration", 12.5, route="/api/comments")
    assert first.stopped
    assert (
        first.calls
        == second.calls
        == [
            ("increment", "comments.created", 1.0, {"user_id": "7"}),
            ("increment", "comments.created", 2.5, {"user_id": ""}),
            ("gauge", "users.online", 42.0, {"region": "us-east"}),
            ("histogram", "request.duration", 12.5, {"route": "/api/comments"}),
        ]
    )


def test_calls_are_ordinary_events() -> None:
    with Metrics(backends=[]) as metrics, capture_events(*FACADE_EVENTS) as events:
        metrics.gauge("users.online", 3, region="eu")
    assert events == [
        (
            ("radiosonde", "metrics", "gauge"),
            {"value": 3},
            {"name": "users.online", "tags": {"region": "eu"}},
        )
    ]


def test_invalid_calls_are_skipped_and_counted() -> None:
    recorder = Recorder()
    with Metrics(backends=[recorder]) as metrics:
        metrics.increment("comments.created", "three")  # type: ignore[arg-type]
        metrics.gauge("", 1)
        metrics.histogram("a..b", 1)
        metrics.histogram("ok.name", float("nan"))
        metrics.increment("ok.name", True)  # type: ignore[arg-type]
        assert metrics.stats() == {"calls": 0, "invalid": 5, "backend_failures": 0}
    assert recorder.calls == []


def test_failing_backend_never_stops_the_others_nor_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, healthy = Broken(), Recorder()
    with (
        caplog.at_level(logging.WARNING, logger="radiosonde"),
        Metrics(backends=[broken, healthy]) as metrics,
        capture_events(BACKEND_FAILURE_EVENT) as failures,
    ):
        metrics.increment("jobs.done")
        metrics.increment("jobs.done")
        assert metrics.stats()["backend_failures"] == 2
    assert [call[1] for call in healthy.calls] == ["jobs.done", "jobs.done"]
    assert len(failures) == 2
    assert failures[0].metadata["backend"] is broken
    assert isinstance(failures[0].metadata["reason"], RuntimeError)
    # logged once per backend per minute, not per failure
    assert sum("backend down" in r.getMessage() for r in caplog.records) == 1


def test_close_detaches() -> None:
    recorder = Recorder()
    metrics = Metrics(backends=[recorder])
    metrics.close()
    metrics.increment("after.close")
    assert recorder.calls == []


def test_a_backend_without_the_protocol_is_refused_at_start() -> None:
    with pytest.raises(TypeError, match="lacks gauge, histogram"):
        Metrics(backends=[type("Half", (), {"increment": lambda *a: None})()])  # type: ignore[list-item]
