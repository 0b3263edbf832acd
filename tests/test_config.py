"""radiosonde.config: environment variables, overrides, validation, secrets kept out of sight."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from radiosonde import config
from radiosonde.config import (
    CHANGED_EVENT,
    ConfigurationError,
    Settings,
    configure,
    get_settings,
    load_settings,
)
from radiosonde.testing import capture_events

# Long enough that the masked form shows its last 4 characters, never the rest.
API_KEY = "canaryapikey0123456789abcdefwxyz"
APP_KEY = "canaryappkey0123456789abcdef0123456789zz"

ALL_VARIABLES = [
    "LOG_LEVEL",
    "RADIOSONDE_SERVICE",
    "OTEL_SERVICE_NAME",
    "RADIOSONDE_ENV",
    "RADIOSONDE_ENVIRONMENT",
    "ENVIRONMENT",
    "ENABLE_DATADOG",
    "DATADOG_API_KEY",
    "DATADOG_APP_KEY",
    "DATADOG_SITE",
    "PROMETHEUS_PORT",
    "PROMETHEUS_HOST",
    "RADIOSONDE_PERFORMANCE_BUDGET_MS",
    "STATSD_HOST",
    "STATSD_PORT",
]


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config._reset_for_tests()
    yield
    config._reset_for_tests()


def _error(env: dict[str, str] | None = None, **overrides: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        load_settings(env or {}, **overrides)
    return info.value


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/srv/app/worker.py", "--flag"])
    settings = load_settings({})
    assert settings == Settings(
        log_level="info",
        service="worker",
        environment="development",
        enable_datadog=False,
        datadog_api_key=None,
        datadog_app_key=None,
        datadog_site="datadoghq.com",
        prometheus_port=9568,
        prometheus_host="127.0.0.1",
        performance_budget_ms=200.0,
        statsd_host="127.0.0.1",
        statsd_port=8125,
    )


@pytest.mark.parametrize("argv0", ["", "-c", "-m"])
def test_the_default_service_without_a_script_is_python(
    monkeypatch: pytest.MonkeyPatch, argv0: str
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    assert load_settings({}).service == "python"


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            "LOG_LEVEL": "DEBUG",
            "RADIOSONDE_SERVICE": "checkout",
            "RADIOSONDE_ENV": "production",
            "ENABLE_DATADOG": "yes",
            "DATADOG_API_KEY": API_KEY,
            "DATADOG_APP_KEY": APP_KEY,
            "DATADOG_SITE": "datadoghq.eu",
            "PROMETHEUS_PORT": "9100",
            "PROMETHEUS_HOST": "0.0.0.0",
            "RADIOSONDE_PERFORMANCE_BUDGET_MS": "50",
            "STATSD_HOST": "statsd.internal",
            "STATSD_PORT": "9125",
        }
    )
    assert settings.log_level == "debug"
    assert settings.service == "checkout"
    assert settings.environment == "production"
    assert settings.enable_datadog is True
    assert settings.datadog_api_key == API_KEY
    assert settings.datadog_app_key == APP_KEY
    assert settings.datadog_site == "datadoghq.eu"
    assert settings.prometheus_port == 9100
    assert settings.prometheus_host == "0.0.0.0"
    assert settings.performance_budget_ms == 50.0
    assert settings.statsd_host == "statsd.internal"
    assert settings.statsd_port == 9125


def test_alternative_variables_and_their_precedence() -> None:
    assert load_settings({"OTEL_SERVICE_NAME": "otel-name"}).service == "otel-name"
    assert (
        load_settings({"OTEL_SERVICE_NAME": "otel", "RADIOSONDE_SERVICE": "ours"}).service == "ours"
    )
    assert load_settings({"ENVIRONMENT": "staging"}).environment == "staging"
    assert load_settings({"RADIOSONDE_ENVIRONMENT": "qa"}).environment == "qa"
    assert load_settings({"ENVIRONMENT": "staging", "RADIOSONDE_ENV": "prod"}).environment == "prod"


def test_overrides_win_over_variables_and_none_means_not_given() -> None:
    env = {"LOG_LEVEL": "error", "PROMETHEUS_PORT": "9100"}
    settings = load_settings(env, log_level="debug", prometheus_port=None)
    assert settings.log_level == "debug"
    assert settings.prometheus_port == 9100
    assert load_settings({}, prometheus_port="9200", enable_datadog="no").prometheus_port == 9200


def test_empty_variables_count_as_unset() -> None:
    settings = load_settings({"LOG_LEVEL": "", "PROMETHEUS_PORT": "  ", "RADIOSONDE_SERVICE": ""})
    assert settings.log_level == "info"
    assert settings.prometheus_port == 9568


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
    ],
)
def test_booleans(word: str, expected: bool) -> None:
    env = {"ENABLE_DATADOG": word, "DATADOG_API_KEY": API_KEY}
    assert load_settings(env).enable_datadog is expected


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("LOG_LEVEL", "verbose", "one of debug, info, warning, error"),
        ("ENABLE_DATADOG", "maybe", "true/false"),
        ("PROMETHEUS_PORT", "0", "an integer from 1 to 65535"),
        ("PROMETHEUS_PORT", "65536", "an integer from 1 to 65535"),
        ("PROMETHEUS_PORT", "http", "an integer from 1 to 65535"),
        ("STATSD_PORT", "-1", "an integer from 1 to 65535"),
        ("PROMETHEUS_HOST", "http://x", "a host name or IP address"),
        ("STATSD_HOST", "a b", "a host name or IP address"),
        ("RADIOSONDE_PERFORMANCE_BUDGET_MS", "0", "greater than 0"),
        ("RADIOSONDE_PERFORMANCE_BUDGET_MS", "nan", "greater than 0"),
        ("RADIOSONDE_PERFORMANCE_BUDGET_MS", "fast", "greater than 0"),
        ("DATADOG_SITE", "https://datadoghq.com", "no scheme, no path"),
        ("RADIOSONDE_SERVICE", "bad\nname", "printable name"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(
    variable: str, value: str, allowed: str
) -> None:
    message = str(_error({variable: value}))
    assert f"{variable}={value!r}" in message
    assert allowed in message


def test_a_bad_override_names_the_argument() -> None:
    message = str(_error(prometheus_port=70000))
    assert "prometheus_port=70000" in message
    assert "an integer from 1 to 65535" in message
    assert "True" in str(_error(prometheus_port=True))  # a bool is not a port


def test_every_problem_is_reported_at_once() -> None:
    error = _error({"LOG_LEVEL": "loud", "PROMETHEUS_PORT": "0", "STATSD_PORT": "x"})
    assert len(error.errors) == 3
    assert "3 problems" in str(error)
    assert isinstance(error, ValueError)


def test_unknown_override_names_list_the_valid_ones() -> None:
    message = str(_error(prometheus_prot=9000))
    assert "prometheus_prot" in message
    assert "prometheus_port" in message and "log_level" in message


def test_datadog_needs_an_api_key() -> None:
    message = str(_error({"ENABLE_DATADOG": "true"}))
    assert "ENABLE_DATADOG" in message and "DATADOG_API_KEY" in message
    assert load_settings({"ENABLE_DATADOG": "true", "DATADOG_API_KEY": API_KEY}).enable_datadog
    assert load_settings({}, enable_datadog=True, datadog_api_key=API_KEY).enable_datadog


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    bad_key = API_KEY[:10] + " " + API_KEY[10:]  # a space: invalid
    error = _error({"DATADOG_API_KEY": bad_key, "DATADOG_APP_KEY": "short secret"})
    message = str(error)
    assert "DATADOG_API_KEY=" in message and "DATADOG_APP_KEY=" in message
    assert API_KEY[:10] not in message and "short" not in message
    assert "****" in message

    error = _error(datadog_api_key=123456789)  # not even a string
    assert "123456789" not in str(error)

    settings = load_settings({"DATADOG_API_KEY": API_KEY, "DATADOG_APP_KEY": APP_KEY})
    for text in (repr(settings), str(settings), repr(settings.as_dict())):
        assert API_KEY not in text and APP_KEY not in text
        assert API_KEY[:-4] not in text
    assert "****wxyz" in repr(settings)
    assert settings.as_dict(mask_secrets=False)["datadog_api_key"] == API_KEY


def test_a_short_secret_is_fully_masked() -> None:
    assert config.mask_secret("abc123") == "'****'"
    assert config.mask_secret(None) == "None"
    assert "abc123" not in repr(load_settings({"DATADOG_API_KEY": "abc123"}))


def test_settings_built_directly_are_validated_too() -> None:
    with pytest.raises(ConfigurationError, match="prometheus_port=0"):
        Settings(prometheus_port=0)
    with pytest.raises(ConfigurationError, match="DATADOG_API_KEY"):
        Settings(enable_datadog=True)
    settings = Settings(log_level="info")
    with pytest.raises(ConfigurationError, match="log_level='loud'"):
        dataclasses.replace(settings, log_level="loud")  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.log_level = "debug"  # type: ignore[misc]


def test_configure_installs_the_settings_and_announces_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "warning")
    with capture_events(CHANGED_EVENT) as events:
        first = configure(service="api")
        second = configure(log_level="error")
    assert get_settings() is second
    assert first.log_level == "warning" and first.service == "api"
    assert second.log_level == "error"
    assert [e.metadata["settings"] for e in events] == [first, second]
    assert [e.metadata["previous"] for e in events] == [None, first]


def test_configure_with_bad_settings_keeps_the_current_ones() -> None:
    current = configure(log_level="debug")
    with pytest.raises(ConfigurationError):
        configure(log_level="loud")
    assert get_settings() is current


def test_get_settings_loads_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_PORT", "9999")
    settings = get_settings()
    assert settings.prometheus_port == 9999
    monkeypatch.setenv("PROMETHEUS_PORT", "1234")
    assert get_settings() is settings


def test_get_settings_raises_for_an_invalid_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ConfigurationError, match="LOG_LEVEL='chatty'"):
        get_settings()
