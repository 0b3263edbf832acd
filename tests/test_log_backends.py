"""The console and JSON-lines file backends, through the facade and on their own."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from radiosonde import log
from radiosonde.logging_backends import ConsoleBackend, JsonFileBackend
from tests.test_log import fresh_log  # noqa: F401  # the autouse fixture: clean facade per test


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- console ---------------------------------------------------------------------------------


def test_console_writes_one_json_object_per_line_off_a_terminal() -> None:
    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream)], level="debug")
    log.info("User logged in", {"user_id": 1}, route="/login", ok=True)
    log.debug("second", nested={"a": [1, 2]})
    first, second = _json_lines(stream.getvalue())
    assert list(first)[:3] == ["timestamp", "level", "message"]
    assert first["level"] == "info" and first["message"] == "User logged in"
    assert first["user_id"] == 1 and first["route"] == "/login" and first["ok"] is True
    assert first["service"] == "checkout" and first["environment"] == "test"
    assert first["pid"] == os.getpid()
    assert second["nested"] == {"a": [1, 2]}


def test_console_json_in_a_span_and_with_fields_named_like_its_own_keys() -> None:
    import radiosonde

    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream, format="json")])
    with radiosonde.span(("app", "op")) as span:
        log.info("in span")
    log.info("clash", level="mine", pid="also mine", service="other")
    in_span, clash = _json_lines(stream.getvalue())
    assert in_span["span_id"] == span.context
    assert clash["level"] == "info" and clash["message"] == "clash"
    assert clash["pid"] == "also mine" and clash["service"] == "other"


def test_console_json_survives_values_json_cannot_take() -> None:
    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream, format="json")])
    loop: dict[str, Any] = {}
    loop["self"] = loop

    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    log.info(
        "odd values",
        nan=math.nan,
        inf=math.inf,
        tags={"b", "a"},
        raw=b"\xffbytes",
        obj=Odd(),
        keys={1: "int key", (1, 2): "tuple key"},
        loop=loop,
        text="üñí ✓",
    )
    (line,) = _json_lines(stream.getvalue())
    assert line["nan"] == "nan" and line["inf"] == "inf"
    assert sorted(line["tags"]) == ["a", "b"]
    assert line["obj"] == "<odd>"
    assert line["keys"] == {"1": "int key", "(1, 2)": "tuple key"}
    assert line["text"] == "üñí ✓"
    assert "[TRUNCATED]" in json.dumps(line["loop"]), "the redactor's depth limit ends the cycle"
    log.configure(redact=False)
    log.info("unredacted cycle", loop=loop)
    assert "not shown" in json.dumps(_json_lines(stream.getvalue())[-1]["loop"])
    assert log.stats()["backend_failures"] == 0


def test_console_human_format_on_request() -> None:
    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream, format="human", colour=False)])
    log.warning("Disk almost full", mount="/var", free_pct=3, note="two words")
    line = stream.getvalue().rstrip("\n")
    assert "WARNING" in line and "Disk almost full" in line
    assert "mount=/var" in line and "free_pct=3" in line and "note='two words'" in line
    assert "\x1b[" not in line
    assert "service=" not in line, "constant enrichment is left out of human lines"
    clock = line.split(" ", 1)[0]
    assert len(clock) == len("12:00:00.123") and clock[2] == ":"


def test_console_human_format_prints_the_stack_under_the_line() -> None:
    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream, format="human", colour=False)])
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("Job failed", job=7)
    lines = stream.getvalue().splitlines()
    assert "Job failed" in lines[0] and "job=7" in lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: kaput"


def test_console_on_a_real_terminal_is_human_and_coloured() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as tty:
            assert tty.isatty()
            log.configure(backends=[ConsoleBackend(tty)])
            log.error("Payment declined", order_id=42)
            tty.flush()
            out = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "Payment declined" in out
    assert "\x1b[31m" in out, "error level in red"
    assert "order_id" in out and not out.lstrip().startswith("{")


def test_console_defaults_to_whatever_stderr_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = ConsoleBackend()
    log.configure(backends=[backend])
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.info("one")
    monkeypatch.setattr(sys, "stderr", second)
    log.info("two")
    assert _json_lines(first.getvalue())[0]["message"] == "one"
    assert _json_lines(second.getvalue())[0]["message"] == "two"


def test_console_lines_never_interleave_across_threads() -> None:
    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream, format="json")])

    def worker(n: int) -> None:
        for i in range(200):
            log.info("x" * 50, worker=n, i=i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = _json_lines(stream.getvalue())
    assert len(lines) == 800
    assert {(line["worker"], line["i"]) for line in lines} == {
        (n, i) for n in range(4) for i in range(200)
    }


def test_console_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        ConsoleBackend(format="xml")  # type: ignore[arg-type]


def test_a_closed_stream_is_a_counted_backend_failure_not_an_exception() -> None:
    stream = io.StringIO()
    log.configure(backends=[ConsoleBackend(stream)])
    stream.close()
    log.info("into the void")
    assert log.stats()["backend_failures"] == 1


# -- JSON-lines file ---------------------------------------------------------------------------


def test_file_backend_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text('{"message":"from before"}\n')
    log.configure(backends=[JsonFileBackend(path)])
    log.info("hello", user_id=1)
    log.error("bye")
    lines = _json_lines(path.read_text())
    assert [line["message"] for line in lines] == ["from before", "hello", "bye"]
    assert lines[1]["user_id"] == 1 and lines[2]["level"] == "error"


def test_file_backend_rotates_by_size_keeping_backup_count(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    backend = JsonFileBackend(path, max_bytes=1000, backup_count=2)
    log.configure(backends=[backend])
    for i in range(60):
        log.info("record", i=i, pad="x" * 40)
    backend.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.1", "app.log.2"]
    chunks = [
        _json_lines((tmp_path / n).read_text()) for n in ("app.log.2", "app.log.1", "app.log")
    ]
    for chunk, name in zip(chunks, ("app.log.2", "app.log.1", "app.log"), strict=True):
        assert (tmp_path / name).stat().st_size <= 1000
        assert chunk, f"{name} is empty"
    numbers = [line["i"] for chunk in chunks for line in chunk]
    assert numbers == list(range(numbers[0], 60)), "the newest records, in order, none lost"
    assert numbers[0] > 0, "older files beyond backup_count were deleted"


def test_file_backend_without_backups_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    log.configure(backends=[JsonFileBackend(path, max_bytes=600, backup_count=0)])
    for i in range(20):
        log.info("record", i=i, pad="y" * 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]
    assert _json_lines(path.read_text())[-1]["i"] == 19
    assert path.stat().st_size <= 600


def test_file_backend_checks_its_path_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        JsonFileBackend(tmp_path / "no" / "such" / "dir" / "app.log")
    with pytest.raises(ValueError, match="max_bytes"):
        JsonFileBackend(tmp_path / "a.log", max_bytes=-1)


def test_file_backend_after_close_ignores_records(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    backend = JsonFileBackend(path)
    log.configure(backends=[backend])
    log.info("kept")
    backend.close()
    log.info("ignored")
    assert [line["message"] for line in _json_lines(path.read_text())] == ["kept"]
    assert log.stats()["backend_failures"] == 0


def test_file_backend_keeps_every_line_whole_under_threads(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    log.configure(backends=[JsonFileBackend(path, max_bytes=20_000, backup_count=50)])

    def worker(n: int) -> None:
        for i in range(150):
            log.info("threaded", worker=n, i=i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = set()
    for file in tmp_path.iterdir():
        for line in _json_lines(file.read_text()):
            seen.add((line["worker"], line["i"]))
    assert len(seen) == 600


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_logs_with_its_own_pid_even_if_a_lock_was_held(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    backend = JsonFileBackend(path)
    log.configure(backends=[backend])
    backend._lock.acquire()  # as if another thread were writing at the moment of the fork
    pid = os.fork()
    if pid == 0:  # the child: log, and leave without running anything of pytest's
        code = 1
        try:
            log.info("from the child")
            code = 0
        finally:
            os._exit(code)
    backend._lock.release()
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on a lock it inherited from the fork")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    (line,) = _json_lines(path.read_text())
    assert line["message"] == "from the child" and line["pid"] == pid
