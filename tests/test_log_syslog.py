"""The syslog backend: RFC 5424 formatting, and a real rsyslog receiving over UDP, TCP and a
Unix socket (started here on loopback, with its own configuration, in a temporary directory).

Also the canary test: secrets planted in log calls reach no sink — console, file, syslog (as
rsyslog wrote it), Datadog (as the receiver got it).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from radiosonde import log
from radiosonde.logging_backends.syslog import SyslogBackend, escape_param_value, sd_name
from radiosonde.testing import capture_events
from tests.servers import RsyslogServer
from tests.test_log import fresh_log  # noqa: F401  # the autouse fixture: clean facade per test

SD_ID = "radiosonde@32473"


@pytest.fixture(scope="module")
def rsyslog() -> Iterator[RsyslogServer]:
    with RsyslogServer() as server:
        yield server


def _mine(run: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line["sd"].get(SD_ID, {}).get("run") == run


# -- RFC 5424 formatting -------------------------------------------------------------------------


def test_param_values_escape_quote_backslash_and_bracket() -> None:
    assert escape_param_value('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert escape_param_value("plain [text]") == "plain [text\\]"


def test_param_names_are_reduced_to_valid_sd_names() -> None:
    assert sd_name("user_id") == "user_id"
    assert sd_name('a b=c]d"e') == "a_b_c_d_e"
    assert sd_name("ünï") == "_n_"
    assert sd_name("x" * 40) == "x" * 32
    assert sd_name("") == "_"


def test_format_builds_an_rfc5424_message() -> None:
    backend = SyslogBackend(("127.0.0.1", 514), hostname="web-1", facility="local3")
    metadata = {
        "timestamp": "2024-05-01T12:00:00.123456Z",
        "service": "checkout",
        "environment": "prod",
        "pid": 4242,
        "user_id": 1,
        "note": 'say "hi" [now]',
        "tags": ["a", "b"],
    }
    data = backend.format("warning", "User logged in", metadata).decode()
    assert data == (
        "<156>1 2024-05-01T12:00:00.123456Z web-1 checkout 4242 - "
        '[radiosonde@32473 service="checkout" environment="prod" user_id="1"'
        ' note="say \\"hi\\" [now\\]" tags="[\\"a\\",\\"b\\"\\]"] User logged in'
    )


def test_format_without_metadata_uses_nilvalues_and_the_logger_as_msgid() -> None:
    backend = SyslogBackend(("127.0.0.1", 514), hostname="h", app_name="my app")
    data = backend.format("critical", "boom", {"timestamp": "2024-01-01T00:00:00Z", "pid": 1})
    assert data == b"<10>1 2024-01-01T00:00:00Z h my_app 1 - - boom"
    bridged = backend.format("info", "x", {"logger": "urllib3.connectionpool"}).decode()
    assert " urllib3.connectionpool " in bridged


def test_oversized_messages_are_shortened_to_the_limit() -> None:
    backend = SyslogBackend(("127.0.0.1", 514), max_message_size=1000)
    data = backend.format("info", "é" * 2000, {"k": "v"})
    assert len(data) <= 1000
    data.decode("utf-8")  # cut on a character boundary
    assert f'[{SD_ID} k="v"]'.encode() in data
    huge_sd = backend.format("info", "msg", {"k": "v" * 5000})
    assert len(huge_sd) <= 1000 and f'[{SD_ID} truncated="true"] msg'.encode() in huge_sd


@pytest.mark.parametrize(
    ("address", "transport", "expected"),
    [
        ("udp://logs.example:1514", None, ("udp", ("logs.example", 1514))),
        ("tcp://10.0.0.1", None, ("tcp", ("10.0.0.1", 514))),
        ("unix:///dev/log", None, ("unix", "/dev/log")),
        ("/run/systemd/journal/syslog", None, ("unix", "/run/systemd/journal/syslog")),
        (("127.0.0.1", 5514), "tcp", ("tcp", ("127.0.0.1", 5514))),
    ],
)
def test_addresses(address: Any, transport: Any, expected: tuple[str, Any]) -> None:
    backend = SyslogBackend(address, transport=transport)
    assert (backend.transport, backend.address) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "http://x"}, "scheme"),
        ({"address": ("h", 1), "transport": "unix"}, "udp' or 'tcp"),
        ({"facility": "local9"}, "facility"),
        ({"sd_id": "has space@1"}, "SD-ID"),
        ({"max_message_size": 100}, "max_message_size"),
    ],
)
def test_bad_arguments_fail_at_start_up(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyslogBackend(**kwargs)


# -- against a real rsyslog ----------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("transport", ["udp", "tcp", "unix"])
def test_rsyslog_receives_message_header_and_structured_data(
    rsyslog: RsyslogServer, transport: str
) -> None:
    address: Any = (
        rsyslog.socket_path
        if transport == "unix"
        else ("127.0.0.1", rsyslog.udp_port if transport == "udp" else rsyslog.tcp_port)
    )
    backend = SyslogBackend(address, transport=transport, facility="local4")  # type: ignore[arg-type]
    log.configure(backends=[backend], level="debug")
    run = uuid.uuid4().hex
    tricky = 'quote " backslash \\ bracket ] ünïcödé'
    log.warning("Disk almost full: 97%", run=run, mount="/var", tricky=tricky, n=3)
    log.flush(5.0)
    (line,) = rsyslog.wait_for(lambda got: any(map(_mine(run), got)))[-1:]
    assert line["input"] == {"udp": "imudp", "tcp": "imtcp", "unix": "imuxsock"}[transport]
    assert line["msg"] == "Disk almost full: 97%"
    assert line["app"] == "checkout"
    assert line["procid"] == str(os.getpid())
    assert line["hostname"] == socket.gethostname()
    assert (line["facility"], line["severity"]) == ("20", "4")
    assert line["timestamp"].startswith(time.strftime("%Y-%m-%dT", time.gmtime()))
    params = line["sd"][SD_ID]
    assert params["tricky"] == tricky, "escaped per RFC 5424 and unescaped by rsyslog"
    assert params["mount"] == "/var" and params["n"] == "3"
    assert params["environment"] == "test" and params["service"] == "checkout"
    backend.close()


@pytest.mark.server
def test_rsyslog_levels_map_to_severities(rsyslog: RsyslogServer) -> None:
    backend = SyslogBackend(("127.0.0.1", rsyslog.udp_port))
    log.configure(backends=[backend], level="debug")
    run = uuid.uuid4().hex
    for level in ("debug", "info", "warning", "error", "critical"):
        log.log(level, level, run=run)
    got = rsyslog.wait_for(lambda lines: sum(map(_mine(run), lines)) == 5)
    severities = {line["msg"]: line["severity"] for line in got if _mine(run)(line)}
    assert severities == {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
    backend.close()


@pytest.mark.server
def test_rsyslog_over_tcp_gets_every_record_in_order_even_multiline(
    rsyslog: RsyslogServer,
) -> None:
    backend = SyslogBackend(f"tcp://127.0.0.1:{rsyslog.tcp_port}", batch_size=50)
    log.configure(backends=[backend])
    run = uuid.uuid4().hex
    for i in range(300):
        log.info(f"line one {i}\nline two", run=run, i=i)
    log.flush(10.0)
    got = rsyslog.wait_for(lambda lines: sum(map(_mine(run), lines)) == 300)
    mine = [line for line in got if _mine(run)(line)]
    assert [int(line["sd"][SD_ID]["i"]) for line in mine] == list(range(300))
    assert mine[0]["msg"].startswith("line one 0") and "line two" in mine[0]["msg"]
    backend.close()


@pytest.mark.server
def test_rsyslog_restarting_does_not_lose_the_tcp_backend(rsyslog: RsyslogServer) -> None:
    # A connection the daemon closed is noticed on the next send and reopened.
    backend = SyslogBackend(("127.0.0.1", rsyslog.tcp_port), transport="tcp")
    log.configure(backends=[backend])
    run = uuid.uuid4().hex
    log.info("before", run=run)
    log.flush(5.0)
    assert backend._sock is not None
    backend._sock.close()  # as if the daemon had dropped us
    log.info("after", run=run)
    log.flush(5.0)
    got = rsyslog.wait_for(lambda lines: sum(map(_mine(run), lines)) == 2)
    assert [line["msg"] for line in got if _mine(run)(line)] == ["before", "after"]
    backend.close()


def test_no_daemon_drops_and_counts_without_raising_or_blocking(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    backends = [
        SyslogBackend(str(tmp_path / "no-such.sock")),
        SyslogBackend(("127.0.0.1", closed_port), transport="udp"),
        SyslogBackend(("127.0.0.1", closed_port), transport="tcp", timeout=0.5, backoff=0.01),
    ]
    log.configure(backends=backends)
    started = time.perf_counter()
    with capture_events(("radiosonde", "log", "dropped")) as events:
        for i in range(20):
            log.info("nobody listens", i=i)
        elapsed = time.perf_counter() - started
        log.flush(5.0)
    assert elapsed < 0.5
    reasons = {(e.metadata["backend"], e.metadata["reason"]) for e in events}
    assert ("syslog", "not_connected") in reasons or ("syslog", "send_failed") in reasons
    by_reason: dict[str, int] = {}
    for event in events:
        by_reason[event.metadata["reason"]] = (
            by_reason.get(event.metadata["reason"], 0) + event.measurements["count"]
        )
    assert by_reason.get("send_failed", 0) >= 20, by_reason  # the TCP ones, after retries
    assert log.stats()["backend_failures"] == 0
    for backend in backends:
        backend.close()
