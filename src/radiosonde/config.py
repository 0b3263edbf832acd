"""Settings from environment variables and ``configure(...)``, validated at start-up.

>>> import radiosonde.config as config
>>> settings = config.configure(log_level="debug", service="checkout")
>>> config.get_settings().prometheus_port
9568

Every setting comes from, in order of precedence: a keyword argument to :func:`configure` /
:func:`load_settings`, an environment variable, the default. The variables (see
``docs/configuration.md`` for the full table):

=================================  =========================  ================================
field                              variable                   default
=================================  =========================  ================================
``log_level``                      ``LOG_LEVEL``              ``"info"``
``service``                        ``RADIOSONDE_SERVICE``,    the script's name, or ``"python"``
                                   ``OTEL_SERVICE_NAME``
``environment``                    ``RADIOSONDE_ENV``,        ``"development"``
                                   ``RADIOSONDE_ENVIRONMENT``,
                                   ``ENVIRONMENT``
``enable_datadog``                 ``ENABLE_DATADOG``         ``False``
``datadog_api_key``                ``DATADOG_API_KEY``        none (required with Datadog on)
``datadog_app_key``                ``DATADOG_APP_KEY``        none
``datadog_site``                   ``DATADOG_SITE``           ``"datadoghq.com"``
``prometheus_port``                ``PROMETHEUS_PORT``        ``9568``
``prometheus_host``                ``PROMETHEUS_HOST``        ``"127.0.0.1"``
``performance_budget_ms``          ``RADIOSONDE_PERFORMANCE_  ``200.0``
                                   BUDGET_MS``
``statsd_host``                    ``STATSD_HOST``            ``"127.0.0.1"``
``statsd_port``                    ``STATSD_PORT``            ``8125``
=================================  =========================  ================================

An empty (or blank) variable counts as unset. A bad value raises :class:`ConfigurationError`
naming the variable (or the keyword), the value, and what is allowed; all problems are reported
at once. Secret values (the Datadog keys) never appear in an error message or a ``repr``: they
are shown masked, e.g. ``'****9f3a'``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, TypeAlias

from radiosonde.events import execute

__all__ = [
    "CHANGED_EVENT",
    "LOG_LEVELS",
    "ConfigurationError",
    "LogLevel",
    "Settings",
    "configure",
    "get_settings",
    "load_settings",
    "mask_secret",
]

LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]

LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("debug", "info", "warning", "error")
"""The accepted log levels, lowest first (``"warn"`` is read as ``"warning"``)."""

CHANGED_EVENT: Final = ("radiosonde", "config", "changed")
"""Emitted by :func:`configure`; metadata ``settings`` (new) and ``previous`` (or ``None``)."""

DISCOURAGED_BUDGET_MS: Final = 200.0

_SECRET_FIELDS: Final = frozenset({"datadog_api_key", "datadog_app_key"})
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A DNS name, an IPv4 address, or an IPv6 address (bare or in brackets).
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
# A Datadog site: a DNS name, with a port for a local test intake.
_SITE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


class ConfigurationError(ValueError):
    """A setting is missing or invalid; the message says which, the bad value and what to use.

    ``errors`` lists every problem found, one message each.
    """

    def __init__(self, errors: list[str] | str) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) == 1:
            message = f"invalid radiosonde configuration: {self.errors[0]}"
        else:
            listed = "".join(f"\n  - {error}" for error in self.errors)
            message = f"invalid radiosonde configuration ({len(self.errors)} problems):{listed}"
        super().__init__(message)


def mask_secret(value: str | None) -> str:
    """How a secret is shown: ``'****'`` plus its last 4 characters when it is 20 or longer.

    Datadog shows keys the same way; shorter values (test keys, typos) are fully hidden.
    """
    if value is None:
        return "None"
    if len(value) >= 20:
        return f"'****{value[-4:]}'"
    return "'****'"


def _default_service() -> str:
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script in ("", "-c", "-m", "-"):
        return "python"
    name = script.removesuffix(".py")
    return name if _valid_name(name) else "python"


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 200 and name.isprintable() and name.strip() == name


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """radiosonde's settings (immutable). Build with :func:`load_settings` or :func:`configure`.

    Constructing one directly validates it as well. ``repr`` masks the Datadog keys.
    """

    log_level: LogLevel = "info"
    service: str = "python"
    environment: str = "development"
    enable_datadog: bool = False
    datadog_api_key: str | None = None
    datadog_app_key: str | None = None
    datadog_site: str = "datadoghq.com"
    prometheus_port: int = 9568
    prometheus_host: str = "127.0.0.1"
    performance_budget_ms: float = 200.0
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125

    def __post_init__(self) -> None:
        errors: list[str] = []
        for spec in _SPECS:
            raw = getattr(self, spec.field)
            try:
                parsed = spec.parse(raw)
            except _Invalid:
                errors.append(_message(f"Settings.{spec.field}=", spec, raw))
                continue
            if parsed != raw or type(parsed) is not type(raw):
                object.__setattr__(self, spec.field, parsed)
        if not errors and self.enable_datadog and not self.datadog_api_key:
            errors.append(_missing_api_key({s.field: f"Settings.{s.field}=" for s in _SPECS}))
        if errors:
            raise ConfigurationError(errors)

    def __repr__(self) -> str:
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            shown = mask_secret(value) if item.name in _SECRET_FIELDS else repr(value)
            parts.append(f"{item.name}={shown}")
        return f"Settings({', '.join(parts)})"

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """The settings as a dict; secrets masked (as in ``repr``) unless ``mask_secrets=False``."""
        result: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if mask_secrets and item.name in _SECRET_FIELDS and value is not None:
                value = mask_secret(value).strip("'")
            result[item.name] = value
        return result


class _Invalid(Exception):
    """A value failed its parser (the caller words the message, masking secrets)."""


@dataclass(frozen=True, slots=True)
class _Spec:
    field: str
    env: tuple[str, ...]
    parse: Callable[[Any], Any]
    allowed: str
    secret: bool = False


def _parse_level(raw: Any) -> LogLevel:
    if isinstance(raw, str):
        level = raw.strip().lower()
        if level == "warn":
            level = "warning"
        for known in LOG_LEVELS:
            if level == known:
                return known
    raise _Invalid


def _parse_name(raw: Any) -> str:
    if isinstance(raw, str) and _valid_name(raw.strip()):
        return raw.strip()
    raise _Invalid


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Invalid


def _parse_secret(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        key = raw.strip()
        # A key goes into an HTTP header: whitespace or control characters inside would break it.
        if key and key.isprintable() and not any(char.isspace() for char in key):
            return key
    raise _Invalid


def _parse_host(raw: Any) -> str:
    if isinstance(raw, str) and _HOST.fullmatch(raw.strip()):
        return raw.strip()
    raise _Invalid


def _parse_site(raw: Any) -> str:
    if isinstance(raw, str) and _SITE.fullmatch(raw.strip()):
        return raw.strip().lower()
    raise _Invalid


def _parse_port(raw: Any) -> int:
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if type(raw) is int and 1 <= raw <= 65535:
        return raw
    raise _Invalid


def _parse_budget(raw: Any) -> float:
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            raise _Invalid from None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        budget = float(raw)
        if math.isfinite(budget) and budget > 0:
            return budget
    raise _Invalid


_SPECS: Final[tuple[_Spec, ...]] = (
    _Spec("log_level", ("LOG_LEVEL",), _parse_level, "one of debug, info, warning, error"),
    _Spec(
        "service",
        ("RADIOSONDE_SERVICE", "OTEL_SERVICE_NAME"),
        _parse_name,
        "a printable name of 1 to 200 characters",
    ),
    _Spec(
        "environment",
        ("RADIOSONDE_ENV", "RADIOSONDE_ENVIRONMENT", "ENVIRONMENT"),
        _parse_name,
        "a printable name of 1 to 200 characters, e.g. production, staging, development",
    ),
    _Spec("enable_datadog", ("ENABLE_DATADOG",), _parse_bool, "true/false, 1/0, yes/no or on/off"),
    _Spec(
        "datadog_api_key",
        ("DATADOG_API_KEY",),
        _parse_secret,
        "a key without spaces or control characters",
        secret=True,
    ),
    _Spec(
        "datadog_app_key",
        ("DATADOG_APP_KEY",),
        _parse_secret,
        "a key without spaces or control characters",
        secret=True,
    ),
    _Spec(
        "datadog_site",
        ("DATADOG_SITE",),
        _parse_site,
        "a Datadog site host name such as datadoghq.com, us3.datadoghq.com, us5.datadoghq.com,"
        " datadoghq.eu, ap1.datadoghq.com or ddog-gov.com (no scheme, no path)",
    ),
    _Spec("prometheus_port", ("PROMETHEUS_PORT",), _parse_port, "an integer from 1 to 65535"),
    _Spec(
        "prometheus_host",
        ("PROMETHEUS_HOST",),
        _parse_host,
        "a host name or IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0",
    ),
    _Spec(
        "performance_budget_ms",
        ("RADIOSONDE_PERFORMANCE_BUDGET_MS",),
        _parse_budget,
        "a number of milliseconds greater than 0, e.g. 200",
    ),
    _Spec(
        "statsd_host",
        ("STATSD_HOST",),
        _parse_host,
        "a host name or IP address, e.g. 127.0.0.1",
    ),
    _Spec("statsd_port", ("STATSD_PORT",), _parse_port, "an integer from 1 to 65535"),
)
_BY_FIELD: Final = {spec.field: spec for spec in _SPECS}


def _message(label: str, spec: _Spec, raw: Any) -> str:
    if spec.secret:
        shown = mask_secret(raw) if isinstance(raw, str) else f"<a {type(raw).__name__}>"
    else:
        shown = repr(raw)
    return f"{label}{shown} is not valid: expected {spec.allowed}"


def _missing_api_key(labels: Mapping[str, str]) -> str:
    enabled = labels["enable_datadog"].rstrip("=")
    return (
        f"Datadog is turned on ({enabled}) but no API key is set: set DATADOG_API_KEY"
        " (or configure(datadog_api_key=...)), or turn Datadog off"
    )


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings from ``env`` (default ``os.environ``) and ``overrides``.

    ``overrides`` are :class:`Settings` field names; their values may be typed (``8000``,
    ``True``) or strings parsed like the variables. An override of ``None`` is ignored (the
    variable or default applies). Raises :class:`ConfigurationError` for an unknown field name
    or any invalid value, listing every problem; secrets appear masked.
    """
    if env is None:
        env = os.environ
    unknown = sorted(set(overrides) - set(_BY_FIELD))
    if unknown:
        raise ConfigurationError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)};"
            f" valid names: {', '.join(_BY_FIELD)}"
        )
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    errors: list[str] = []
    for spec in _SPECS:
        override = overrides.get(spec.field)
        if override is not None:
            label, raw = f"{spec.field}=", override
        else:
            found = next(
                ((name, env[name]) for name in spec.env if env.get(name, "").strip()), None
            )
            if found is None:
                labels[spec.field] = f"{spec.env[0]}="
                continue
            label, raw = f"{found[0]}=", found[1]
        labels[spec.field] = label
        try:
            values[spec.field] = spec.parse(raw)
        except _Invalid:
            errors.append(_message(label, spec, raw))
    if "service" not in values:
        values["service"] = _default_service()
    if not errors and values.get("enable_datadog") and not values.get("datadog_api_key"):
        errors.append(_missing_api_key(labels))
    if errors:
        raise ConfigurationError(errors)
    return Settings(**values)


_current: Settings | None = None
_lock = threading.Lock()


def configure(**overrides: Any) -> Settings:
    """Load the settings from ``os.environ`` plus ``overrides`` and make them current.

    Call it once at start-up: a bad setting raises :class:`ConfigurationError` there, not later.
    Emits :data:`CHANGED_EVENT` so running parts (log level, backends) can follow.
    """
    global _current
    settings = load_settings(None, **overrides)
    with _lock:
        previous = _current
        _current = settings
    execute(CHANGED_EVENT, {}, {"settings": settings, "previous": previous})
    return settings


def get_settings() -> Settings:
    """The current settings; loaded from ``os.environ`` on first use if :func:`configure` was
    not called (so an invalid variable raises :class:`ConfigurationError` then)."""
    settings = _current
    if settings is not None:
        return settings
    return _load_current()


def _load_current() -> Settings:
    global _current
    with _lock:
        if _current is None:
            _current = load_settings()
        return _current


def _reset_for_tests() -> None:
    """Forget the current settings (for radiosonde's own test suite)."""
    global _current
    with _lock:
        _current = None
