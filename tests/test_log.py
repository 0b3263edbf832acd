"""The structured logger facade: call forms, levels, enrichment, context, failures, the bridge."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import radiosonde
from radiosonde import config, log
from radiosonde.logging_backends import ConsoleBackend, LogBackend
from radiosonde.testing import capture_events

_SETTINGS_VARS = (
    "LOG_LEVEL",
    "RADIOSONDE_SERVICE",
    "OTEL_SERVICE_NAME",
    "RADIOSONDE_ENV",
    "ENVIRONMENT",
    "ENABLE_DATADOG",
    "DATADOG_API_KEY",
    "DATADOG_SITE",
)


class ListBackend:
    """A custom backend (the protocol, nothing more) that keeps what it receives."""

    name = "list"

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.flushes: list[float] = []
        self.closed = False

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        self.records.append((level, message, dict(metadata)))

    def flush(self, timeout: float) -> None:
        self.flushes.append(timeout)

    def close(self) -> None:
        self.closed = True

    @property
    def messages(self) -> list[str]:
        return [message for _level, message, _md in self.records]

    def last(self) -> dict[str, Any]:
        return self.records[-1][2]


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the settings of a clean environment and default backends."""
    for var in _SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RADIOSONDE_SERVICE", "checkout")
    monkeypatch.setenv("RADIOSONDE_ENV", "test")
    config._reset_for_tests()
    log._reset_for_tests()
    yield
    monkeypatch.undo()
    config._reset_for_tests()
    log._reset_for_tests()


@pytest.fixture
def backend() -> ListBackend:
    """A list backend as the only backend, level debug."""
    captured = ListBackend()
    log.configure(backends=[captured], level="debug")
    return captured


# -- call forms and levels -----------------------------------------------------------------------


def test_metadata_as_dict_as_keywords_or_both(backend: ListBackend) -> None:
    log.info("User logged in", {"user_id": 1})
    log.info("User logged in", user_id=2)
    log.info("User logged in", {"user_id": 3, "a": 1}, user_id=4, b=2)
    assert [md["user_id"] for _l, _m, md in backend.records] == [1, 2, 4]
    assert backend.last()["a"] == 1 and backend.last()["b"] == 2
    assert backend.messages == ["User logged in"] * 3


def test_keywords_named_like_the_parameters_are_fields(backend: ListBackend) -> None:
    log.info("msg", metadata="m", message_id=7)
    assert backend.last()["metadata"] == "m"
    assert backend.last()["message_id"] == 7


def test_every_level_reaches_the_backend_with_its_name(backend: ListBackend) -> None:
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    log.log("warning", "generic")
    log.log(logging.ERROR, "by number")
    assert [level for level, _m, _md in backend.records] == [
        "debug",
        "info",
        "warning",
        "error",
        "critical",
        "warning",
        "error",
    ]


def test_records_below_the_threshold_are_dropped(backend: ListBackend) -> None:
    log.set_level("warning")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert backend.messages == ["w", "e"]
    assert log.get_level() == "warning"
    assert log.is_enabled_for("error") and not log.is_enabled_for("info")


def test_filtered_call_returns_before_building_anything(
    backend: ListBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a filtered-out call must not reach the dispatch")

    log.set_level("info")
    monkeypatch.setattr(log, "_emit", fail)
    log.debug("not built", expensive=1)
    log.bind(a=1).debug("not built either")


@pytest.mark.parametrize(
    ("given", "expected"),
    [("DEBUG", "debug"), ("warn", "warning"), ("Error", "error"), (50, "critical"), ("20", "info")],
)
def test_set_level_accepts_names_aliases_and_numbers(given: str | int, expected: str) -> None:
    log.set_level(given)
    assert log.get_level() == expected


@pytest.mark.parametrize("bad", ["verbose", "", True, 3.5])
def test_set_level_rejects_nonsense_with_a_useful_message(bad: Any) -> None:
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        log.set_level(bad)


def test_log_with_an_invalid_level_still_logs_instead_of_raising(backend: ListBackend) -> None:
    log.log("loud", "kept")
    assert backend.records[-1][0] == "error"
    assert backend.last()["invalid_level"] == "'loud'"


def test_level_comes_from_LOG_LEVEL(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "error")
    config._reset_for_tests()
    log.configure_from_settings()
    assert log.get_level() == "error"


def test_invalid_LOG_LEVEL_fails_at_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    config._reset_for_tests()
    with pytest.raises(config.ConfigurationError, match="LOG_LEVEL"):
        log.configure_from_settings()


def test_radiosonde_configure_changes_the_running_facade(backend: ListBackend) -> None:
    log.set_level("info")
    config.configure(log_level="debug", service="billing", environment="staging")
    log.debug("now visible")
    assert backend.messages == ["now visible"]
    assert backend.last()["service"] == "billing"
    assert backend.last()["environment"] == "staging"
    assert backend in log.backends(), "settings changes keep the backends the user configured"


# -- enrichment ----------------------------------------------------------------------------------


def test_records_are_enriched(backend: ListBackend) -> None:
    before = datetime.now(UTC)
    log.info("hello", user_id=1)
    after = datetime.now(UTC)
    md = backend.last()
    assert md["service"] == "checkout"
    assert md["environment"] == "test"
    assert md["pid"] == os.getpid()
    assert "span_id" not in md
    stamp = md["timestamp"]
    assert stamp.endswith("Z") and "T" in stamp
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= parsed <= after + timedelta(milliseconds=1)


def test_timestamps_have_microseconds_and_follow_the_clock(backend: ListBackend) -> None:
    for _ in range(3):
        log.info("tick")
        time.sleep(0.002)
    stamps = [md["timestamp"] for _l, _m, md in backend.records]
    assert all(len(s) == len("2024-01-01T00:00:00.000000Z") for s in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_the_open_span_is_in_the_record(backend: ListBackend) -> None:
    with radiosonde.span(("app", "checkout")) as outer:
        log.info("outer")
        with radiosonde.span(("app", "pay")) as inner:
            log.info("inner")
    log.info("after")
    spans = [md.get("span_id") for _l, _m, md in backend.records]
    assert spans == [outer.context, inner.context, None]


def test_call_fields_override_context_which_overrides_enrichment(backend: ListBackend) -> None:
    with log.contextualize(tenant="acme", who="context"):
        log.bind(who="bound", order=1).info("x", {"who": "dict", "order": 2}, who="kw")
    md = backend.last()
    assert md["tenant"] == "acme"
    assert md["order"] == 2
    assert md["who"] == "kw"


# -- bind and contextualize ------------------------------------------------------------------------


def test_bind_returns_a_new_logger_and_leaves_the_facade_alone(backend: ListBackend) -> None:
    request_log = log.bind(request_id="r-1")
    deeper = request_log.bind(step="pay")
    request_log.info("a")
    deeper.warning("b", extra=1)
    deeper.unbind("request_id").error("c")
    log.info("d")
    got = [
        {k: md.get(k) for k in ("request_id", "step", "extra")} for _l, _m, md in backend.records
    ]
    assert got == [
        {"request_id": "r-1", "step": None, "extra": None},
        {"request_id": "r-1", "step": "pay", "extra": 1},
        {"request_id": None, "step": "pay", "extra": None},
        {"request_id": None, "step": None, "extra": None},
    ]
    assert request_log.context == {"request_id": "r-1"}


def test_bound_logger_has_every_level_and_exception(backend: ListBackend) -> None:
    bound = log.bind(k=1)
    bound.debug("d")
    bound.info("i")
    bound.warning("w")
    bound.error("e")
    bound.critical("c")
    bound.log("info", "l")
    try:
        raise KeyError("missing")
    except KeyError:
        bound.exception("x")
    assert [lvl for lvl, _m, _md in backend.records] == [
        "debug",
        "info",
        "warning",
        "error",
        "critical",
        "info",
        "error",
    ]
    assert all(md["k"] == 1 for _l, _m, md in backend.records)
    assert backend.last()["error"]["kind"] == "KeyError"


def test_contextualize_nests_and_restores(backend: ListBackend) -> None:
    with log.contextualize(a=1):
        log.info("one")
        with log.contextualize(b=2, a=3):
            log.info("two")
            assert log.bound_context() == {"a": 3, "b": 2}
        log.info("three")
    log.info("four")
    got = [(md.get("a"), md.get("b")) for _l, _m, md in backend.records]
    assert got == [(1, None), (3, 2), (1, None), (None, None)]
    assert log.bound_context() == {}


def test_context_is_carried_into_asyncio_tasks_and_does_not_leak_back(
    backend: ListBackend,
) -> None:
    async def child(name: str) -> None:
        with log.contextualize(task=name):
            await asyncio.sleep(0)
            log.info(f"in {name}")

    async def main() -> None:
        async with log.contextualize(request_id="r-9"):
            await asyncio.gather(asyncio.create_task(child("a")), asyncio.create_task(child("b")))
            log.info("parent")

    asyncio.run(main())
    by_message = {m: md for _l, m, md in backend.records}
    assert by_message["in a"]["request_id"] == "r-9" and by_message["in a"]["task"] == "a"
    assert by_message["in b"]["request_id"] == "r-9" and by_message["in b"]["task"] == "b"
    assert by_message["parent"]["request_id"] == "r-9" and "task" not in by_message["parent"]


def test_threads_get_the_context_through_copy_context_or_bound_context(
    backend: ListBackend,
) -> None:
    def work(label: str) -> None:
        log.info(label)

    def work_with(label: str, ctx: dict[str, Any]) -> None:
        with log.contextualize(**ctx):
            log.info(label)

    with log.contextualize(job="j-1"):
        plain = threading.Thread(target=work, args=("plain",))
        copied_ctx = contextvars.copy_context()
        copied = threading.Thread(target=copied_ctx.run, args=(work, "copied"))
        passed = threading.Thread(target=work_with, args=("passed", log.bound_context()))
        for thread in (plain, copied, passed):
            thread.start()
            thread.join()
    by_message = {m: md for _l, m, md in backend.records}
    assert "job" not in by_message["plain"], "a plain thread starts with no context"
    assert by_message["copied"]["job"] == "j-1"
    assert by_message["passed"]["job"] == "j-1"


def test_asyncio_to_thread_carries_the_context(backend: ListBackend) -> None:
    async def main() -> None:
        with log.contextualize(job="j-2"):
            await asyncio.to_thread(log.info, "from a worker thread")

    asyncio.run(main())
    assert backend.last()["job"] == "j-2"


# -- exceptions ------------------------------------------------------------------------------------


def test_exception_records_the_handled_exception(backend: ListBackend) -> None:
    empty: dict[str, int] = {}
    try:
        empty["missing"]
    except KeyError:
        log.exception("Lookup failed", key="missing")
    level, message, md = backend.records[-1]
    assert level == "error" and message == "Lookup failed"
    assert md["key"] == "missing"
    assert md["error"]["kind"] == "KeyError"
    assert md["error"]["message"] == "'missing'"
    assert "Traceback (most recent call last)" in md["error"]["stack"]
    assert "test_exception_records_the_handled_exception" in md["error"]["stack"]


def test_exc_info_on_any_level_and_with_an_exception_object(backend: ListBackend) -> None:
    error = ValueError("bad value")
    log.warning("with object", exc_info=error)
    assert backend.last()["error"]["kind"] == "ValueError"
    log.error("outside an except block", exc_info=True)
    assert "error" not in backend.last() and "exc_info" not in backend.last()


# -- backends and failures ---------------------------------------------------------------------


class Exploding:
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
        self.calls += 1
        raise OSError("disk on fire")

    def flush(self, timeout: float) -> None:
        raise OSError("still on fire")

    def close(self) -> None:
        pass


def test_a_raising_backend_never_reaches_the_caller_and_is_reported(
    backend: ListBackend, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Exploding()
    log.add_backend(bad)
    with capture_events(("radiosonde", "log", "backend_failure")) as events:
        log.info("first")
        log.info("second")
        log.flush(1.0)
    assert backend.messages == ["first", "second"], "the other backends still get everything"
    assert bad.calls == 2
    assert len(events) == 3
    event = events[0]
    assert event.measurements == {"count": 1}
    assert event.metadata["backend"] == "exploding"
    assert event.metadata["kind"] is OSError
    assert log.stats()["backend_failures"] == 3
    warnings = [r for r in caplog.records if "exploding" in r.getMessage()]
    assert len(warnings) == 1, "the stdlib warning is rate-limited"


def test_a_handler_of_the_failure_event_that_logs_does_not_loop(backend: ListBackend) -> None:
    log.add_backend(Exploding())
    calls = []

    def on_failure(event: Any, measurements: Any, metadata: Any, cfg: Any) -> None:
        calls.append(metadata["backend"])
        log.error("a backend failed", backend_name=metadata["backend"])

    radiosonde.attach("t-log-on-failure", ("radiosonde", "log", "backend_failure"), on_failure)
    log.info("trigger")
    assert calls == ["exploding"]
    assert backend.messages == ["trigger", "a backend failed"]


def test_a_backend_that_logs_is_cut_off_instead_of_recursing(backend: ListBackend) -> None:
    class Chatty(ListBackend):
        def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
            super().log(level, message, metadata)
            log.info("chatter")

    chatty = Chatty()
    log.configure(backends=[chatty])
    log.info("start")
    assert 1 < len(chatty.records) <= 10
    assert log.stats()["dropped_reentrant"] >= 1


def test_configure_rejects_objects_that_are_not_backends() -> None:
    class Half:
        def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
            pass

    with pytest.raises(TypeError, match="lacks flush, close"):
        log.configure(backends=[Half()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a log backend"):
        log.add_backend("stderr")  # type: ignore[arg-type]


def test_add_remove_and_replace_backends_flush_and_close_what_leaves() -> None:
    first, second = ListBackend(), ListBackend()
    log.configure(backends=[first])
    log.add_backend(second)
    log.add_backend(second)  # once only
    assert log.backends() == [first, second]
    log.info("both")
    assert log.remove_backend(first) is True
    assert first.flushes and first.closed
    assert log.remove_backend(first) is False
    log.info("second only")
    assert first.messages == ["both"]
    assert second.messages == ["both", "second only"]
    third = ListBackend()
    log.configure(backends=[third])
    assert second.closed and not third.closed


def test_list_backend_satisfies_the_protocol() -> None:
    assert isinstance(ListBackend(), LogBackend)
    assert isinstance(ConsoleBackend(), LogBackend)


def test_default_backend_is_the_console_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert [type(b) for b in log.backends()] == [ConsoleBackend]
    log.warning("to stderr", n=1)
    err = capsys.readouterr().err
    line = json.loads(err.strip().splitlines()[-1])
    assert line["message"] == "to stderr" and line["level"] == "warning" and line["n"] == 1


def test_unencodable_message_or_metadata_never_raises(backend: ListBackend) -> None:
    class NoStr:
        def __str__(self) -> str:
            raise RuntimeError("no")

    log.configure(backends=[backend, ConsoleBackend(io.StringIO(), format="json")])
    log.info(NoStr())
    log.info("bad metadata", "not a dict")  # type: ignore[arg-type]
    assert backend.last()["metadata"] == "not a dict"
    assert log.stats()["internal_errors"] == 1


def test_shutdown_flushes_and_closes_every_backend() -> None:
    captured = ListBackend()
    log.configure(backends=[captured])
    log.shutdown(timeout=0.5)
    assert captured.flushes and captured.closed
    assert log.backends() == []


# -- redaction -----------------------------------------------------------------------------------


def test_metadata_and_message_are_redacted_by_default(backend: ListBackend) -> None:
    log.info(
        "login password=hunter2 with Bearer abcdefghijklmnop",
        {"password": "hunter2", "nested": {"api_key": "k-123"}},
        card="4111 1111 1111 1111",
    )
    _level, message, md = backend.records[-1]
    assert "hunter2" not in message and "abcdefghijklmnop" not in message
    assert message == "login password=[REDACTED] with Bearer [REDACTED]"
    assert md["password"] == "[REDACTED]"
    assert md["nested"] == {"api_key": "[REDACTED]"}
    assert md["card"] == "[REDACTED]"


def test_context_and_bound_fields_are_redacted_too(backend: ListBackend) -> None:
    with log.contextualize(session_id="s3cr3t-session"):
        log.bind(token="t0k3n").info("x")
    md = backend.last()
    assert md["session_id"] == "[REDACTED]" and md["token"] == "[REDACTED]"


def test_redaction_can_be_turned_off_or_replaced(backend: ListBackend) -> None:
    log.configure(redact=False)
    log.info("password=hunter2", password="hunter2")
    assert backend.records[-1][1] == "password=hunter2"
    assert backend.last()["password"] == "hunter2"

    def shout(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: str(v).upper() for k, v in value.items()}
        return str(value).upper()

    log.configure(redact=shout)
    log.info("quiet", word="soft")
    assert backend.records[-1][1] == "QUIET" and backend.last()["word"] == "SOFT"
    with pytest.raises(TypeError):
        log.configure(redact="yes")  # type: ignore[arg-type]


# -- the stdlib bridge -----------------------------------------------------------------------------


def test_stdlib_records_reach_the_backends_with_logger_name_and_extra(
    backend: ListBackend,
) -> None:
    log.capture_stdlib(level="info")
    library = logging.getLogger("some.library")
    library.info("connected to %s", "db-1", extra={"attempt": 2})
    library.debug("below the bridge level")
    level, message, md = backend.records[-1]
    assert (level, message) == ("info", "connected to db-1")
    assert md["logger"] == "some.library"
    assert md["attempt"] == 2
    assert md["service"] == "checkout"
    assert len(backend.records) == 1


def test_bridge_keeps_exceptions_time_and_redacts(backend: ListBackend) -> None:
    log.capture_stdlib(level="debug")
    library = logging.getLogger("lib.http")
    try:
        raise ConnectionError("refused")
    except ConnectionError:
        library.exception("request failed", extra={"authorization": "Bearer abcdefghijkl"})
    md = backend.last()
    assert md["error"]["kind"] == "ConnectionError"
    assert md["authorization"] == "[REDACTED]"
    assert backend.records[-1][0] == "error"


def test_bridge_follows_the_facade_level_too(backend: ListBackend) -> None:
    log.capture_stdlib(level="debug")
    log.set_level("error")
    logging.getLogger("lib").warning("filtered by the facade")
    logging.getLogger("lib").error("passes")
    assert backend.messages == ["passes"]


def test_capture_is_installed_once_and_can_be_released(backend: ListBackend) -> None:
    first = log.capture_stdlib(level="info")
    second = log.capture_stdlib(level="warning")
    assert first is second
    assert logging.getLogger().handlers.count(first) == 1
    logging.getLogger("lib").info("below warning now")
    assert backend.records == []
    assert log.release_stdlib() is True
    assert first not in logging.getLogger().handlers
    assert log.release_stdlib() is False
    logging.getLogger("lib").error("not bridged any more")
    assert backend.records == []


def test_radiosonde_own_warnings_go_through_the_bridge_once(backend: ListBackend) -> None:
    log.capture_stdlib(level="warning")

    def broken(event: Any, measurements: Any, metadata: Any, cfg: Any) -> None:
        raise RuntimeError("handler bug")

    radiosonde.attach("t-broken", ("app", "x"), broken)
    radiosonde.execute(("app", "x"))
    bridged = [md for _l, _m, md in backend.records if md.get("logger") == "radiosonde"]
    assert len(bridged) == 1
    assert "t-broken" in backend.records[-1][1]


def test_failing_backend_with_the_bridge_installed_does_not_loop(
    backend: ListBackend,
) -> None:
    # The failure warning is logged through stdlib logging from inside the dispatch: the bridge
    # must not route it back into the failing backend (which would fail again, and again...).
    log.capture_stdlib(level="debug")
    log.add_backend(Exploding())
    log.info("once")
    logging.getLogger("lib").info("and from stdlib")
    assert backend.messages == ["once", "and from stdlib"]
    assert log.stats()["backend_failures"] == 2
    assert log.stats()["bridge_skipped"] >= 1


def test_a_backend_that_uses_stdlib_logging_is_not_fed_its_own_records(
    backend: ListBackend,
) -> None:
    class Noisy(ListBackend):
        def log(self, level: str, message: str, metadata: dict[str, Any]) -> None:
            super().log(level, message, metadata)
            logging.getLogger("noisy.backend").warning("wrote %s", message)

    noisy = Noisy()
    log.configure(backends=[noisy])
    log.capture_stdlib(level="debug")
    log.info("hello")
    assert noisy.messages == ["hello"]
