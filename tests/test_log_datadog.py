"""The Datadog backend against a local receiver that checks the documented intake format.

The real intake is out of reach, so :class:`DatadogReceiver` plays it: a real HTTP server on
127.0.0.1 that accepts only what the logs intake v2 documents (POST /api/v2/logs, the
DD-API-KEY header, a gzip-compressed JSON array of at most 1000 entries and 5 MB, entries of at
most 1 MB with the reserved attributes) and answers 400 to anything else, or a scripted status.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from radiosonde import config, log
from radiosonde.logging_backends.datadog import (
    MAX_ENTRIES_PER_PAYLOAD,
    MAX_ENTRY_BYTES,
    MAX_PAYLOAD_BYTES,
    DatadogBackend,
    intake_url,
)
from radiosonde.testing import capture_events
from tests.test_log import fresh_log  # noqa: F401  # the autouse fixture: clean facade per test

API_KEY = "0123456789abcdef0123456789abcdef"
STATUSES = {"debug", "info", "notice", "warn", "warning", "error", "critical", "alert", "emerg"}
DROPPED = ("radiosonde", "log", "dropped")


class DatadogReceiver:
    """A stand-in for ``https://http-intake.logs.<site>/api/v2/logs`` on 127.0.0.1.

    ``entries``: every entry of every accepted request, in order. ``requests``: one
    ``(status answered, entry count)`` per request. ``violations``: what did not follow the
    documented format (each answered 400). ``bodies``: every request body, uncompressed.
    ``script``: statuses to answer the next requests
    with instead of accepting them (e.g. ``[500, 429]``).
    """

    def __init__(self, api_key: str = API_KEY, *, require_gzip: bool = True) -> None:
        self.api_key = api_key
        self.require_gzip = require_gzip
        self.entries: list[dict[str, Any]] = []
        self.requests: list[tuple[int, int]] = []
        self.violations: list[str] = []
        self.bodies: list[bytes] = []
        self.script: deque[int] = deque()
        self.delay = 0.0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                receiver._answer(self, 405, 0, "GET is not the intake's method")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v2/logs"

    def __enter__(self) -> DatadogReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"receiver: condition not met after {timeout}s; requests={self.requests}"
                        f" entries={len(self.entries)} violations={self.violations}"
                    )
                self._cond.wait(remaining)

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, count: int, why: str) -> None:
        with self._cond:
            if why:
                self.violations.append(why)
            self.requests.append((status, count))
            self._cond.notify_all()
        body = json.dumps({"errors": [why]} if why else {}).encode()
        handler.send_response(status)
        if status == 429:
            handler.send_header("Retry-After", "0")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        raw = handler.rfile.read(length)
        if self.delay:
            time.sleep(self.delay)
        problem = self._check(handler, raw)
        if isinstance(problem, str):
            self._answer(handler, 400, 0, problem)
            return
        with self._cond:
            scripted = self.script.popleft() if self.script else None
        if scripted is not None:
            self._answer(handler, scripted, len(problem), "")
            return
        with self._cond:
            self.entries.extend(problem)
        self._answer(handler, 202, len(problem), "")

    def _check(self, handler: BaseHTTPRequestHandler, raw: bytes) -> str | list[dict[str, Any]]:
        if handler.path.split("?")[0] != "/api/v2/logs":
            return f"wrong path {handler.path!r}"
        if handler.headers.get("DD-API-KEY") != self.api_key:
            return "missing or wrong DD-API-KEY header"
        if not (handler.headers.get("Content-Type") or "").startswith("application/json"):
            return f"Content-Type is {handler.headers.get('Content-Type')!r}"
        encoding = handler.headers.get("Content-Encoding")
        if encoding == "gzip":
            try:
                raw = gzip.decompress(raw)
            except OSError:
                return "Content-Encoding gzip but the body is not gzip"
        elif encoding is not None or self.require_gzip:
            return f"expected Content-Encoding gzip, got {encoding!r}"
        with self._cond:
            self.bodies.append(raw)
        if len(raw) > MAX_PAYLOAD_BYTES:
            return f"payload of {len(raw)} bytes is over 5 MB"
        try:
            entries = json.loads(raw)
        except ValueError as exc:
            return f"body is not JSON: {exc}"
        if not isinstance(entries, list) or not entries:
            return "body is not a non-empty JSON array"
        if len(entries) > MAX_ENTRIES_PER_PAYLOAD:
            return f"{len(entries)} entries in one request (max 1000)"
        for entry in entries:
            if not isinstance(entry, dict):
                return f"entry is not an object: {entry!r}"
            size = len(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode())
            if size > MAX_ENTRY_BYTES:
                return f"entry of {size} bytes is over 1 MB"
            for key in ("ddsource", "hostname", "service", "message", "status"):
                if not isinstance(entry.get(key), str) or not entry[key]:
                    if key == "message" and entry.get(key) == "":
                        continue
                    return f"entry without a string {key!r}: {sorted(entry)}"
            if entry["status"] not in STATUSES:
                return f"unknown status {entry['status']!r}"
            tags = entry.get("ddtags")
            if tags is not None and (
                not isinstance(tags, str) or any(":" not in t for t in tags.split(","))
            ):
                return f"ddtags is not 'k:v,k:v': {tags!r}"
        return entries


@pytest.fixture
def receiver() -> Iterator[DatadogReceiver]:
    with DatadogReceiver() as running:
        yield running


def _backend(url: str, **options: Any) -> DatadogBackend:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("backoff", 0.01)
    return DatadogBackend(API_KEY, url=url, **options)


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers (a hung intake)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api/v2/logs"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v2/logs"


# -- format ----------------------------------------------------------------------------------------


def test_entries_follow_the_documented_format(receiver: DatadogReceiver) -> None:
    backend = _backend(receiver.url, tags={"team": "payments"}, hostname="web-1")
    log.configure(backends=[backend], level="debug")
    log.info("User logged in", {"user_id": 1}, route="/login")
    log.warning("Slow query", table="users")
    log.flush(5.0)
    assert receiver.violations == []
    first, second = receiver.entries
    assert first["ddsource"] == "python"
    assert first["hostname"] == "web-1"
    assert first["service"] == "checkout"
    assert first["message"] == "User logged in"
    assert first["status"] == "info"
    assert set(first["ddtags"].split(",")) == {"team:payments", "env:test"}
    assert first["user_id"] == 1 and first["route"] == "/login"
    assert first["environment"] == "test" and first["timestamp"].endswith("Z")
    assert second["status"] == "warn" and second["table"] == "users"
    backend.close()


def test_uncompressed_when_asked(receiver: DatadogReceiver) -> None:
    receiver.require_gzip = False
    backend = _backend(receiver.url, compress=False)
    log.configure(backends=[backend])
    log.info("plain")
    log.flush(5.0)
    assert receiver.violations == [] and receiver.entries[0]["message"] == "plain"
    backend.close()


def test_records_are_batched(receiver: DatadogReceiver) -> None:
    backend = _backend(receiver.url, batch_size=100, flush_interval=0.5)
    log.configure(backends=[backend])
    for i in range(250):
        log.info("event", i=i)
    log.flush(10.0)
    assert receiver.violations == []
    assert [e["i"] for e in receiver.entries] == list(range(250))
    assert len(receiver.requests) <= 4, receiver.requests
    assert all(count <= 100 for _status, count in receiver.requests)
    assert backend.stats()["sent"] == 250
    backend.close()


def test_payload_limits_split_requests_and_truncate_huge_entries(
    receiver: DatadogReceiver,
) -> None:
    backend = _backend(receiver.url)
    log.configure(backends=[backend], redact=False)
    records = [("info", "small", {"i": i}) for i in range(2500)]
    bodies = backend.payloads(records)
    assert [count for count, _ in bodies] == [1000, 1000, 500]
    big = "z" * 400_000
    heavy = [("info", "heavy", {"blob": big, "i": i}) for i in range(30)]  # 12 MB in all
    sizes = [(count, len(body)) for count, body in backend.payloads(heavy)]
    assert sum(count for count, _ in sizes) == 30
    assert all(size <= MAX_PAYLOAD_BYTES for _count, size in sizes) and len(sizes) >= 3

    log.info("m" * (MAX_ENTRY_BYTES + 10_000), small=1)
    log.info("huge attributes", blob="a" * (MAX_ENTRY_BYTES + 10))
    log.flush(10.0)
    assert receiver.violations == []
    long_message, huge_attributes = receiver.entries
    assert long_message["message"].endswith("[truncated by radiosonde: entry over 1 MB]")
    assert long_message["small"] == 1
    assert "blob" not in huge_attributes and huge_attributes["status"] == "info"
    assert backend.stats()["truncated"] == 2
    backend.close()


# -- delivery ----------------------------------------------------------------------------------


def test_retries_after_500_and_429_then_delivers_once(receiver: DatadogReceiver) -> None:
    receiver.script.extend([500, 429])
    backend = _backend(receiver.url)
    log.configure(backends=[backend])
    log.error("must arrive")
    log.flush(10.0)
    assert [status for status, _ in receiver.requests] == [500, 429, 202]
    assert [e["message"] for e in receiver.entries] == ["must arrive"]
    assert backend.stats()["retries"] == 2 and backend.stats()["dropped"] == 0
    backend.close()


def test_no_retry_on_400_the_batch_is_dropped_and_reported(receiver: DatadogReceiver) -> None:
    receiver.script.append(400)
    backend = _backend(receiver.url)
    log.configure(backends=[backend])
    with capture_events(DROPPED) as events:
        log.info("rejected")
        log.flush(5.0)
    assert [status for status, _ in receiver.requests] == [400]
    assert receiver.entries == []
    assert [(e.measurements["count"], e.metadata["reason"]) for e in events] == [(1, "rejected")]
    assert events[0].metadata["backend"] == "datadog"
    assert backend.stats()["dropped"] == 1 and log.stats()["dropped"] == 1
    backend.close()


def test_gives_up_after_max_retries(receiver: DatadogReceiver) -> None:
    receiver.script.extend([503] * 10)
    backend = _backend(receiver.url, max_retries=2)
    log.configure(backends=[backend])
    with capture_events(DROPPED) as events:
        log.info("lost")
        log.flush(5.0)
    assert [status for status, _ in receiver.requests] == [503, 503, 503]
    assert [e.metadata["reason"] for e in events] == ["retries_exhausted"]
    backend.close()


def test_network_errors_are_retried_then_dropped() -> None:
    backend = _backend(_closed_port_url(), max_retries=2)
    log.configure(backends=[backend])
    with capture_events(DROPPED) as events:
        log.info("nobody home")
        log.flush(5.0)
    assert backend.stats()["requests"] == 3
    (event,) = events
    assert event.metadata["reason"] == "retries_exhausted"
    assert "refused" in event.metadata["error"].lower()
    backend.close()


def test_a_hung_endpoint_never_blocks_the_caller_and_a_full_queue_drops(blackhole: str) -> None:
    backend = _backend(blackhole, max_queue=50, timeout=30.0, flush_interval=0.0)
    log.configure(backends=[backend])
    slowest = 0.0
    started = time.perf_counter()
    with capture_events(DROPPED) as events:
        for i in range(2000):
            before = time.perf_counter()
            log.info("into a black hole", i=i)
            slowest = max(slowest, time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"2000 log calls took {elapsed:.2f}s"
    assert slowest < 0.1, f"one log call took {slowest * 1000:.1f} ms"
    dropped = sum(e.measurements["count"] for e in events if e.metadata["reason"] == "queue_full")
    assert dropped >= 2000 - 50 - 1000, "beyond the queue and the batch in flight, all dropped"
    assert backend.stats()["dropped"] == dropped
    flush_started = time.perf_counter()
    log.flush(0.3)
    assert time.perf_counter() - flush_started < 1.0, "flush keeps to its time limit"
    closed_started = time.perf_counter()
    log.remove_backend(backend, timeout=0.2)
    assert time.perf_counter() - closed_started < 1.0


def test_pending_records_are_sent_at_exit(receiver: DatadogReceiver) -> None:
    script = textwrap.dedent(
        f"""
        from radiosonde import log
        from radiosonde.logging_backends import DatadogBackend
        log.configure(backends=[DatadogBackend({API_KEY!r}, url={receiver.url!r},
                                               flush_interval=60)])
        for i in range(3):
            log.info("bye", i=i)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    receiver.wait_for(lambda: len(receiver.entries) == 3)
    assert [e["i"] for e in receiver.entries] == [0, 1, 2]
    assert receiver.violations == []


def test_exit_with_a_hung_endpoint_keeps_to_the_time_limit(blackhole: str) -> None:
    script = textwrap.dedent(
        f"""
        from radiosonde import log
        from radiosonde.logging_backends import DatadogBackend
        log.configure(exit_timeout=0.5, backends=[
            DatadogBackend({API_KEY!r}, url={blackhole!r}, flush_interval=0, timeout=60)])
        log.info("stuck")
        """
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert time.monotonic() - started < 5.0


# -- configuration -----------------------------------------------------------------------------


def test_configuration_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="DATADOG_API_KEY"):
        DatadogBackend("")
    with pytest.raises(ValueError, match="site"):
        DatadogBackend(API_KEY, site="https://datadoghq.com/")
    with pytest.raises(ValueError, match="batch_size"):
        DatadogBackend(API_KEY, batch_size=5000)
    assert intake_url("datadoghq.eu") == "https://http-intake.logs.datadoghq.eu/api/v2/logs"
    assert DatadogBackend(API_KEY, site="us3.datadoghq.com").url == (
        "https://http-intake.logs.us3.datadoghq.com/api/v2/logs"
    )


def test_the_api_key_is_never_shown() -> None:
    backend = DatadogBackend(API_KEY)
    assert API_KEY not in repr(backend) and API_KEY not in str(vars(backend).get("url"))


def test_datadog_from_the_environment_variables_alone(
    receiver: DatadogReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENABLE_DATADOG", "true")
    monkeypatch.setenv("DATADOG_API_KEY", API_KEY)
    monkeypatch.setenv("DATADOG_SITE", receiver.url.split("/")[2])  # a local intake: host:port
    config._reset_for_tests()
    log.configure_from_settings()
    log.error("Payment failed", order_id=7)
    log.flush(10.0)
    assert receiver.violations == []
    (entry,) = receiver.entries
    assert entry["message"] == "Payment failed" and entry["status"] == "error"
    assert entry["service"] == "checkout" and entry["order_id"] == 7


def test_enable_datadog_setting_adds_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_DATADOG", "true")
    monkeypatch.setenv("DATADOG_API_KEY", API_KEY)
    monkeypatch.setenv("DATADOG_SITE", "datadoghq.eu")
    config._reset_for_tests()
    log.configure_from_settings()
    (datadog,) = [b for b in log.backends() if isinstance(b, DatadogBackend)]
    assert datadog.url == intake_url("datadoghq.eu")
    assert datadog.service == "checkout"
    config.configure(enable_datadog=False)
    assert not any(isinstance(b, DatadogBackend) for b in log.backends())
