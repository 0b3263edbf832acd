"""Shared helpers for tests that start real servers (Prometheus, StatsD, rsyslog...) on loopback.

The rule: a test that needs a real server skips when the server is missing on a developer's
machine, and FAILS when CI=true, so that CI can never pass by skipping the real-server tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, how: str = "run `bash scripts/bootstrap.sh --servers`") -> None:
    """Report a missing real server or package: fail under CI=true, skip otherwise."""
    message = f"{what} is not available ({how})"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def need_binary(name: str, *extra_dirs: str) -> str:
    """The path of an executable, or :func:`missing`."""
    path = shutil.which(name, path=os.pathsep.join([*extra_dirs, os.environ.get("PATH", "")]))
    if path is None:
        missing(f"the `{name}` executable")
        raise AssertionError("unreachable")
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_tcp(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
