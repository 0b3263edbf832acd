"""Real servers for the integration tests: Prometheus (+ promtool), the npm StatsD daemon and
rsyslog.

Each server is a context manager that starts the real program on 127.0.0.1 on free ports, in its
own temporary directory, waits until it is ready, and on exit stops it (SIGTERM to its process
group, then SIGKILL) and removes the directory. When the program is not installed, entering the
context calls :func:`tests._realserver.missing` (skip locally, fail under CI=true).

    with PrometheusServer(["127.0.0.1:9568"]) as prom:
        prom.wait_for_scrape()
        assert prom.value('demo_total{job="radiosonde"}') == 3

    with StatsDDaemon() as statsd:
        sock.sendto(b"x:1|c", ("127.0.0.1", statsd.port))
        statsd.wait_for(lambda: statsd.counters().get("x") == 1)

    with RsyslogServer() as rsyslog:
        SyslogBackend(("127.0.0.1", rsyslog.udp_port)).log("info", "hello", {})
        rsyslog.wait_for(lambda lines: any(line["msg"] == "hello" for line in lines))

Install the programs with `bash scripts/bootstrap.sh --servers`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from tests._realserver import free_port, missing, need_binary

ROOT = Path(__file__).resolve().parent.parent
STATSD_DIR = ROOT / ".cache" / "node" / "node_modules" / "statsd"
STATSD_JS = STATSD_DIR / "stats.js"

T = TypeVar("T")

_LIVE: set[_ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def _stop_leftovers() -> None:
    # Last resort for a server whose `with` block never exited (e.g. an interrupted session).
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for server in leftovers:
        server.stop()


atexit.register(_stop_leftovers)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process is killed outright (SIGKILL,
    # a CI timeout), the kernel kills the server too, so no daemon outlives the test run.
    # Note: "parent" is the *thread* that started the server; start servers from the main thread
    # or a thread that outlives them.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerStartError(RuntimeError):
    """The program is installed but did not come up; the message carries the tail of its log."""


class _PortTaken(Exception):
    """The free port we picked was taken by someone else before the server bound it: retry."""


class _ManagedProcess:
    """Owns one child process, its temporary directory and its log file."""

    name = "server"
    _PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)

    def __init__(self, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self.dir: Path | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it is ready (retrying if a chosen port was taken)."""
        self._check_installed()
        for attempt in range(3):
            self.dir = Path(tempfile.mkdtemp(prefix=f"radiosonde-{self.name}-"))
            self.log_path = self.dir / f"{self.name}.log"
            try:
                self._start_once()
                return
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise ServerStartError(f"{self.name}: ports kept being taken") from None
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s), remove its directory. Idempotent."""
        proc, self._proc = self._proc, None
        # Signal only while the process is not yet reaped: its pid (= process group id) cannot
        # have been reused by then.
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._on_stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def log_text(self) -> str:
        """Everything the server wrote to stdout/stderr so far (for assertion messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    # -- for subclasses ----------------------------------------------------------------------

    def _check_installed(self) -> None:
        raise NotImplementedError

    def _start_once(self) -> None:
        raise NotImplementedError

    def _on_stop(self) -> None:
        """Release resources a subclass holds besides the process."""

    def _spawn(self, argv: Sequence[str]) -> None:
        assert self.dir is not None and self.log_path is not None
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        preexec = _die_with_parent if _LIBC is not None else None
        self._proc = subprocess.Popen(
            list(argv),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - only a prctl call, see _die_with_parent
        )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll `ready` until true; fail fast (with the log) if the process exits meanwhile."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                log = self.log_text()
                if self._PORT_TAKEN.search(log):
                    raise _PortTaken
                code = None if proc is None else proc.returncode
                raise ServerStartError(
                    f"{self.name} exited with {code} before {what}:\n{log[-3000:]}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                log = self.log_text()[-3000:]
                raise ServerStartError(
                    f"{self.name}: not {what} after {self.startup_timeout}s:\n{log}"
                )
            time.sleep(0.05)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


# ---------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------


class PrometheusServer(_ManagedProcess):
    """A real Prometheus scraping `scrape_targets` ("host:port") every `scrape_interval`.

    `scrape_targets` is a list of targets for one job named `job`, or a mapping job -> targets
    for several jobs. Everything listens on 127.0.0.1 only; the TSDB lives in a temp directory.

    Timing: Prometheus (2.42) applies its target list on a fixed 5 s tick, so the *first* scrape
    comes ~5-6 s after start. Share one server per test module where you can, and start it early
    (targets may come up after Prometheus does; they just report `up == 0` until then).
    Prometheus scrapes with `Accept: application/openmetrics-text` first, then text 0.0.4.
    """

    name = "prometheus"

    def __init__(
        self,
        scrape_targets: Sequence[str] | Mapping[str, Sequence[str]],
        scrape_interval: str = "1s",
        *,
        job: str = "radiosonde",
        metrics_path: str = "/metrics",
        scrape_timeout: str | None = None,
        honor_labels: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(startup_timeout)
        if isinstance(scrape_targets, Mapping):
            self.jobs = {name: list(targets) for name, targets in scrape_targets.items()}
        else:
            if isinstance(scrape_targets, str):
                raise TypeError("scrape_targets must be a list of 'host:port' strings")
            self.jobs = {job: list(scrape_targets)}
        self.scrape_interval = scrape_interval
        self.scrape_timeout = scrape_timeout or scrape_interval
        self.metrics_path = metrics_path
        self.honor_labels = honor_labels
        self.extra_args = list(extra_args)
        self.port = 0
        self.url = ""
        self._binary = ""

    def _check_installed(self) -> None:
        self._binary = need_binary("prometheus")

    def config(self) -> dict[str, Any]:
        """The configuration written to prometheus.yml (as a dict)."""
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_timeout,
                "evaluation_interval": "1m",
            },
            "scrape_configs": [
                {
                    "job_name": name,
                    "metrics_path": self.metrics_path,
                    "honor_labels": self.honor_labels,
                    "static_configs": [{"targets": targets}],
                }
                for name, targets in self.jobs.items()
            ],
        }

    def _start_once(self) -> None:
        assert self.dir is not None
        config_path = self.dir / "prometheus.yml"
        # JSON is valid YAML, and needs no YAML library.
        config_path.write_text(json.dumps(self.config(), indent=2))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn(
            [
                self._binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                *self.extra_args,
            ]
        )
        self._wait_until(self._is_ready, "ready")

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its `data`; raise RuntimeError on an API error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            # The API answers 400/422 with a JSON body naming the problem (e.g. a PromQL error).
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant PromQL query; returns the result list (`{"metric": {...}, "value":
        [ts, "str"]}` per series). A scalar or string result comes back as one such dict with
        an empty `metric`."""
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The single value of an instant query: None when it returns no series; ValueError
        when it returns several. NaN and +/-Inf come back as floats."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"{promql!r} returned {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets from /api/v1/targets (labels, scrapeUrl, health, lastError...)."""
        return list(self.api("targets", state="active")["activeTargets"])

    def wait_for_scrape(self, job_or_target: str | None = None, timeout: float = 20.0) -> None:
        """Wait for a successful scrape that *started after this call*, so its samples reflect
        everything the test did before calling. `job_or_target` is a job name or a "host:port"
        target; None means every target. Raises TimeoutError naming the targets' last errors."""
        since = time.time()
        if job_or_target is None:
            selector = "up"
        elif ":" in job_or_target:
            selector = f'up{{instance="{job_or_target}"}}'
        else:
            selector = f'up{{job="{job_or_target}"}}'
        expected = self._expected_targets(job_or_target)
        # `timestamp(up)` is the start time of each target's latest scrape (its argument must be
        # a plain selector: over an expression it gives the evaluation time); `and up == 1`
        # keeps the successful ones. A scrape's samples are committed together with its `up`.
        promql = f"timestamp({selector}) and {selector} == 1"

        def done() -> bool:
            fresh = [r for r in self.query(promql) if float(r["value"][1]) > since]
            return len(fresh) >= expected

        try:
            self.wait_for(done, timeout, what=f"a fresh scrape of {job_or_target or 'all targets'}")
        except TimeoutError as error:
            states = [
                f"{t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}".rstrip()
                for t in self.targets()
            ]
            raise TimeoutError(f"{error}; targets: {states or 'none yet'}") from None

    def _expected_targets(self, job_or_target: str | None) -> int:
        if job_or_target is None:
            return sum(len(targets) for targets in self.jobs.values())
        if ":" in job_or_target:
            return 1
        return len(self.jobs.get(job_or_target, [])) or 1

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 15.0, *, what: str = "condition"
    ) -> T:
        """Poll `predicate` (e.g. `lambda: prom.value("x_total") == 3`) until it returns a truthy
        value, and return that value; raise TimeoutError after `timeout` seconds."""
        return _poll(predicate, timeout, lambda: f"{self.name}: timed out waiting for {what}")


def promtool_check_metrics(text: bytes | str) -> tuple[bool, str]:
    """Run `promtool check metrics` on an exposition (text format 0.0.4; promtool does not read
    OpenMetrics). Returns (ok, output): ok is True only when promtool found neither a parse
    error (exit 1, "error while linting: ...") nor a lint problem (exit 3, e.g. a counter
    without `_total`, a metric without HELP); `output` is its stdout+stderr."""
    promtool = need_binary("promtool")
    data = text.encode() if isinstance(text, str) else text
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    return done.returncode == 0, output


# ---------------------------------------------------------------------------------------------
# StatsD
# ---------------------------------------------------------------------------------------------

# Records each flush as one JSON line: the admin interface shows neither sets nor what a flush
# computes (rates, timer percentiles), and this is the daemon's own backend API.
_FLUSH_BACKEND_JS = """\
const fs = require("fs");
exports.init = function (startupTime, config, events) {
  events.on("flush", function (timestamp, metrics) {
    const sets = {};
    for (const key in metrics.sets) sets[key] = metrics.sets[key].values();
    const record = {
      timestamp: timestamp,
      counters: metrics.counters,
      counter_rates: metrics.counter_rates,
      gauges: metrics.gauges,
      timers: metrics.timers,
      timer_data: metrics.timer_data,
      sets: sets,
    };
    fs.appendFileSync(config.radiosondeFlushFile, JSON.stringify(record) + "\\n");
  });
  return true;
};
"""

# The admin interface prints with util.inspect, which by default truncates long arrays ("... 1
# more item") and deep objects; lift those limits (a documented Node option) so nothing is lost.
_INSPECT_DEFAULTS_JS = """\
const util = require("util");
util.inspect.defaultOptions = Object.assign({}, util.inspect.defaultOptions, {
  depth: null, maxArrayLength: null, maxStringLength: null, breakLength: Infinity, colors: false,
});
"""

_ADMIN_COMMANDS_WITH_END = frozenset(
    {"counters", "gauges", "timers", "stats", "delcounters", "delgauges", "deltimers"}
)


class StatsDDaemon(_ManagedProcess):
    """The npm `statsd` daemon (0.9.0) listening for UDP on 127.0.0.1:`port`, with its admin
    TCP interface on 127.0.0.1:`admin_port`.

    The default flush interval is an hour, so no flush happens during a test and the admin
    `counters` show everything received since start (a flush resets counters to 0). To test
    what a flush computes (sets, rates, timer percentiles), pass a short `flush_interval_ms`
    and read :meth:`flushes`.

    `unix_socket=True` also opens a Unix datagram socket at `socket_path`: the daemon has no
    Unix datagram server (Node's dgram has no AF_UNIX), so a thread here relays each datagram,
    unchanged, to the daemon's UDP port.

    Key names: the daemon sanitises keys (spaces -> `_`, `/` -> `-`, drops other characters
    than `[A-Za-z0-9_.;=-]`), and folds DogStatsD tags `name:1|c|#k:v,k2:v2` into the key as
    `name;k=v;k2=v2`. Its own counters live under `statsd.` (hidden unless `internal=True`).
    """

    name = "statsd"

    def __init__(
        self,
        flush_interval_ms: int = 3_600_000,
        *,
        unix_socket: bool = False,
        delete_idle_stats: bool = False,
        percent_threshold: Sequence[float] = (90,),
        extra_config: Mapping[str, Any] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(startup_timeout)
        self.flush_interval_ms = flush_interval_ms
        self.unix_socket = unix_socket
        self.delete_idle_stats = delete_idle_stats
        self.percent_threshold = list(percent_threshold)
        self.extra_config = dict(extra_config or {})
        self.port = 0
        self.admin_port = 0
        self.host = "127.0.0.1"
        self.socket_path: str | None = None
        self._node = ""
        self._relay: _UnixDatagramRelay | None = None

    def _check_installed(self) -> None:
        self._node = need_binary("node")
        if not STATSD_JS.is_file():
            missing(f"the StatsD daemon ({STATSD_JS.relative_to(ROOT)})")

    def config(self) -> dict[str, Any]:
        """The daemon configuration (written as JSON, which its JS config loader accepts)."""
        assert self.dir is not None
        return {
            "servers": [{"server": "./servers/udp", "address": self.host, "port": self.port}],
            "mgmt_address": self.host,
            "mgmt_port": self.admin_port,
            "flushInterval": self.flush_interval_ms,
            "percentThreshold": self.percent_threshold,
            "deleteIdleStats": self.delete_idle_stats,
            "backends": [str(self.dir / "flush_backend.js")],
            "radiosondeFlushFile": str(self.dir / "flushes.jsonl"),
            "automaticConfigReload": False,
            "log": {"backend": "stdout"},
            **self.extra_config,
        }

    def _start_once(self) -> None:
        assert self.dir is not None
        self.port = free_port(socket.SOCK_DGRAM)
        self.admin_port = free_port()
        (self.dir / "flush_backend.js").write_text(_FLUSH_BACKEND_JS)
        (self.dir / "inspect_defaults.js").write_text(_INSPECT_DEFAULTS_JS)
        config_path = self.dir / "config.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        self._spawn(
            [
                self._node,
                "--no-deprecation",
                "--require",
                str(self.dir / "inspect_defaults.js"),
                str(STATSD_JS),
                str(config_path),
            ]
        )
        self._wait_until(self._admin_answers, "answering on its admin port")
        self._wait_until(self._udp_bound, "bound to its UDP port")
        if self.unix_socket:
            self.socket_path = str(self.dir / "statsd.sock")
            self._relay = _UnixDatagramRelay(self.socket_path, (self.host, self.port))

    def _on_stop(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        self.socket_path = None

    def _admin_answers(self) -> bool:
        try:
            return self.admin("health", timeout=1.0).startswith("health:")
        except OSError:
            return False

    def _udp_bound(self) -> bool:
        # Whether the daemon's UDP socket is bound, without sending it anything (a probe would
        # show up in its counters).
        try:
            table = Path("/proc/net/udp").read_text()
        except OSError:
            time.sleep(0.2)  # no procfs: the bind follows the admin port within milliseconds
            return True
        needle = f"0100007F:{self.port:04X}"
        return any(line.split()[1] == needle for line in table.splitlines()[1:] if line.strip())

    # -- admin interface ---------------------------------------------------------------------

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one admin command ("counters", "gauges", "timers", "stats", "health",
        "delcounters <key>..."...) and return the reply without its closing "END" line.
        (statsd 0.9.0 has no "sets" command: an unknown command answers "ERROR".)"""
        verb = command.split(" ", 1)[0]
        with socket.create_connection((self.host, self.admin_port), timeout=timeout) as conn:
            # The daemon treats each TCP read as one command: send it in a single write.
            conn.sendall(command.encode() + b"\n")
            reply = b""
            while True:
                if verb in _ADMIN_COMMANDS_WITH_END:
                    if reply.endswith(b"END\n\n"):
                        return reply[: -len(b"END\n\n")].decode()
                elif reply.endswith(b"\n"):
                    return reply.decode()
                chunk = conn.recv(65536)
                if not chunk:
                    return reply.decode()
                reply += chunk

    def counters(self, *, internal: bool = False) -> dict[str, float]:
        """Counter values received since start (or since the last flush)."""
        return self._table("counters", internal)

    def gauges(self, *, internal: bool = False) -> dict[str, float]:
        """Gauge values."""
        return self._table("gauges", internal)

    def timers(self, *, internal: bool = False) -> dict[str, list[float]]:
        """The raw values each timer (`|ms`) received since start (or the last flush)."""
        return self._table("timers", internal)

    def bad_lines(self) -> int:
        """How many lines the daemon rejected as malformed."""
        return int(self.counters(internal=True).get("statsd.bad_lines_seen", 0))

    def packets_received(self) -> int:
        """How many datagrams the daemon received."""
        return int(self.counters(internal=True).get("statsd.packets_received", 0))

    def _table(self, command: str, internal: bool) -> dict[str, Any]:
        table = parse_js_literal(self.admin(command))
        if not isinstance(table, dict):
            raise ValueError(f"unexpected reply to {command!r}: {table!r}")
        if internal:
            return table
        return {k: v for k, v in table.items() if not k.startswith("statsd.")}

    def reset(self) -> None:
        """Delete every counter, gauge and timer (not the daemon's own `statsd.*` counters)."""
        for kind in ("counters", "gauges", "timers"):
            keys = list(self._table(kind, internal=False))
            for i in range(0, len(keys), 50):
                self.admin(f"del{kind} " + " ".join(keys[i : i + 50]))

    def flushes(self) -> list[dict[str, Any]]:
        """Every flush so far, oldest first: dicts with `timestamp`, `counters`,
        `counter_rates`, `gauges`, `timers`, `timer_data` (count, mean, upper_90...) and `sets`
        (key -> list of members), as the daemon hands them to its backends."""
        if self.dir is None:
            return []
        path = self.dir / "flushes.jsonl"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        # The last line may be half-written while the daemon appends.
        out = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Poll `predicate` (e.g. `lambda: d.counters().get("x") == 1`) until it returns a
        truthy value, and return it; TimeoutError (showing what the daemon holds) otherwise."""

        def describe() -> str:
            try:
                state = (
                    f"counters={self.counters(internal=True)} gauges={self.gauges()} "
                    f"timers={self.timers()}"
                )
            except (OSError, ValueError) as error:
                state = f"(admin interface failed: {error})"
            return f"statsd: condition not met after {timeout}s; {state}\n{self.log_text()[-2000:]}"

        return _poll(predicate, timeout, describe)


class _UnixDatagramRelay:
    """Forwards datagrams from a Unix datagram socket to a UDP address, one for one."""

    def __init__(self, path: str, target: tuple[str, int]) -> None:
        self.forwarded = 0
        self.errors = 0
        self._in = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._in.bind(path)
        self._in.settimeout(0.1)
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._target = target
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statsd-unix-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._in.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._out.sendto(data, self._target)
                self.forwarded += 1
            except OSError:
                self.errors += 1

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=2)
        self._in.close()
        self._out.close()


# ---------------------------------------------------------------------------------------------
# rsyslog
# ---------------------------------------------------------------------------------------------

PROBE_APP = "radiosonde-probe"

# What rsyslog writes for each message: one JSON object per line. "sd" is the structured data
# as rsyslog's mmpstrucdata parsed (and unescaped) it; "sd_raw" is the field as received.
_RSYSLOG_CONF = """\
global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
module(load="mmpstrucdata")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
input(type="imuxsock" Socket="{socket}" UseSpecialParser="off" ParseHostname="on"
      UsePIDFromSystem="off" UseSysTimeStamp="off" RateLimit.Interval="0")
template(name="received" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="timestamp" name="timereported" dateformat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd_raw" name="structured-data" format="jsonf")
  property(outname="sd" name="$!rfc5424-sd" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="mmpstrucdata" sd_name.lowercase="off")
action(type="omfile" file="{output}" template="received")
"""


class RsyslogServer(_ManagedProcess):
    """A real rsyslogd (Debian's package) listening on 127.0.0.1 UDP and TCP ports and a Unix
    datagram socket in its temporary directory, writing what it receives as JSON lines.

    Ready when a probe message sent over each of the three transports has been written.
    """

    name = "rsyslog"

    def __init__(self, startup_timeout: float = 20.0) -> None:
        super().__init__(startup_timeout)
        self.udp_port = 0
        self.tcp_port = 0
        self.socket_path = ""
        self.output = Path()
        self._binary = ""

    def _check_installed(self) -> None:
        self._binary = need_binary("rsyslogd", "/usr/sbin", "/sbin")

    def _start_once(self) -> None:
        assert self.dir is not None
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.socket_path = str(self.dir / "log.sock")
        self.output = self.dir / "received.jsonl"
        conf = self.dir / "rsyslog.conf"
        conf.write_text(
            _RSYSLOG_CONF.format(
                dir=self.dir,
                udp_port=self.udp_port,
                tcp_port=self.tcp_port,
                socket=self.socket_path,
                output=self.output,
            )
        )
        self._spawn([self._binary, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")])
        self._wait_until(lambda: os.path.exists(self.socket_path), "listening on its socket")
        self._wait_until(self._probed, "writing what it receives")

    def _probed(self) -> bool:
        probe = f"<14>1 - - {PROBE_APP} - - - probe".encode()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(probe, ("127.0.0.1", self.udp_port))
            with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1) as tcp:
                tcp.sendall(b"%d %s" % (len(probe), probe))
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
                unix.sendto(probe, self.socket_path)
        except OSError:
            return False
        time.sleep(0.1)
        inputs = {line["input"] for line in self._lines() if line.get("app") == PROBE_APP}
        return inputs == {"imudp", "imtcp", "imuxsock"}

    def _lines(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        lines = []
        for text in self.output.read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue  # a line being written right now
            sd = line.get("sd")
            line["sd"] = json.loads(sd) if sd else {}
            lines.append(line)
        return lines

    def received(self) -> list[dict[str, Any]]:
        """Every message written so far, probes left out."""
        return [line for line in self._lines() if line.get("app") != PROBE_APP]

    def raw_output(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if done(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog: not there after {timeout}s; got {got[-5:]}")
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _poll(predicate: Callable[[], T], timeout: float, describe: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(describe())
        time.sleep(0.05)


_JS_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<punct>[{}\[\]:,])
    | (?P<number>[-+]?(?:Infinity|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`)
    | (?P<word>[A-Za-z_$][\w$]*)
    | (?P<other>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_JS_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_JS_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None, "undefined": None}


def _js_string(quoted: str) -> str:
    body = quoted[1:-1]

    def unescape(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] in "xu":
            return chr(int(esc[1:].strip("{}"), 16))
        return _JS_ESCAPES.get(esc, esc)

    return re.sub(r"\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|.)", unescape, body)


def parse_js_literal(text: str) -> Any:
    """Parse the JavaScript object literal that Node's util.inspect prints for plain data
    (objects with bare or quoted keys, arrays, numbers incl. NaN/Infinity, strings, booleans,
    null/undefined). Raises ValueError on anything else, e.g. a truncated "... N more items"."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _JS_TOKEN.match(text, pos)
        if match is None:  # only trailing whitespace is left
            break
        kind = match.lastgroup
        assert kind is not None
        if kind == "other":
            raise ValueError(f"unexpected {match.group(kind)!r} at {match.start(kind)} in {text!r}")
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    index = 0

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise ValueError(f"unexpected end of {text!r}")
        index += 1
        return tokens[index - 1]

    def expect(punct: str) -> None:
        got = take()
        if got != ("punct", punct):
            raise ValueError(f"expected {punct!r}, got {got[1]!r} in {text!r}")

    def peek_is(punct: str) -> bool:
        return index < len(tokens) and tokens[index] == ("punct", punct)

    def value() -> Any:
        kind, tok = take()
        if kind == "number":
            if tok.lstrip("+-") in ("Infinity", "NaN"):
                return float(tok.replace("Infinity", "inf").replace("NaN", "nan"))
            number = float(tok)
            is_int = re.fullmatch(r"[-+]?\d+", tok) is not None
            return int(tok) if is_int and math.isfinite(number) else number
        if kind == "string":
            return _js_string(tok)
        if kind == "word" and tok in _JS_WORDS:
            return _JS_WORDS[tok]
        if (kind, tok) == ("punct", "["):
            items: list[Any] = []
            while not peek_is("]"):
                items.append(value())
                if not peek_is("]"):
                    expect(",")
            take()
            return items
        if (kind, tok) == ("punct", "{"):
            obj: dict[str, Any] = {}
            while not peek_is("}"):
                key_kind, key = take()
                if key_kind == "string":
                    key = _js_string(key)
                elif key_kind not in ("word", "number"):
                    raise ValueError(f"bad object key {key!r} in {text!r}")
                expect(":")
                obj[key] = value()
                if not peek_is("}"):
                    expect(",")
            take()
            return obj
        raise ValueError(f"unexpected {tok!r} in {text!r}")

    result = value()
    if index != len(tokens):
        raise ValueError(f"trailing {tokens[index][1]!r} in {text!r}")
    return result
