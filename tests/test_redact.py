"""radiosonde.redact: keys, value patterns, depth, copies, extension."""

from __future__ import annotations

import copy
import re
from collections import OrderedDict, namedtuple
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radiosonde import redact as redact_module
from radiosonde.redact import (
    REDACTED,
    TRUNCATED,
    Redactor,
    is_sensitive_key,
    luhn_valid,
    redact,
)

CANARY = "canary-7f3a9c-do-not-leak"


@pytest.fixture(autouse=True)
def _fresh_default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests that extend the default policy must not leak it into other tests.
    fresh = Redactor()
    monkeypatch.setattr(redact_module, "default_redactor", fresh)
    monkeypatch.setattr(redact_module, "_default_dict", fresh._dict)
    monkeypatch.setattr(redact_module, "_derived", {})


def _card(prefix: str, length: int) -> str:
    """A Luhn-valid number of ``length`` digits starting with ``prefix``."""
    body = prefix + "0" * (length - len(prefix) - 1)
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


def _breaks_luhn(number: str) -> str:
    last = number[-1]
    return number[:-1] + str((int(last) + 1) % 10)


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "user_password",
        "passwd",
        "secret",
        "client_secret",
        "clientSecret",
        "token",
        "access_token",
        "accessToken",
        "refresh-token",
        "api_key",
        "apikey",
        "apiKey",
        "x-api-key",
        "X-Api-Key",
        "authorization",
        "Authorization",
        "cookie",
        "Set-Cookie",
        "session",
        "session_id",
        "sessionId",
        "private_key",
        "privateKey",
        "encryption_key",
        "encryption_iv",
        "encryption_nonce",
        "iv",
        "nonce",
        "card_number",
        "cardNumber",
        "credit_card",
        "cvv",
        "cvc",
        "auth",
        "ssn",
    ],
)
def test_sensitive_keys_are_redacted_in_any_spelling(key: str) -> None:
    assert is_sensitive_key(key)
    assert redact({key: CANARY, "user_id": 7}) == {key: REDACTED, "user_id": 7}


@pytest.mark.parametrize(
    "key",
    [
        "user_id",
        "conversation_id",
        "active",  # contains "iv", but not as a word
        "author",
        "prompt_tokens",  # counts tokens: not a secret
        "max_tokens",
        "token_count",
        "spinner",
        "keyboard",
        "duration_ms",
    ],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_sensitive_key(key)
    assert redact({key: "value"}) == {key: "value"}


def test_the_whole_value_under_a_sensitive_key_is_replaced_whatever_its_type() -> None:
    value = {"token": {"nested": [1, 2]}, "session": 12345, "cookie": None}
    assert redact(value) == {"token": REDACTED, "session": REDACTED, "cookie": REDACTED}


def test_non_string_keys_are_kept() -> None:
    assert redact({1: "a", (2, 3): "b", None: "c"}) == {1: "a", (2, 3): "b", None: "c"}


# -- recursion, copies, depth --------------------------------------------------------------------


def test_nested_containers_are_walked_and_copied_without_touching_the_input() -> None:
    value: dict[str, Any] = {
        "user": {"id": 1, "profile": {"password": CANARY, "name": "Ada"}},
        "items": [{"api_key": CANARY}, ("Bearer abcdefgh12345678", 3)],
        "tags": {"a", "b"},
    }
    before = copy.deepcopy(value)
    result = redact(value)
    assert result == {
        "user": {"id": 1, "profile": {"password": REDACTED, "name": "Ada"}},
        "items": [{"api_key": REDACTED}, ("Bearer [REDACTED]", 3)],
        "tags": {"a", "b"},
    }
    assert value == before
    assert result is not value
    assert result["user"] is not value["user"]
    assert result["items"] is not value["items"]
    assert result["tags"] is not value["tags"]
    assert CANARY not in repr(result)


def test_a_flat_dict_with_nothing_to_redact_is_still_a_copy() -> None:
    value = {"user_id": 7, "status": "ok"}
    result = redact(value)
    redact(value)  # the second call takes the cached path
    result2 = redact(value)
    assert result == result2 == value
    assert result is not value and result2 is not value


def test_known_keys_with_values_to_look_at_are_still_redacted_and_copied() -> None:
    value = {"items": ["Bearer abcdefgh12345678"], "note": "call 4111 1111 1111 1111"}
    for _ in range(3):  # the keys' verdicts are cached after the first call
        result = redact(value)
        assert result == {"items": ["Bearer [REDACTED]"], "note": "call [REDACTED]"}
        assert result["items"] is not value["items"]
    assert value["items"] == ["Bearer abcdefgh12345678"]


def test_containers_deeper_than_max_depth_are_truncated() -> None:
    value = {"a": {"b": {"c": {"d": 1}}}, "top": "kept"}
    assert redact(value, max_depth=2) == {"a": {"b": TRUNCATED}, "top": "kept"}
    assert redact(value, max_depth=4) == value
    assert redact(value, max_depth=0) == TRUNCATED
    assert redact([[["x"]]], max_depth=2) == [[TRUNCATED]]
    # Strings at the deepest kept level are still scanned.
    assert redact({"a": {"b": "Bearer abcdefgh12345678"}}, max_depth=2) == {
        "a": {"b": "Bearer [REDACTED]"}
    }


def test_the_default_depth_ends_reference_cycles() -> None:
    cycle: dict[str, Any] = {"name": "loop"}
    cycle["self"] = cycle
    result = redact(cycle)
    depth = 0
    node = result
    while isinstance(node, dict):
        node = node["self"]
        depth += 1
    assert node == TRUNCATED
    assert depth == redact_module.DEFAULT_MAX_DEPTH


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None])
def test_invalid_max_depth_is_refused(bad: Any) -> None:
    if bad is None:
        assert redact({"a": 1}, max_depth=bad) == {"a": 1}  # None means the default
        return
    with pytest.raises(ValueError, match="max_depth"):
        redact({"a": 1}, max_depth=bad)


def test_container_types_come_back_as_plain_builtins() -> None:
    point = namedtuple("point", "x y")
    assert redact(MappingProxyType({"token": "t"})) == {"token": REDACTED}
    assert type(redact(OrderedDict(a=1))) is dict
    assert redact(point("Bearer abcdefgh12345678", 2)) == ("Bearer [REDACTED]", 2)
    assert type(redact(point(1, 2))) is tuple
    assert redact(frozenset({"x"})) == frozenset({"x"})


def test_other_objects_pass_through_unchanged() -> None:
    class Opaque:
        password = CANARY

    thing = Opaque()
    data = b"Bearer abcdefgh12345678"
    result = redact({"obj": thing, "raw": data, "n": 1.5, "flag": True})
    assert result["obj"] is thing
    assert result["raw"] is data
    assert result["n"] == 1.5 and result["flag"] is True


# -- value patterns ------------------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefgh12345678", "Authorization: Bearer [REDACTED]"),
        ("bearer abc.def-ghi_jkl~123/+==", "bearer [REDACTED]"),
        ("the bearer of bad news", "the bearer of bad news"),
        ("BeArEr abcdefgh12345678", "BeArEr [REDACTED]"),
        # Digits inside a token do not break it up before it is recognised.
        (
            "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MTExMTExMTExMTExMTExIn0.4111111111111111",
            "t=[REDACTED]",
        ),
        (f"token={JWT} ok", "token=[REDACTED] ok"),
        (f"key:\n{PEM}\nafter", "key:\n[REDACTED]\nafter"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC (cut off",
            "[REDACTED]",
        ),
        ("-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----", None),
        ("order 12345 shipped", None),
    ],
)
def test_secrets_in_strings_are_replaced(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)
    assert redact({"note": text}) == {"note": text if expected is None else expected}


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa test number
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",  # Mastercard
        "378282246310005",  # Amex, 15 digits
        "6011111111111117",  # Discover
        _card("4", 13),
        _card("62", 19),
    ],
)
def test_luhn_valid_card_numbers_are_redacted(number: str) -> None:
    assert luhn_valid(number.replace(" ", "").replace("-", ""))
    assert redact(f"paid with {number} today") == "paid with [REDACTED] today"
    assert redact({"note": number}) == {"note": REDACTED}


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111112",  # fails the Luhn check
        "4111 1111 1111 1112",
        _breaks_luhn(_card("5", 16)),
        _card("4", 12),  # too short for a card
        _card("4", 20),  # too long for a card
        _card("9", 16),  # no card network starts with 9 (timestamps, ids...)
        _card("17", 13),  # e.g. a millisecond timestamp that happens to pass Luhn
    ],
)
def test_other_digit_runs_are_kept(number: str) -> None:
    assert redact(f"ref {number}") == f"ref {number}"


@given(
    prefix=st.sampled_from(["2", "3", "4", "5", "6"]),
    body=st.text(alphabet="0123456789", min_size=11, max_size=17),
)
def test_any_luhn_valid_number_of_13_to_19_digits_is_redacted(prefix: str, body: str) -> None:
    partial = prefix + body
    check = next(d for d in "0123456789" if luhn_valid(partial + d))
    number = partial + check
    assert redact(f"x {number} y") == "x [REDACTED] y"
    assert redact(f"x {_breaks_luhn(number)} y") == f"x {_breaks_luhn(number)} y"


def test_luhn_checksum() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert luhn_valid("0")


def test_integers_are_not_scanned_for_card_numbers() -> None:
    # Numbers are copied as they are (the fast path); only strings hold card numbers.
    assert redact({"order_total_cents": 4111111111111111}) == {
        "order_total_cents": 4111111111111111
    }


# -- extension --------------------------------------------------------------------------------


def test_extra_keys_apply_to_one_call_only() -> None:
    assert redact({"dob": "1990-01-01"}, extra_keys=["dob"]) == {"dob": REDACTED}
    assert redact({"date_of_birth": "x"}, extra_keys="date-of-birth") == {"date_of_birth": REDACTED}
    assert redact({"dob": "1990-01-01"}) == {"dob": "1990-01-01"}


def test_add_keys_changes_the_default_policy_even_for_cached_keys() -> None:
    assert redact({"mothers_maiden_name": "x"}) == {"mothers_maiden_name": "x"}
    redact_module.add_keys("maiden")
    assert redact({"mothers_maiden_name": "x"}) == {"mothers_maiden_name": REDACTED}


def test_add_keys_as_words_matches_whole_words_only() -> None:
    redact_module.add_keys("dob", word=True)
    assert redact({"user_dob": 1, "dobby": 2}) == {"user_dob": REDACTED, "dobby": 2}


def test_add_patterns_changes_the_default_policy_even_for_cached_strings() -> None:
    text = "key sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    assert redact(text) == text
    redact_module.add_patterns(r"sk_live_[0-9A-Za-z]+")
    assert redact(text) == "key [REDACTED]"
    assert redact({"note": "sk_live_x"}) == {"note": REDACTED}


def test_a_pattern_group_named_secret_limits_what_is_replaced() -> None:
    redactor = Redactor(patterns=[re.compile(r"pin=(?P<secret>\d+)")])
    assert redactor.redact("login pin=1234 ok") == "login pin=[REDACTED] ok"


def test_a_separate_redactor_has_its_own_policy() -> None:
    redactor = Redactor(keys={"internal"}, words=(), builtin_patterns=False, marker="***")
    assert redactor.redact({"internal_note": 1, "password": "p", "s": JWT}) == {
        "internal_note": "***",
        "password": "p",
        "s": JWT,
    }
    assert redactor({"internal": 1}) == {"internal": "***"}
    assert redact({"internal_note": 1}) == {"internal_note": 1}


def test_bad_terms_and_patterns_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid redaction pattern"):
        Redactor(patterns=["(unclosed"])
    with pytest.raises(TypeError):
        Redactor(keys="password")
    with pytest.raises(ValueError, match="at least one letter"):
        Redactor(keys=["--"])


def test_caches_stay_bounded() -> None:
    redactor = Redactor()
    for i in range(redact_module._KEY_CACHE_LIMIT + 10):
        redactor.redact({f"field_{i}": f"value number {i:08d}"})
    assert len(redactor._key_cache) <= redact_module._KEY_CACHE_LIMIT
    assert len(redactor._clean) <= redact_module._CLEAN_CACHE_LIMIT


# -- the promise: a canary under a sensitive key never survives -----------------------------------

_leaf = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans())
_secret_key = st.sampled_from(["password", "apiKey", "X-Auth-Token", "session", "encryption_iv"])
_plain_key = st.sampled_from(["id", "name", "items", "meta", "count"])


def _with_canaries(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return _leaf
    child = _with_canaries(depth - 1)
    return st.one_of(
        _leaf,
        st.dictionaries(st.one_of(_plain_key, _secret_key), child, max_size=4).map(
            lambda d: {**d, "secret": CANARY}
        ),
        st.lists(child, max_size=3),
        st.tuples(child, child),
    )


@given(_with_canaries(4))
def test_canaries_never_survive_and_the_input_is_never_modified(value: Any) -> None:
    before = copy.deepcopy(value)
    result = redact(value)
    assert CANARY not in repr(result)
    assert value == before
