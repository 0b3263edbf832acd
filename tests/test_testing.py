"""radiosonde.testing: capture_events and the radiosonde_events pytest fixture."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import radiosonde
from radiosonde.testing import CapturedEvent, CapturedEvents, capture_events

pytest_plugins = ["pytester"]


def test_capture_events_records_event_measurements_metadata() -> None:
    with capture_events("app.*") as events:
        radiosonde.execute(("app", "x"), {"n": 1}, {"m": 2})
        radiosonde.execute("app.y")
        radiosonde.execute(("other", "z"))
    assert events == [(("app", "x"), {"n": 1}, {"m": 2}), (("app", "y"), {}, {})]
    assert isinstance(events[0], CapturedEvent)
    assert events[0].event == ("app", "x")
    assert events[0].measurements == {"n": 1}
    assert events[0].metadata == {"m": 2}
    assert events.names() == [("app", "x"), ("app", "y")]
    assert events.named("app.y") == [(("app", "y"), {}, {})]


def test_capture_events_copies_what_it_records() -> None:
    measurements = {"n": 1}
    with capture_events("app.x") as events:
        radiosonde.execute(("app", "x"), measurements)
    measurements["n"] = 2
    assert events[0].measurements == {"n": 1}


def test_capture_everything_or_several_names() -> None:
    with capture_events() as everything, capture_events("a.b", ("c", "*")) as some:
        for name in ["a.b", "a.c", "c.d", "e"]:
            radiosonde.execute(name)
    assert everything.names() == [("a", "b"), ("a", "c"), ("c", "d"), ("e",)]
    assert some.names() == [("a", "b"), ("c", "d")]


def test_capture_events_detaches_when_the_block_ends_even_on_error() -> None:
    with pytest.raises(RuntimeError), capture_events("app.*") as events:
        assert len(radiosonde.list_handlers()) == 1
        raise RuntimeError
    assert radiosonde.list_handlers() == []
    radiosonde.execute(("app", "x"))
    assert events == []


def test_capture_events_rejects_invalid_names() -> None:
    with pytest.raises(ValueError, match="invalid event name"), capture_events("app..x"):
        pass
    assert radiosonde.list_handlers() == []


def test_capture_events_records_from_threads() -> None:
    with capture_events("app.*") as events:
        threads = [
            threading.Thread(target=lambda: [radiosonde.execute(("app", "t")) for _ in range(500)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(events) == 2000


def test_radiosonde_events_fixture(radiosonde_events: Callable[..., CapturedEvents]) -> None:
    events = radiosonde_events("app.*")
    everything = radiosonde_events()
    with radiosonde.span("app.work"):
        pass
    radiosonde.execute(("other", "x"))
    assert events.names() == [("app", "work", "start"), ("app", "work", "stop")]
    assert len(everything) == 3
    assert len(radiosonde.list_handlers()) == 2


def test_the_plugin_is_registered_by_its_entry_point(request: pytest.FixtureRequest) -> None:
    plugin = request.config.pluginmanager.get_plugin("radiosonde")
    assert plugin is not None
    assert plugin.__name__ == "radiosonde._pytest_plugin"


def test_the_fixture_works_in_a_users_project_and_cleans_up(pytester: pytest.Pytester) -> None:
    # A project with no conftest of ours: the fixture comes from the installed entry point.
    pytester.makepyfile(
        """
        import radiosonde

        def test_uses_fixture(radiosonde_events):
            events = radiosonde_events("shop.*")
            with radiosonde.span("shop.checkout"):
                pass
            assert events.names() == [("shop", "checkout", "start"), ("shop", "checkout", "stop")]

        def test_detached_after_the_previous_test():
            assert radiosonde.list_handlers() == []
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
